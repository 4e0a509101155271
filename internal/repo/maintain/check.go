// Package maintain owns vault maintenance: checking structure and data
// (reporting which recovery points and files damage affects), and pruning
// (garbage collection and repacking after recovery points are deleted).
package maintain

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/index"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
)

// Problem is one thing check found wrong.
type Problem struct {
	Object  string   `json:"object"`            // e.g. "data/3fa2…", "index/…", "snapshots/…", "blob 12ab… (data)"
	Err     string   `json:"error"`             // what is wrong
	Affects []string `json:"affects,omitempty"` // "recovery point 1a2b3c4d: path/to/file"
}

// Notice is something unusual but harmless.
type Notice struct {
	Object string `json:"object"`
	Msg    string `json:"message"`
}

// CheckResult is the outcome of a check.
type CheckResult struct {
	Problems       []Problem `json:"problems"`
	Notices        []Notice  `json:"notices,omitempty"`
	Packs          int       `json:"packs"`
	Snapshots      int       `json:"recovery_points"`
	Trees          int       `json:"trees"`
	DataBlobs      int       `json:"data_blobs"`
	BytesRead      int64     `json:"bytes_read"`
	DataRead       bool      `json:"data_read"`
	AffectedPoints []string  `json:"affected_recovery_points,omitempty"`
}

// OK reports whether no problem was found.
func (c *CheckResult) OK() bool { return len(c.Problems) == 0 }

// CheckOptions tune a check.
type CheckOptions struct {
	ReadData bool          // read and verify every blob of every pack
	Workers  int           // packs read concurrently, default 2
	Progress *atomic.Int64 // bytes read so far
}

type checker struct {
	r        *repo.Repository
	o        CheckOptions
	res      *CheckResult
	mu       sync.Mutex
	bad      map[crypto.ID]int    // damaged or missing blob -> index of its problem
	badPacks map[crypto.ID]string // pack -> why (all its blobs are bad)
	affected map[string]bool
}

func (c *checker) problem(p Problem) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.Problems = append(c.res.Problems, p)
	return len(c.res.Problems) - 1
}

// Check verifies the vault: every index file decodes; every indexed pack
// exists with the indexed size; every recovery point and tree reads; every
// blob a tree references is indexed; with ReadData, every pack's bytes match
// its name and every blob decrypts and matches its content id. Damage is
// reported with the recovery points and files it affects. Check never
// modifies the vault.
func Check(ctx context.Context, r *repo.Repository, o CheckOptions) (*CheckResult, error) {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	c := &checker{r: r, o: o, res: &CheckResult{DataRead: o.ReadData}, bad: map[crypto.ID]int{}, badPacks: map[crypto.ID]string{}, affected: map[string]bool{}}

	// 1. Index files, one by one, so one bad file does not hide the rest.
	ids, err := r.List(ctx, blob.KindIndex)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		f, err := r.LoadIndexFile(ctx, id)
		if err != nil {
			c.problem(Problem{Object: "index/" + id.String(), Err: err.Error()})
			continue
		}
		r.Index().AddFile(id, f)
	}

	// 2. Packs: indexed ones must exist with the right size.
	stored := map[crypto.ID]int64{}
	for _, k := range []blob.Kind{blob.KindData, blob.KindTree} {
		err := r.Backend().List(ctx, k, func(fi blob.FileInfo) error {
			if id, err := crypto.ParseID(fi.Name); err == nil {
				stored[id] = fi.Size
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list packs: %w", err)
		}
	}
	packs := r.Index().Packs()
	c.res.Packs = len(packs)
	for _, p := range packs {
		obj := string(kindOf(p.Type)) + "/" + p.ID.String()
		size, ok := stored[p.ID]
		switch {
		case !ok:
			c.packBad(p, obj, "pack is missing")
		case uint64(size) != p.Size:
			c.packBad(p, obj, fmt.Sprintf("pack has %d bytes, index says %d (truncated or overwritten)", size, p.Size))
		}
		delete(stored, p.ID)
		if p.Type == pack.DataBlob {
			c.res.DataBlobs += len(p.Blobs)
		}
	}
	for id := range stored {
		c.res.Notices = append(c.res.Notices, Notice{Object: "pack " + id.String(), Msg: "not in any index (left by an interrupted backup); prune removes it"})
	}

	// 3. Data.
	if o.ReadData {
		if err := c.readData(ctx, packs); err != nil {
			return nil, err
		}
	}

	// 4. Recovery points and trees.
	snaps, err := r.List(ctx, blob.KindSnapshot)
	if err != nil {
		return nil, err
	}
	c.res.Snapshots = len(snaps)
	clean := map[crypto.ID]bool{} // trees known to reference only good blobs
	for _, sid := range snaps {
		m, err := snapshot.Load(ctx, r, sid)
		if err != nil {
			c.problem(Problem{Object: "snapshots/" + sid.String(), Err: err.Error(), Affects: []string{"recovery point " + sid.Short()}})
			c.affected[sid.String()] = true
			continue
		}
		c.walk(ctx, m, m.Tree, "", clean)
	}
	for id := range c.affected {
		c.res.AffectedPoints = append(c.res.AffectedPoints, id)
	}
	sort.Strings(c.res.AffectedPoints)
	c.res.Trees = len(clean)
	return c.res, ctx.Err()
}

func kindOf(t pack.BlobType) blob.Kind {
	if t == pack.TreeBlob {
		return blob.KindTree
	}
	return blob.KindData
}

func (c *checker) packBad(p index.Pack, obj, why string) {
	i := c.problem(Problem{Object: obj, Err: why})
	c.mu.Lock()
	c.badPacks[p.ID] = why
	for _, b := range p.Blobs {
		c.bad[b.ID] = i
	}
	c.mu.Unlock()
}

// readData reads every pack whole and verifies it.
func (c *checker) readData(ctx context.Context, packs []index.Pack) error {
	type scratch struct{ pack, out []byte }
	free := make(chan *scratch, c.o.Workers)
	for i := 0; i < c.o.Workers; i++ {
		free <- &scratch{}
	}
	return repo.Parallel(ctx, len(packs), c.o.Workers, func(i int) error {
		p := packs[i]
		c.mu.Lock()
		_, skip := c.badPacks[p.ID]
		c.mu.Unlock()
		if skip {
			return nil
		}
		sc := <-free
		defer func() { free <- sc }()
		obj := string(kindOf(p.Type)) + "/" + p.ID.String()
		b, err := blob.LoadRange(ctx, c.r.Backend(), blob.Handle{Kind: kindOf(p.Type), Name: p.ID.String()}, 0, int64(p.Size), sc.pack)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.packBad(p, obj, "cannot read: "+err.Error())
			return nil
		}
		sc.pack = b
		c.mu.Lock()
		c.res.BytesRead += int64(len(b))
		c.mu.Unlock()
		if c.o.Progress != nil {
			c.o.Progress.Add(int64(len(b)))
		}
		hashOK := crypto.Hash(b) == p.ID
		if !hashOK {
			c.problem(Problem{Object: obj, Err: "pack content does not match its name (bytes changed on storage)"})
		}
		if _, _, err := pack.ReadTrailer(c.r.Key(), b); err != nil && hashOK {
			c.problem(Problem{Object: obj, Err: "pack trailer: " + err.Error()})
		}
		// Blob by blob (decrypting in place), so that damage is pinned to
		// the blobs it hits.
		for _, e := range p.Blobs {
			if int(e.Offset)+int(e.Length) > len(b) {
				c.blobBad(e, p.ID, "blob lies beyond the end of the pack")
				continue
			}
			out, err := c.r.OpenBlob(index.Location{Pack: p.ID, Salt: p.Salt, Entry: e}, b[e.Offset:e.Offset+e.Length], sc.out)
			if err != nil {
				c.blobBad(e, p.ID, err.Error())
				continue
			}
			sc.out = out
		}
		return nil
	})
}

func (c *checker) blobBad(e pack.Entry, packID crypto.ID, why string) {
	i := c.problem(Problem{Object: fmt.Sprintf("%s blob %s in pack %s", e.Type, e.ID.Short(), packID.Short()), Err: why})
	c.mu.Lock()
	c.bad[e.ID] = i
	c.mu.Unlock()
}

// walk checks a tree and everything below it, attributing bad blobs to files.
// It returns whether the subtree is clean.
func (c *checker) walk(ctx context.Context, m *snapshot.Manifest, id crypto.ID, prefix string, clean map[crypto.ID]bool) bool {
	if clean[id] || ctx.Err() != nil {
		return true
	}
	where := "recovery point " + m.ID.Short() + ": "
	if pi, bad := c.bad[id]; bad {
		c.addAffect(m, pi, where+slashOr(prefix))
		return false
	}
	t, err := tree.Load(ctx, c.r, id)
	if err != nil {
		c.problem(Problem{Object: "tree " + id.Short(), Err: err.Error(), Affects: []string{where + slashOr(prefix)}})
		c.affected[m.ID.String()] = true
		return false
	}
	ok := true
	for _, n := range t.Nodes {
		p := n.Name
		if prefix != "" {
			p = prefix + "/" + n.Name
		}
		switch n.Type {
		case tree.TypeDir:
			if n.Subtree != nil && !c.walk(ctx, m, *n.Subtree, p, clean) {
				ok = false
			}
		case tree.TypeFile:
			for _, bid := range n.Content {
				pi, bad := c.bad[bid]
				if !bad && !c.r.Index().Has(pack.DataBlob, bid) {
					pi, bad = c.problem(Problem{Object: "data blob " + bid.Short(), Err: "not in the index (missing)"}), true
					c.bad[bid] = pi
				}
				if bad {
					c.addAffect(m, pi, where+p)
					ok = false
					break
				}
			}
		}
	}
	if ok {
		clean[id] = true
	}
	return ok
}

func slashOr(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// addAffect attaches an affected file to the problem that caused it.
func (c *checker) addAffect(m *snapshot.Manifest, problem int, what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.affected[m.ID.String()] = true
	if pr := &c.res.Problems[problem]; len(pr.Affects) < 1000 {
		pr.Affects = append(pr.Affects, what)
	}
}
