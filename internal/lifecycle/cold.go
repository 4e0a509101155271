package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/s3"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
)

// moveCold moves the catalog rows in cands (warm, cold date passed per the
// catalog) to the cold tier, under a shared vault lock:
//
//   - the vault's manifests decide: a row moves only when its manifest's
//     MoveToColdAt has passed too;
//   - the data packs referenced only by cold-due points (per their
//     manifests) get the storage class ColdClass when the backend has
//     storage classes (blob.StorageClass); tree packs stay warm, so listing,
//     check and prune's mark phase keep working;
//   - on a backend without storage classes (local disk, or an S3 server
//     answering s3.ErrStorageClassUnsupported) nothing moves and the data
//     stays warm; the rows still become cold, since the tier records the
//     lifecycle stage the point has reached.
//
// Any error while moving packs leaves every row warm, to be retried.
func (w *Worker) moveCold(ctx context.Context, v catalog.Vault, r *repo.Repository, cands []catalog.RecoveryPoint, now time.Time, res *Result) error {
	lock, err := r.Lock(ctx, false, "lifecycle-cold")
	if err != nil {
		return err
	}
	defer func() {
		if uerr := lock.Unlock(); uerr != nil {
			w.Log.Error("lifecycle: unlock vault", "vault", v.Name, "err", uerr)
		}
	}()
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	ms, lerrs, err := snapshot.LoadAll(ctx, r)
	if err != nil {
		return err
	}
	if len(lerrs) > 0 {
		// An unreadable manifest may reference any pack.
		return fmt.Errorf("cold storage skipped: %w", errors.Join(lerrs...))
	}
	isCold := func(m *snapshot.Manifest) bool {
		at := m.MoveToColdAt()
		return !at.IsZero() && !at.After(now)
	}
	byID := map[string]*snapshot.Manifest{}
	for _, m := range ms {
		byID[m.ID.String()] = m
	}
	var rows []catalog.RecoveryPoint
	for _, rp := range cands {
		m := byID[rp.ID]
		switch {
		case m == nil:
			w.Log.Warn("lifecycle: cold-due catalog row has no manifest in the vault; left alone", "point", v.Name+"/"+rp.ID,
				"fix", "coffre catalog rebuild --vault "+v.Name)
		case !isCold(m):
			w.Log.Warn("lifecycle: the catalog says the point is due for cold storage but its manifest does not; left warm",
				"point", v.Name+"/"+rp.ID, "catalog_move_to_cold_at", fmtTime(rp.MoveToColdAt), "manifest_move_to_cold_at", fmtTime(m.MoveToColdAt()))
		default:
			rows = append(rows, rp)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	sc, hasClasses := r.Backend().(blob.StorageClass)
	moved := 0
	if hasClasses {
		packs, err := coldPacks(ctx, r, ms, isCold)
		if err != nil {
			return fmt.Errorf("cold storage: %w", err)
		}
		for _, p := range packs {
			err := sc.SetStorageClass(ctx, blob.Handle{Kind: blob.KindData, Name: p.String()}, w.ColdClass)
			if errors.Is(err, s3.ErrStorageClassUnsupported) {
				hasClasses = false
				break
			}
			if err != nil {
				res.PacksMoved += moved
				return fmt.Errorf("cold storage: %w", err)
			}
			moved++
		}
	}
	res.PacksMoved += moved
	if !hasClasses && !w.noColdClass[v.Name] {
		w.noColdClass[v.Name] = true
		w.Log.Warn("lifecycle: the vault's backend has no cold storage class; cold points' data stays warm",
			"vault", v.Name, "location", r.Backend().Location())
	}
	var errs []error
	for _, rp := range rows {
		rp.Tier = catalog.TierCold
		if err := w.Cat.PutRecoveryPoint(ctx, rp); err != nil {
			errs = append(errs, err)
			continue
		}
		res.MovedToCold++
	}
	w.Log.Info("lifecycle: recovery points moved to cold storage", "vault", v.Name, "points", len(rows)-len(errs), "packs", moved)
	return errors.Join(errs...)
}

// coldPacks returns, sorted, the data packs that hold blobs referenced by
// cold manifests and by no other manifest. A blob's pack is its index
// location (the copy reads use).
func coldPacks(ctx context.Context, r *repo.Repository, ms []*snapshot.Manifest, cold func(*snapshot.Manifest) bool) ([]crypto.ID, error) {
	warmM, coldM := newPackMarker(r), newPackMarker(r)
	for _, m := range ms {
		mk := warmM
		if cold(m) {
			mk = coldM
		}
		if err := mk.mark(ctx, m.Tree); err != nil {
			return nil, fmt.Errorf("recovery point %s: %w", m.ID.Short(), err)
		}
	}
	var out []crypto.ID
	for p := range coldM.packs {
		if !warmM.packs[p] {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b crypto.ID) int { return slices.Compare(a[:], b[:]) })
	return out, nil
}

// packMarker collects the data packs a set of trees references.
type packMarker struct {
	r     *repo.Repository
	trees map[crypto.ID]bool
	packs map[crypto.ID]bool
}

func newPackMarker(r *repo.Repository) *packMarker {
	return &packMarker{r: r, trees: map[crypto.ID]bool{}, packs: map[crypto.ID]bool{}}
}

func (p *packMarker) mark(ctx context.Context, id crypto.ID) error {
	if p.trees[id] {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := tree.Load(ctx, p.r, id)
	if err != nil {
		return err
	}
	p.trees[id] = true
	for _, n := range t.Nodes {
		for _, c := range n.Content {
			loc, ok := p.r.Index().Lookup(pack.DataBlob, c)
			if !ok {
				return fmt.Errorf("file %s references data blob %s, which is not in the index", n.Name, c.Short())
			}
			p.packs[loc.Pack] = true
		}
		if n.Subtree != nil {
			if err := p.mark(ctx, *n.Subtree); err != nil {
				return err
			}
		}
	}
	return nil
}
