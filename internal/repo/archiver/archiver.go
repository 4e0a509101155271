// Package archiver owns turning a virtual tree or a byte stream into a
// recovery point: parallel reading, content-defined chunking, deduplication
// against the vault, reuse of unchanged files from a parent recovery point,
// and the bottom-up construction of tree blobs.
//
// It knows nothing about where the tree comes from: sources (internal/source)
// implement FS.
package archiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/chunker"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
)

// FS is a tree source. Paths are slash-separated and relative to the root
// ("" is the root). Contract:
//   - Root returns the metadata of the root (a directory, or a single file).
//   - ReadDir returns the entries of a directory with their metadata (Name,
//     Type, Mode, times, ids, Size, LinkTarget...; no Content or Subtree), minus
//     excluded ones. An entry that vanished between listing and stat is left out.
//   - Open opens a regular file for reading. The returned File's Close reports
//     ErrChanged if the file changed while it was read.
//
// Methods are called from many goroutines at once.
type FS interface {
	Root() (tree.Node, error)
	ReadDir(p string) ([]tree.Node, error)
	Open(p string) (io.ReadCloser, error)
}

// Prefetcher is an FS that can start reading a file before it is opened.
// Prefetch(p, size) is a hint that regular file p (size bytes) is about to
// be read: it may start fetching it in the background (into the page
// cache) and returns without waiting for it; it never fails (the read that
// follows reports errors). The archiver calls it, from one goroutine, for
// the files a directory's backup will read, as soon as the directory is
// listed: small files are read one at a time each waiting for the disk,
// and fetched ahead their waits overlap.
type Prefetcher interface {
	Prefetch(p string, size int64)
}

// prefetchQueue bounds the prefetch hints waiting; when it is full, hints
// are dropped (the reads just wait for the disk).
const prefetchQueue = 4096

type prefetchJob struct {
	path string
	size int64
}

// ErrChanged is returned by a File's Close when the file changed while read.
var ErrChanged = errors.New("file changed while it was being read")

// Progress counts work done; all fields are updated atomically and may be
// read while a backup runs.
type Progress struct {
	Files     atomic.Int64 // files processed (read or reused)
	Dirs      atomic.Int64
	Bytes     atomic.Int64 // logical bytes of files processed
	BytesRead atomic.Int64 // bytes read from the source
	Errors    atomic.Int64
	Current   atomic.Value // string: a file being read
}

// Options tune a backup.
type Options struct {
	Parent       *snapshot.Manifest // reuse unchanged files from it
	Readers      int                // files read concurrently (I/O parallelism), default 4
	Workers      int                // CPU workers (hash, compress, encrypt), default GOMAXPROCS
	Progress     *Progress
	MaxBuffered  int64 // bytes of chunks in flight, default 16 MiB
	Chunkers     int   // files chunked concurrently (large files), default 2: each chunker holds MaxSize+1 MiB
	Tags         map[string]string
	Resource     string
	Lifecycle    *snapshot.Lifecycle          // recorded in the manifest
	OnError      func(path string, err error) // called for every file-level error
	MaxErrorList int                          // errors kept in the manifest, default 100
	// BeforeCommit, when set, is called after all data is durable and right
	// before the manifest is written; an error aborts the commit. The CLI
	// passes the lock's Check, so a backup whose lock was lost (judged stale
	// by another process) never commits.
	BeforeCommit func(ctx context.Context) error
}

// Archiver backs up sources into one repository.
type Archiver struct {
	r    *repo.Repository
	base repo.Stats // the handle's counters when the backup started
	opts Options
	prog *Progress

	saveCh  chan saveJob
	fileCh  chan fileJob
	mem     *memLimit
	workers sync.WaitGroup

	errMu  sync.Mutex
	errs   []string
	nerrs  int64
	fatal  error
	hlinks sync.Map // devino -> *hlink
	cancel context.CancelFunc

	fs           FS
	chunkers     chan *chunker.Chunker
	fineChunkers chan *chunker.Chunker // with the stream parameters
	dirSem       *trySem
	filesChanged atomic.Int64
	prefetch     chan prefetchJob // nil: the FS is no Prefetcher
}

type saveJob struct {
	data   []byte
	out    *crypto.ID
	done   func(error)
	stream bool // a chunk of a stream: saved at the vault's stream level
}

type fileJob struct {
	path string
	node *tree.Node
	done func()
}

type devino struct{ dev, ino uint64 }

type hlink struct {
	content []crypto.ID
	ok      bool
	ready   chan struct{}
}

// New makes an archiver writing to r.
func New(r *repo.Repository, o Options) *Archiver {
	if o.Readers <= 0 {
		o.Readers = 4
	}
	if o.Workers <= 0 {
		o.Workers = repo.Workers()
	}
	if o.MaxBuffered <= 0 {
		o.MaxBuffered = 16 << 20
	}
	if o.Chunkers <= 0 {
		o.Chunkers = 2
	}
	if o.MaxErrorList <= 0 {
		o.MaxErrorList = 100
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	return &Archiver{r: r, opts: o, prog: o.Progress}
}

func (a *Archiver) start(ctx context.Context) context.Context {
	a.base = a.r.Stats()
	ctx, a.cancel = context.WithCancel(ctx)
	a.saveCh = make(chan saveJob, a.opts.Workers)
	a.fileCh = make(chan fileJob)
	a.mem = newMemLimit(a.opts.MaxBuffered)
	a.chunkers = make(chan *chunker.Chunker, a.opts.Chunkers)
	a.fineChunkers = make(chan *chunker.Chunker, a.opts.Chunkers)
	for i := 0; i < a.opts.Chunkers; i++ {
		a.chunkers <- nil
		a.fineChunkers <- nil
	}
	a.dirSem = newTrySem(8)
	for i := 0; i < a.opts.Workers; i++ {
		a.workers.Add(1)
		go a.saveWorker(ctx)
	}
	for i := 0; i < a.opts.Readers; i++ {
		a.workers.Add(1)
		go a.fileWorker(ctx)
	}
	a.prefetch = nil
	if pf, ok := a.fs.(Prefetcher); ok {
		a.prefetch = make(chan prefetchJob, prefetchQueue)
		a.workers.Add(1)
		go func() {
			defer a.workers.Done()
			for j := range a.prefetch {
				if ctx.Err() == nil {
					pf.Prefetch(j.path, j.size)
				}
			}
		}()
	}
	return ctx
}

func (a *Archiver) stop() {
	close(a.fileCh)
	close(a.saveCh)
	if a.prefetch != nil {
		close(a.prefetch)
	}
	a.workers.Wait()
	a.cancel()
}

func (a *Archiver) saveWorker(ctx context.Context) {
	defer a.workers.Done()
	for j := range a.saveCh {
		var err error
		switch {
		case ctx.Err() != nil:
			err = ctx.Err()
		case j.stream:
			*j.out, _, err = a.r.SaveStreamBlob(ctx, j.data)
		default:
			*j.out, _, err = a.r.SaveBlob(ctx, pack.DataBlob, j.data)
		}
		a.mem.release(int64(cap(j.data)))
		putChunk(j.data)
		j.done(err)
	}
}

func (a *Archiver) fileWorker(ctx context.Context) {
	defer a.workers.Done()
	for j := range a.fileCh {
		a.saveFile(ctx, j.path, j.node, j.done)
	}
}

// FineChunkingMin is the size from which a compressible file (a database
// dump, a log, a CSV export) is chunked with the vault's stream parameters:
// such files change in place a little every day, and small chunks keep the
// unchanged parts in unchanged chunks. Incompressible large files (media,
// archives, encrypted data) keep the large tree chunks.
const FineChunkingMin = 64 << 20

// chunkerFor picks the chunker for a large file from its size and the entropy
// of its first bytes, and returns the reader to chunk (the sniffed bytes put
// back in front).
func (a *Archiver) chunkerFor(ctx context.Context, n *tree.Node, f io.Reader) (*chunker.Chunker, io.Reader, error) {
	if n.Size < FineChunkingMin {
		c, err := a.getChunker(ctx)
		return c, f, err
	}
	head := make([]byte, 64<<10)
	m, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, nil, err
	}
	head = head[:m]
	src := io.MultiReader(bytes.NewReader(head), f)
	if repo.LooksIncompressible(head) {
		c, err := a.getChunker(ctx)
		return c, src, err
	}
	select {
	case c := <-a.fineChunkers:
		if c == nil {
			c = chunker.New(nil, a.r.Config().StreamChunker, a.r.ChunkerTable())
		}
		return c, src, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// getChunker takes one of the few chunkers (each holds a buffer of twice the
// maximum chunk size, so their number bounds memory, not the reader count).
func (a *Archiver) getChunker(ctx context.Context) (*chunker.Chunker, error) {
	select {
	case c := <-a.chunkers:
		if c == nil {
			c = chunker.New(nil, a.r.Config().TreeChunker, a.r.ChunkerTable())
		}
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (a *Archiver) putChunker(c *chunker.Chunker) {
	c.Reset(nil)
	if c.Params() == a.r.Config().StreamChunker {
		a.fineChunkers <- c
		return
	}
	a.chunkers <- c
}

// setFatal records an error that aborts the backup (vault write failure).
func (a *Archiver) setFatal(err error) {
	a.errMu.Lock()
	if a.fatal == nil {
		a.fatal = err
		a.cancel()
		a.mem.wake()
	}
	a.errMu.Unlock()
}

// fatalErr returns the error that stopped the workers, if any.
func (a *Archiver) fatalErr() error {
	a.errMu.Lock()
	defer a.errMu.Unlock()
	return a.fatal
}

func (a *Archiver) fileError(p string, err error) {
	a.prog.Errors.Add(1)
	a.errMu.Lock()
	a.nerrs++
	if len(a.errs) < a.opts.MaxErrorList {
		a.errs = append(a.errs, fmt.Sprintf("%s: %v", p, err))
	}
	a.errMu.Unlock()
	if a.opts.OnError != nil {
		a.opts.OnError(p, err)
	}
}

// saveFile reads one regular file into n.Content; file-level problems are
// recorded in n.Error, vault failures abort via setFatal. It returns once
// the file is read; done is called when n is complete, which may be later,
// from the save worker of the file's last chunk.
func (a *Archiver) saveFile(ctx context.Context, p string, n *tree.Node, done func()) {
	var linked func() // records the content for the other links, once known
	if n.Links > 1 {
		v, loaded := a.hlinks.LoadOrStore(devino{n.DeviceID, n.Inode}, &hlink{ready: make(chan struct{})})
		h := v.(*hlink)
		if loaded {
			select {
			case <-h.ready:
			case <-ctx.Done():
				done()
				return
			}
			if h.ok {
				n.Content = h.content
				a.prog.Files.Add(1)
				a.prog.Bytes.Add(int64(n.Size))
				done()
				return
			}
			// the first link could not be read: try this one on its own
		} else {
			linked = func() {
				h.content, h.ok = n.Content, n.Error == "" && ctx.Err() == nil
				close(h.ready)
			}
		}
	}
	var rd *reading
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		rd, err = a.readFile(ctx, p, n)
		if err != nil || !rd.changed() {
			break
		}
		// Changed while read: its chunks are saved before it is read
		// again (a failure to save them still stops the backup).
		saved := make(chan struct{})
		rd.release(func() { close(saved) })
		<-saved
		err, rd = rd.finish(n), nil
		if !errors.Is(err, ErrChanged) {
			break
		}
	}
	complete := func() {
		if rd != nil {
			err = rd.finish(n)
		}
		a.fileDone(ctx, p, n, err)
		if linked != nil {
			linked()
		}
		done()
	}
	if rd == nil {
		complete()
		return
	}
	// The file is read and closed, and its chunks are with the save
	// workers: the reader goes on with the next file while they finish,
	// so that the disk is kept busy while the CPU compresses (a.mem
	// bounds the chunks in flight, and so the files). The file is
	// finished by whoever is last, the reader here or the save worker of
	// its last chunk, as soon as its own chunks are saved: its directory
	// does not wait for other files.
	rd.release(complete)
}

// fileDone records the outcome of reading file p into n.
func (a *Archiver) fileDone(ctx context.Context, p string, n *tree.Node, err error) {
	a.prog.Files.Add(1)
	a.prog.Bytes.Add(int64(n.Size))
	if err == nil {
		return
	}
	if ctx.Err() != nil {
		return
	}
	var fe *fatalError
	if errors.As(err, &fe) {
		a.setFatal(fe.err)
		return
	}
	n.Error = err.Error()
	if !errors.Is(err, ErrChanged) {
		n.Content = nil
	}
	a.fileError(p, err)
}

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// reading is a file read and closed whose chunks the save workers may
// still be saving.
type reading struct {
	mu   sync.Mutex
	serr error        // the first save error (fatal)
	ids  []*crypto.ID // the chunks' ids, in order, set as they are saved
	size uint64       // bytes read
	rerr error        // the read's error
	cerr error        // Close's (ErrChanged: changed while read)
	// refs counts the chunks not saved yet, plus one held by the reader
	// until it calls release.
	refs   atomic.Int64
	onDone func() // run by release's caller or the last chunk's saver
}

// changed reports whether the file changed while it was read.
func (rd *reading) changed() bool {
	return errors.Is(rd.rerr, ErrChanged) || errors.Is(rd.cerr, ErrChanged)
}

func newReading() *reading {
	rd := &reading{}
	rd.refs.Store(1)
	return rd
}

// add counts a chunk handed to the save workers.
func (rd *reading) add() { rd.refs.Add(1) }

// saved is called once per chunk added, with the error saving it.
func (rd *reading) saved(err error) {
	if err != nil {
		rd.mu.Lock()
		if rd.serr == nil {
			rd.serr = err
		}
		rd.mu.Unlock()
	}
	if rd.refs.Add(-1) == 0 {
		rd.onDone()
	}
}

// release drops the reader's reference: f runs once every chunk is saved,
// now if they are.
func (rd *reading) release(f func()) {
	rd.onDone = f
	if rd.refs.Add(-1) == 0 {
		f()
	}
}

// finish sets n's content and size, once every chunk is saved (from the
// function given to release).
func (rd *reading) finish(n *tree.Node) error {
	if rd.serr != nil {
		return &fatalError{rd.serr}
	}
	if rd.rerr != nil {
		return rd.rerr
	}
	n.Content = make([]crypto.ID, len(rd.ids))
	for i, id := range rd.ids {
		n.Content[i] = *id
	}
	if rd.cerr != nil {
		return rd.cerr
	}
	if rd.size != n.Size {
		n.Size = rd.size
	}
	return nil
}

// readFile reads and chunks one file, hands the chunks to the save
// workers and closes the file; the reading's release says when the chunks
// are saved. An error means the file could not be opened.
func (a *Archiver) readFile(ctx context.Context, p string, n *tree.Node) (*reading, error) {
	a.prog.Current.Store(p)
	f, err := a.fs.Open(p)
	if err != nil {
		return nil, err
	}
	rd := newReading()
	done := rd.saved
	// hand passes buf (a getChunk buffer whose capacity a.mem accounts
	// for) to a save worker, which returns both.
	hand := func(buf []byte) error {
		id := new(crypto.ID)
		rd.ids = append(rd.ids, id)
		rd.size += uint64(len(buf))
		rd.add()
		select {
		case a.saveCh <- saveJob{data: buf, out: id, done: done}:
			return nil
		case <-ctx.Done():
			rd.saved(nil)
			a.mem.release(int64(cap(buf)))
			putChunk(buf)
			return ctx.Err()
		}
	}
	submit := func(chunk []byte) error {
		buf := getChunk(len(chunk))
		if err := a.mem.acquire(ctx, int64(cap(buf))); err != nil {
			putChunk(buf)
			return err
		}
		return hand(append(buf[:0], chunk...))
	}
	var rerr error
	minSize := a.r.Config().TreeChunker.MinSize
	if n.Size < uint64(minSize) {
		// Small file: one read into the buffer handed to the saver (no
		// copy), one chunk, no chunker.
		buf := getChunk(int(n.Size) + 1)
		if rerr = a.mem.acquire(ctx, int64(cap(buf))); rerr != nil {
			putChunk(buf)
		} else {
			m, err := io.ReadFull(f, buf[:int(n.Size)+1])
			switch {
			case (err == io.ErrUnexpectedEOF || err == io.EOF) && m > 0:
				rerr = hand(buf[:m])
				buf = nil
			case err == io.ErrUnexpectedEOF || err == io.EOF:
			case err == nil: // grew while we read it
				rerr = ErrChanged
			default:
				rerr = err
			}
			if buf != nil {
				a.mem.release(int64(cap(buf)))
				putChunk(buf)
			}
		}
	} else if c, src, err := a.chunkerFor(ctx, n, f); err != nil {
		rerr = err
	} else {
		c.Reset(src)
		for {
			chunk, err := c.Next(nil)
			if err == io.EOF {
				break
			}
			if err != nil {
				rerr = err
				break
			}
			if rerr = submit(chunk); rerr != nil {
				break
			}
		}
		a.putChunker(c)
	}
	a.prog.BytesRead.Add(int64(rd.size))
	rd.cerr = f.Close()
	if rerr != nil && ctx.Err() != nil {
		rerr = ctx.Err()
	}
	rd.rerr = rerr
	return rd, nil
}

// Result is the outcome of a backup.
type Result struct {
	Manifest *snapshot.Manifest
}

// Backup backs up fsys and writes a recovery point. File-level errors make
// the recovery point PARTIAL; vault errors abort it and nothing is written.
func (a *Archiver) Backup(ctx context.Context, fsys FS, src snapshot.Source) (*snapshot.Manifest, error) {
	start := a.r.Clock().Now()
	a.fs = fsys
	wctx := a.start(ctx)
	root, err := fsys.Root()
	if err != nil {
		a.stop()
		return nil, fmt.Errorf("back up %s: %w", describe(src), err)
	}
	var parentTree *crypto.ID
	if a.opts.Parent != nil {
		parentTree = &a.opts.Parent.Tree
	}
	var rootID crypto.ID
	if root.Type == tree.TypeDir {
		rootID, err = a.saveDir(wctx, "", parentTree)
	} else {
		// A single file: a root tree holding one node.
		rootID, err = a.saveSingle(wctx, root, parentTree)
	}
	a.stop()
	a.errMu.Lock()
	fatal := a.fatal
	a.errMu.Unlock()
	if fatal != nil {
		a.r.Abort()
		return nil, fmt.Errorf("back up %s: %w", describe(src), fatal)
	}
	if err != nil {
		a.r.Abort()
		return nil, fmt.Errorf("back up %s: %w", describe(src), err)
	}
	if err := a.r.Flush(ctx); err != nil {
		a.r.Abort()
		return nil, fmt.Errorf("back up %s: %w", describe(src), err)
	}
	var rootNode *tree.Node
	if root.Type == tree.TypeDir {
		root.Subtree = &rootID
		rootNode = &root
	}
	return a.commit(ctx, rootID, rootNode, src, start)
}

func (a *Archiver) commit(ctx context.Context, rootID crypto.ID, rootNode *tree.Node, src snapshot.Source, start time.Time) (*snapshot.Manifest, error) {
	st := a.r.Stats()
	// The handle's counters add up over its life; this backup's share is
	// the difference since it started (another backup running on the same
	// handle at the same time would be counted in both).
	st.BlobsAdded -= a.base.BlobsAdded
	st.BytesAdded -= a.base.BytesAdded
	st.StoredAdded -= a.base.StoredAdded
	host, _ := os.Hostname()
	m := &snapshot.Manifest{
		Time: a.r.Clock().Now().UTC(), Hostname: host, Source: src, Tree: rootID, Root: rootNode, Status: snapshot.StatusCompleted,
		Tags: a.opts.Tags, Errors: a.errs, Lifecycle: a.opts.Lifecycle,
		Stats: snapshot.Stats{
			Files: a.prog.Files.Load(), Dirs: a.prog.Dirs.Load(), Bytes: a.prog.Bytes.Load(),
			BytesRead: a.prog.BytesRead.Load(), BlobsAdded: st.BlobsAdded, BytesAdded: st.BytesAdded,
			StoredAdded: st.StoredAdded, Errors: a.nerrs, DurationSec: a.r.Clock().Now().Sub(start).Seconds(),
		},
	}
	m.Stats.FilesChanged = a.filesChanged.Load()
	if a.opts.Parent != nil {
		id := a.opts.Parent.ID
		m.Parent = &id
	}
	if a.nerrs > 0 {
		m.Status = snapshot.StatusPartial
	}
	if a.opts.BeforeCommit != nil {
		if err := a.opts.BeforeCommit(ctx); err != nil {
			return nil, fmt.Errorf("back up %s: not committing: %w", describe(src), err)
		}
	}
	if err := snapshot.Save(ctx, a.r, m); err != nil {
		return nil, err
	}
	return m, nil
}

func describe(src snapshot.Source) string {
	switch {
	case len(src.Paths) > 0:
		return fmt.Sprint(src.Paths)
	case src.Command != "":
		return "output of " + src.Command
	}
	return src.Type
}

// unchanged reports whether cur can reuse prev's content.
func (a *Archiver) unchanged(cur, prev *tree.Node) bool {
	if prev == nil || prev.Type != tree.TypeFile || prev.Error != "" || prev.Size != cur.Size ||
		!prev.ModTime.Equal(cur.ModTime) || !prev.ChangeTime.Equal(cur.ChangeTime) || prev.Inode != cur.Inode {
		return false
	}
	if prev.Size > 0 && len(prev.Content) == 0 {
		return false
	}
	for _, id := range prev.Content {
		if !a.r.Index().Has(pack.DataBlob, id) {
			return false
		}
	}
	return true
}

func (a *Archiver) loadPrev(ctx context.Context, id *crypto.ID) *tree.Tree {
	if id == nil {
		return nil
	}
	t, err := tree.Load(ctx, a.r, *id)
	if err != nil {
		// Not fatal: without the parent tree we just read everything.
		a.r.Logger().Warn("cannot read parent tree, reading files again", "tree", id.Short(), "err", err)
		return nil
	}
	return t
}

// saveDir backs up directory p and returns its tree id.
func (a *Archiver) saveDir(ctx context.Context, p string, prevID *crypto.ID) (crypto.ID, error) {
	if err := ctx.Err(); err != nil {
		return crypto.ID{}, err
	}
	nodes, err := a.fs.ReadDir(p)
	if err != nil {
		return crypto.ID{}, err
	}
	a.prog.Dirs.Add(1)
	prev := a.loadPrev(ctx, prevID)
	var (
		wg   sync.WaitGroup
		emu  sync.Mutex
		derr error
	)
	setErr := func(err error) {
		emu.Lock()
		if derr == nil {
			derr = err
		}
		emu.Unlock()
	}
	// The files to read, known before the first is queued: hinted to a
	// Prefetcher FS at once.
	var reuse []*tree.Node // the previous node of a file reused as is
	for i := range nodes {
		n := &nodes[i]
		if n.Type != tree.TypeFile {
			continue
		}
		var pn *tree.Node
		if prev != nil {
			pn = prev.Find(n.Name)
		}
		if a.unchanged(n, pn) {
			if reuse == nil {
				reuse = make([]*tree.Node, len(nodes))
			}
			reuse[i] = pn
		} else if a.prefetch != nil && n.Size > 0 {
			select {
			case a.prefetch <- prefetchJob{path: path.Join(p, n.Name), size: int64(n.Size)}:
			default:
			}
		}
	}
	for i := range nodes {
		n := &nodes[i]
		cp := path.Join(p, n.Name)
		var pn *tree.Node
		if prev != nil && n.Type == tree.TypeDir {
			pn = prev.Find(n.Name)
		}
		switch n.Type {
		case tree.TypeFile:
			if reuse != nil && reuse[i] != nil {
				n.Content = reuse[i].Content
				a.prog.Files.Add(1)
				a.prog.Bytes.Add(int64(n.Size))
				continue
			}
			a.filesChanged.Add(1)
			wg.Add(1)
			select {
			case a.fileCh <- fileJob{path: cp, node: n, done: wg.Done}:
			case <-ctx.Done():
				wg.Done()
			}
		case tree.TypeDir:
			var psub *crypto.ID
			if pn != nil && pn.Type == tree.TypeDir {
				psub = pn.Subtree
			}
			run := func() {
				id, err := a.saveDir(ctx, cp, psub)
				if err != nil {
					if ctx.Err() != nil {
						setErr(ctx.Err())
						return
					}
					var fe *fatalError
					if errors.As(err, &fe) {
						setErr(err)
						return
					}
					// An unreadable directory is a file-level error.
					n.Error = err.Error()
					a.fileError(cp, err)
					empty := &tree.Tree{}
					id, err = tree.Save(ctx, a.r, empty)
					if err != nil {
						setErr(&fatalError{err})
						return
					}
				}
				n.Subtree = &id
			}
			if a.dirSem.tryAcquire() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer a.dirSem.release()
					run()
				}()
			} else {
				run()
			}
		}
	}
	wg.Wait()
	if derr != nil {
		return crypto.ID{}, derr
	}
	if err := ctx.Err(); err != nil {
		return crypto.ID{}, err
	}
	if a.samePrev(nodes, prev, prevID) {
		return *prevID, nil
	}
	id, err := tree.Save(ctx, a.r, &tree.Tree{Nodes: nodes})
	if err != nil {
		return crypto.ID{}, &fatalError{err}
	}
	return id, nil
}

// samePrev reports whether a directory's entries are all the Same as those
// of its previous tree prev (id prevID), still in the index: the backup
// then reuses that tree as it reuses unchanged files' content, instead of
// encoding and hashing it again (most directories of an incremental
// backup).
func (a *Archiver) samePrev(nodes []tree.Node, prev *tree.Tree, prevID *crypto.ID) bool {
	if prev == nil || prevID == nil || len(nodes) != len(prev.Nodes) || !a.r.Index().Has(pack.TreeBlob, *prevID) {
		return false
	}
	slices.SortFunc(nodes, func(x, y tree.Node) int { return strings.Compare(x.Name, y.Name) })
	for i := range nodes {
		if !nodes[i].Same(&prev.Nodes[i]) {
			return false
		}
	}
	return true
}

// saveSingle backs up a root that is a single file.
func (a *Archiver) saveSingle(ctx context.Context, root tree.Node, prevID *crypto.ID) (crypto.ID, error) {
	prev := a.loadPrev(ctx, prevID)
	var pn *tree.Node
	if prev != nil {
		pn = prev.Find(root.Name)
	}
	n := root
	if n.Type == tree.TypeFile {
		if a.unchanged(&n, pn) {
			n.Content = pn.Content
			a.prog.Files.Add(1)
			a.prog.Bytes.Add(int64(n.Size))
		} else {
			a.filesChanged.Add(1)
			done := make(chan struct{})
			select {
			case a.fileCh <- fileJob{path: "", node: &n, done: func() { close(done) }}:
				<-done
			case <-ctx.Done():
				return crypto.ID{}, ctx.Err()
			}
		}
	}
	id, err := tree.Save(ctx, a.r, &tree.Tree{Nodes: []tree.Node{n}})
	if err != nil {
		return crypto.ID{}, &fatalError{err}
	}
	return id, nil
}
