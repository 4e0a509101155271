package fs

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
)

// RestoreOptions tune a restore.
type RestoreOptions struct {
	Target    string // directory to restore into; created if missing
	Subpath   string // restore only this path of the recovery point ("" = all)
	Overwrite bool   // allow a non-empty target (existing files are never silently replaced: they cause an error)
	Workers   int    // files written concurrently, default 8
	Owner     *bool  // restore uid/gid; default: only when running as root
	Progress  *RestoreProgress
}

// RestoreProgress counts work done, updated atomically.
type RestoreProgress struct {
	Files atomic.Int64
	Bytes atomic.Int64
}

// RestoreStats summarises a restore.
type RestoreStats struct {
	Files, Dirs, Links, Bytes int64
	Warnings                  []string // metadata that could not be set
}

// ErrTargetNotEmpty is returned when the target has content and Overwrite is off.
var ErrTargetNotEmpty = errors.New("restore target is not empty")

type restorer struct {
	r       *repo.Repository
	o       RestoreOptions
	owner   bool
	stats   RestoreStats
	mu      sync.Mutex
	dirs    []dirMeta
	links   []linkJob
	firsts  map[devino]string
	prog    *RestoreProgress
	zeroIDs sync.Map // crypto.ID -> bool (all-zero blob)
}

type devino struct{ dev, ino uint64 }

type dirMeta struct {
	path string
	n    tree.Node
}

type linkJob struct {
	path string
	key  devino
	n    tree.Node
}

type fileJob struct {
	path string
	n    tree.Node
}

// Small files of one directory are restored by one worker as a batch: their
// chunks, stored side by side when they were backed up together, then come
// through one BlobReader in few reads (on S3, one GET per few MiB rather
// than one per file).
const (
	batchFileMax = 256 << 10 // files up to this size join batches
	batchFiles   = 64
	batchBytes   = 2 << 20
)

// batch is the small files of one directory not yet handed to a worker.
type batch struct {
	jobs  []fileJob
	bytes int64
}

// Restore writes recovery point m (or its Subpath) into o.Target. Every chunk
// is verified (keyed hash) before it is written.
func Restore(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, o RestoreOptions) (*RestoreStats, error) {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Progress == nil {
		o.Progress = &RestoreProgress{}
	}
	rs := &restorer{r: r, o: o, owner: os.Geteuid() == 0, firsts: map[devino]string{}, prog: o.Progress}
	if o.Owner != nil {
		rs.owner = *o.Owner
	}
	target, err := filepath.Abs(o.Target)
	if err != nil {
		return nil, err
	}
	if err := checkTarget(target, o.Overwrite); err != nil {
		return nil, err
	}
	// Find the subtree (or single node) to restore.
	rootID := m.Tree
	var single *tree.Node
	if sp := strings.Trim(o.Subpath, "/"); sp != "" {
		for _, part := range strings.Split(sp, "/") {
			t, err := tree.Load(ctx, r, rootID)
			if err != nil {
				return nil, err
			}
			n := t.Find(part)
			if n == nil {
				return nil, hint.With(fmt.Errorf("path %q not found in recovery point %s", o.Subpath, m.ID.Short()), "list its files with `coffre ls`")
			}
			if n.Type != tree.TypeDir {
				if single != nil {
					return nil, fmt.Errorf("path %q: %q is not a directory", o.Subpath, part)
				}
				nn := *n
				single = &nn
				continue
			}
			if single != nil {
				return nil, fmt.Errorf("path %q: not a directory", o.Subpath)
			}
			rootID = *n.Subtree
		}
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return nil, fmt.Errorf("create restore target: %w", err)
	}
	jobs := make(chan []fileJob, 64)
	var (
		wg   sync.WaitGroup
		emu  sync.Mutex
		ferr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	setErr := func(err error) {
		emu.Lock()
		if ferr == nil {
			ferr = err
			cancel()
		}
		emu.Unlock()
	}
	for i := 0; i < o.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := r.NewBlobReader(ctx, pack.DataBlob, nil)
			var ids []crypto.ID
			for js := range jobs {
				if ctx.Err() != nil {
					continue
				}
				if len(js) > 1 {
					rs.packOrder(js)
				}
				ids = ids[:0]
				for _, j := range js {
					ids = append(ids, j.n.Content...)
				}
				br.Reset(ids)
				for i := range js {
					if err := rs.writeFile(js[i].path, &js[i].n, br); err != nil {
						setErr(err)
						break
					}
				}
			}
		}()
	}
	if m.Root != nil && m.Root.Type == tree.TypeDir && strings.Trim(o.Subpath, "/") == "" {
		rs.dirs = append(rs.dirs, dirMeta{target, *m.Root}) // applied last
	}
	if single != nil {
		var b batch
		rs.file(ctx, filepath.Join(target, single.Name), *single, &b, jobs)
		rs.flush(ctx, &b, jobs)
	} else {
		err = rs.dir(ctx, rootID, target, jobs)
		if err != nil {
			setErr(err)
		}
	}
	close(jobs)
	wg.Wait()
	if ferr != nil {
		return &rs.stats, ferr
	}
	// Hard links after all first links exist.
	for _, l := range rs.links {
		first := rs.firsts[l.key]
		if err := os.Link(first, l.path); err != nil {
			return &rs.stats, fmt.Errorf("restore hard link %s: %w", l.path, err)
		}
		rs.stats.Links++
	}
	// Directory metadata last, deepest first, so that writing children does
	// not change a directory's mtime after we set it.
	for i := len(rs.dirs) - 1; i >= 0; i-- {
		rs.setMeta(rs.dirs[i].path, &rs.dirs[i].n)
	}
	return &rs.stats, nil
}

func checkTarget(target string, overwrite bool) error {
	f, err := os.Open(target)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore target %s: %w", target, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("restore target %s exists and is not a directory", target)
	}
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("restore target %s: %w", target, err)
	}
	if len(names) > 0 && !overwrite {
		return hint.With(fmt.Errorf("%w: %s", ErrTargetNotEmpty, target), "restore into a new or empty directory, or pass --overwrite to add files to it (existing files are never replaced)")
	}
	return nil
}

func (rs *restorer) dir(ctx context.Context, id crypto.ID, dst string, jobs chan<- []fileJob) error {
	t, err := tree.Load(ctx, rs.r, id)
	if err != nil {
		return err
	}
	var b batch
	defer rs.flush(ctx, &b, jobs)
	for _, n := range t.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := filepath.Join(dst, n.Name)
		switch n.Type {
		case tree.TypeDir:
			if err := os.Mkdir(p, 0o700); err != nil && !(rs.o.Overwrite && errors.Is(err, os.ErrExist)) {
				return fmt.Errorf("restore directory %s: %w", p, err)
			}
			rs.stats.Dirs++
			rs.dirs = append(rs.dirs, dirMeta{p, n})
			if n.Subtree != nil {
				if err := rs.dir(ctx, *n.Subtree, p, jobs); err != nil {
					return err
				}
			}
		case tree.TypeFile:
			rs.file(ctx, p, n, &b, jobs)
		case tree.TypeSymlink:
			if err := os.Symlink(n.LinkTarget, p); err != nil {
				return fmt.Errorf("restore symlink %s: %w", p, err)
			}
			rs.setMeta(p, &n)
		case tree.TypeFifo:
			if err := unix.Mkfifo(p, n.Mode&0o7777); err != nil {
				return fmt.Errorf("restore fifo %s: %w", p, err)
			}
			rs.setMeta(p, &n)
		case tree.TypeDev, tree.TypeCharDev:
			mode := uint32(unix.S_IFBLK)
			if n.Type == tree.TypeCharDev {
				mode = unix.S_IFCHR
			}
			if err := unix.Mknod(p, mode|n.Mode&0o7777, int(n.Rdev)); err != nil {
				rs.warn(fmt.Sprintf("device %s not restored: %v", p, err))
				continue
			}
			rs.setMeta(p, &n)
		case tree.TypeSocket:
			// sockets cannot be restored meaningfully; skipped like tar does
		}
	}
	return nil
}

// file hands regular file n to the workers: alone, or in b if it is small.
func (rs *restorer) file(ctx context.Context, p string, n tree.Node, b *batch, jobs chan<- []fileJob) {
	if n.Links > 1 {
		k := devino{n.DeviceID, n.Inode}
		if _, ok := rs.firsts[k]; ok {
			rs.links = append(rs.links, linkJob{p, k, n})
			return
		}
		rs.firsts[k] = p
	}
	rs.stats.Files++
	rs.stats.Bytes += int64(n.Size)
	if n.Size > batchFileMax {
		rs.send(ctx, []fileJob{{p, n}}, jobs)
		return
	}
	b.jobs = append(b.jobs, fileJob{p, n})
	b.bytes += int64(n.Size)
	if len(b.jobs) >= batchFiles || b.bytes >= batchBytes {
		rs.flush(ctx, b, jobs)
	}
}

// packOrder sorts a batch's files by where their first chunk lies (pack,
// then offset): files are backed up in parallel, so a directory's files are
// stored in the order they finished, and read in name order their chunks
// would come from a few MiB of packs in a shuffled order, a read each.
func (rs *restorer) packOrder(js []fileJob) {
	type keyed struct {
		pack crypto.ID
		off  uint32
		job  fileJob
	}
	ks := make([]keyed, len(js))
	for i, j := range js {
		ks[i].job = j
		if len(j.n.Content) > 0 {
			l, _ := rs.r.Index().Lookup(pack.DataBlob, j.n.Content[0])
			ks[i].pack, ks[i].off = l.Pack, l.Entry.Offset
		}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		if c := bytes.Compare(a.pack[:], b.pack[:]); c != 0 {
			return c
		}
		return cmp.Compare(a.off, b.off)
	})
	for i := range ks {
		js[i] = ks[i].job
	}
}

// flush hands the files of b to the workers.
func (rs *restorer) flush(ctx context.Context, b *batch, jobs chan<- []fileJob) {
	if len(b.jobs) > 0 {
		rs.send(ctx, b.jobs, jobs)
	}
	*b = batch{}
}

func (rs *restorer) send(ctx context.Context, js []fileJob, jobs chan<- []fileJob) {
	select {
	case jobs <- js:
	case <-ctx.Done():
	}
}

func (rs *restorer) warn(s string) {
	rs.mu.Lock()
	rs.stats.Warnings = append(rs.stats.Warnings, s)
	rs.mu.Unlock()
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// writeFile restores one regular file from the next len(n.Content) blobs of
// br: every chunk is loaded and verified (neighbouring chunks of a pack in
// one read, see repo.BlobReader); chunks of zeros become holes (sparse files
// stay sparse).
func (rs *restorer) writeFile(p string, n *tree.Node, br *repo.BlobReader) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore file %s: %w", p, err)
	}
	var off int64
	for _, id := range n.Content {
		if z, ok := rs.zeroIDs.Load(id); ok && z.(bool) {
			l, _ := rs.r.Index().Lookup(pack.DataBlob, id)
			off += int64(l.Entry.RawLength)
			br.Skip()
			continue
		}
		buf, err := br.Next()
		if err != nil {
			f.Close()
			return fmt.Errorf("restore file %s: %w", p, err)
		}
		if len(buf) >= 4096 && isZero(buf) {
			rs.zeroIDs.Store(id, true)
			off += int64(len(buf))
			continue
		}
		if err := writeNonZero(f, buf, off); err != nil {
			f.Close()
			return fmt.Errorf("restore file %s: %w", p, err)
		}
		off += int64(len(buf))
		rs.prog.Bytes.Add(int64(len(buf)))
	}
	if uint64(off) != n.Size && n.Error == "" {
		f.Close()
		return fmt.Errorf("restore file %s: content has %d bytes, recovery point says %d (damaged recovery point; run `coffre check`)", p, off, n.Size)
	}
	if err := f.Truncate(off); err != nil { // creates a trailing hole
		f.Close()
		return fmt.Errorf("restore file %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("restore file %s: %w", p, err)
	}
	rs.setMeta(p, n)
	rs.prog.Files.Add(1)
	return nil
}

// holeBlock is the granularity of holes on restore (a file system block).
const holeBlock = 4096

// writeNonZero writes b at off but skips the all-zero blocks (aligned to the
// file offset): a sparse file's holes are restored as holes even when a
// chunk mixes data and zeros. The caller sets the final length.
func writeNonZero(f *os.File, b []byte, off int64) error {
	for len(b) > 0 {
		n := holeBlock - int(off%holeBlock)
		if n > len(b) {
			n = len(b)
		}
		if isZero(b[:n]) {
			b, off = b[n:], off+int64(n)
			continue
		}
		// Extend the run over the following non-zero blocks.
		end := n
		for end < len(b) {
			m := min(holeBlock, len(b)-end)
			if isZero(b[end : end+m]) {
				break
			}
			end += m
		}
		if _, err := f.WriteAt(b[:end], off); err != nil {
			return err
		}
		b, off = b[end:], off+int64(end)
	}
	return nil
}

// setMeta applies owner, mode and times; failures are warnings.
func (rs *restorer) setMeta(p string, n *tree.Node) {
	if rs.owner {
		if err := os.Lchown(p, int(n.UID), int(n.GID)); err != nil {
			rs.warn(fmt.Sprintf("chown %s: %v", p, err))
		}
	}
	if n.Type == tree.TypeSymlink {
		ts := []unix.Timespec{unix.NsecToTimespec(n.ModTime.UnixNano()), unix.NsecToTimespec(n.ModTime.UnixNano())}
		_ = unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		return
	}
	if err := os.Chmod(p, os.FileMode(n.Mode&0o777)|modeBits(n.Mode)); err != nil {
		rs.warn(fmt.Sprintf("chmod %s: %v", p, err))
	}
	if err := os.Chtimes(p, time.Time{}, n.ModTime); err != nil {
		rs.warn(fmt.Sprintf("set times of %s: %v", p, err))
	}
}

func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&syscall.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}
