package archiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/repo/chunker"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
)

// StreamNode carries the metadata of a stream's single file node.
type StreamNode struct {
	Name string // file name inside the recovery point, e.g. "dump.sql"
	Mode uint32 // default 0600
}

// BackupStream reads rd to its end with the vault's stream chunker (smaller
// chunks than for files, so that dumps deduplicate well day to day) and
// writes a recovery point whose tree holds one file. finish is called after
// rd hit EOF and before anything is committed; an error from it (e.g. the
// command that produced the stream failed) aborts the backup.
func (a *Archiver) BackupStream(ctx context.Context, rd io.Reader, sn StreamNode, src snapshot.Source, finish func() error) (*snapshot.Manifest, error) {
	start := a.r.Clock().Now()
	wctx := a.start(ctx)
	if sn.Name == "" {
		sn.Name = "stdin"
	}
	if sn.Mode == 0 {
		sn.Mode = 0o600
	}
	n := tree.Node{Name: sn.Name, Type: tree.TypeFile, Mode: sn.Mode, ModTime: start.UTC()}
	err := a.chunkStream(wctx, rd, sn.Name, &n)
	a.stop()
	if err != nil {
		a.r.Abort()
		return nil, fmt.Errorf("back up %s: %w", describe(src), err)
	}
	if finish != nil {
		if err := finish(); err != nil {
			a.r.Abort()
			return nil, fmt.Errorf("back up %s: %w", describe(src), err)
		}
	}
	a.prog.Files.Add(1)
	a.filesChanged.Add(1)
	rootID, err := tree.Save(ctx, a.r, &tree.Tree{Nodes: []tree.Node{n}})
	if err != nil {
		return nil, fmt.Errorf("back up %s: %w", describe(src), err)
	}
	if err := a.r.Flush(ctx); err != nil {
		return nil, fmt.Errorf("back up %s: %w", describe(src), err)
	}
	src.Filename = sn.Name
	return a.commit(ctx, rootID, nil, src, start)
}

// chunkStream reads rd to its end with the stream chunker, hands the chunks
// to the save workers and sets n's Content and Size. It may run in several
// goroutines at once (one per stream). It returns the first read or save
// error; the caller aborts the repository's pending packs.
func (a *Archiver) chunkStream(wctx context.Context, rd io.Reader, name string, n *tree.Node) error {
	c := chunker.New(rd, a.r.Config().StreamChunker, a.r.ChunkerTable())
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		serr error
		ids  []*crypto.ID
		rerr error
	)
	done := func(err error) {
		if err != nil {
			mu.Lock()
			if serr == nil {
				serr = err
			}
			mu.Unlock()
			a.setFatal(err)
		}
		wg.Done()
	}
	for {
		a.prog.Current.Store(name)
		chunk, err := c.Next(nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = fmt.Errorf("read %s: %w", name, err)
			break
		}
		buf := getChunk(len(chunk))
		if err := a.mem.acquire(wctx, int64(cap(buf))); err != nil {
			rerr = err
			break
		}
		buf = append(buf[:0], chunk...)
		id := new(crypto.ID)
		ids = append(ids, id)
		n.Size += uint64(len(chunk))
		a.prog.Bytes.Add(int64(len(chunk)))
		a.prog.BytesRead.Add(int64(len(chunk)))
		wg.Add(1)
		select {
		case a.saveCh <- saveJob{data: buf, out: id, done: done, stream: true}:
		case <-wctx.Done():
			wg.Done()
			rerr = wctx.Err()
		}
		if rerr != nil {
			break
		}
	}
	wg.Wait()
	if serr != nil {
		return serr
	}
	if rerr != nil {
		return rerr
	}
	n.Content = make([]crypto.ID, len(ids))
	for i, id := range ids {
		n.Content[i] = *id
	}
	return nil
}

// Streams receives the files of a multi-stream recovery point (a database's
// schema and its tables, a cache's keys…); see BackupStreams.
type Streams struct {
	a     *Archiver
	ctx   context.Context
	start time.Time
	mu    sync.Mutex
	files map[string]tree.Node
}

// Add reads rd to its end and stores it as the file at path (slash-separated,
// relative, e.g. "data/public.users.copy"), chunked with the stream chunker.
// Add may be called from several goroutines at once; each path once.
func (s *Streams) Add(p string, rd io.Reader) error {
	clean := path.Clean(p)
	if p == "" || clean != p || path.IsAbs(p) || p == "." || strings.HasPrefix(p, "../") || p == ".." {
		return fmt.Errorf("stream path %q: want a clean relative path", p)
	}
	s.mu.Lock()
	_, dup := s.files[p]
	if !dup {
		s.files[p] = tree.Node{} // reserve
	}
	s.mu.Unlock()
	if dup {
		return fmt.Errorf("stream path %q added twice", p)
	}
	n := tree.Node{Name: path.Base(p), Type: tree.TypeFile, Mode: 0o600, ModTime: s.start.UTC()}
	if err := s.a.chunkStream(s.ctx, rd, p, &n); err != nil {
		return err
	}
	s.a.prog.Files.Add(1)
	s.a.filesChanged.Add(1)
	s.mu.Lock()
	s.files[p] = n
	s.mu.Unlock()
	return nil
}

// AddBytes stores b as the file at path.
func (s *Streams) AddBytes(p string, b []byte) error { return s.Add(p, bytes.NewReader(b)) }

// BackupStreams writes a recovery point made of the streams fill adds (in
// parallel if it likes), as files in a tree of directories. fill's context
// is cancelled on the first storage error. If fill (or any Add) fails,
// nothing is committed: the recovery point either holds every stream fill
// added, or does not exist.
func (a *Archiver) BackupStreams(ctx context.Context, src snapshot.Source, fill func(ctx context.Context, s *Streams) error) (*snapshot.Manifest, error) {
	start := a.r.Clock().Now()
	wctx := a.start(ctx)
	s := &Streams{a: a, ctx: wctx, start: start, files: map[string]tree.Node{}}
	err := fill(wctx, s)
	a.stop()
	if fe := a.fatalErr(); fe != nil && (err == nil || errors.Is(err, context.Canceled)) {
		// A storage error cancelled fill's context: report the cause, not
		// the cancellation it led to.
		err = fe
	}
	if err != nil {
		a.r.Abort()
		return nil, fmt.Errorf("back up %s: %w", describe(src), err)
	}
	rootID, err := saveStreamTree(ctx, a, s.files, start)
	if err != nil {
		a.r.Abort()
		return nil, fmt.Errorf("back up %s: %w", describe(src), err)
	}
	if err := a.r.Flush(ctx); err != nil {
		return nil, fmt.Errorf("back up %s: %w", describe(src), err)
	}
	return a.commit(ctx, rootID, nil, src, start)
}

type streamDir struct {
	files []tree.Node
	dirs  map[string]*streamDir
}

// saveStreamTree saves the directories implied by the files' paths, bottom
// up, and returns the root tree's id.
func saveStreamTree(ctx context.Context, a *Archiver, files map[string]tree.Node, start time.Time) (crypto.ID, error) {
	root := &streamDir{dirs: map[string]*streamDir{}}
	for p, n := range files {
		d := root
		parts := strings.Split(p, "/")
		for _, dir := range parts[:len(parts)-1] {
			sub := d.dirs[dir]
			if sub == nil {
				sub = &streamDir{dirs: map[string]*streamDir{}}
				d.dirs[dir] = sub
			}
			d = sub
		}
		if _, clash := d.dirs[n.Name]; clash {
			return crypto.ID{}, fmt.Errorf("stream path %q is both a file and a directory", p)
		}
		d.files = append(d.files, n)
	}
	var save func(d *streamDir) (crypto.ID, error)
	save = func(d *streamDir) (crypto.ID, error) {
		t := &tree.Tree{Nodes: append([]tree.Node(nil), d.files...)}
		for name, sub := range d.dirs {
			for _, f := range d.files {
				if f.Name == name {
					return crypto.ID{}, fmt.Errorf("stream path %q is both a file and a directory", name)
				}
			}
			id, err := save(sub)
			if err != nil {
				return id, err
			}
			t.Nodes = append(t.Nodes, tree.Node{Name: name, Type: tree.TypeDir, Mode: 0o700, ModTime: start.UTC(), Subtree: &id})
			a.prog.Dirs.Add(1)
		}
		sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
		return tree.Save(ctx, a.r, t)
	}
	return save(root)
}
