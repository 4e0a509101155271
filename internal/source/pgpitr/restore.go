package pgpitr

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
	"github.com/coffre/coffre/internal/source/stream"
)

// RestoreOptions say where and how a point-in-time restore runs.
type RestoreOptions struct {
	// DataDir is the new data directory: absent or empty. The WAL goes to
	// the side directory DataDir+"-wal" (removed once the server has
	// promoted), other tablespaces under DataDir+"-tablespaces".
	DataDir string
	// Port is the TCP port the restored server listens on (127.0.0.1).
	Port int
	// RunAs is the OS user that owns the files and runs the server
	// (default: the current user; PostgreSQL refuses to run as root).
	RunAs string
	// BinDir holds pg_ctl and pg_controldata (default: found on PATH).
	BinDir string
	// Resource, when set, restricts the restore to points of that resource.
	Resource string
	// Timeout bounds the recovery (default 30 minutes).
	Timeout time.Duration
}

// Restored describes a restored server.
type Restored struct {
	DataDir string
	Port    int
	LogFile string // the server's log (pg_ctl -l)
	Base    *snapshot.Manifest
	// WALPoints is how many WAL points were replayed, up to EndLSN.
	WALPoints        int
	StartLSN, EndLSN LSN
	// Reached is the commit time of the last transaction replayed, read
	// from the server's log (zero when it does not say).
	Reached time.Time
	// TargetReached is false when the WAL held no commit after the target:
	// the server then recovered to the end of that WAL, which covers the
	// target, and the state is the target's all the same.
	TargetReached bool
}

type basePoint struct {
	m    *snapshot.Manifest
	meta BaseMeta
}

type walPoint struct {
	m    *snapshot.Manifest
	meta *WALMeta
}

// ErrWALGap is wrapped by RestoreToTime's error when the archived WAL has a
// hole between the base backup and the target.
var ErrWALGap = errors.New("WAL gap")

// RestoreToTime restores the server's state at target into a new data
// directory and starts it on a new port (see the package documentation).
func RestoreToTime(ctx context.Context, r *repo.Repository, target time.Time, opts RestoreOptions) (*Restored, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Minute
	}
	if opts.Port <= 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("restore to %s: port %d is not a TCP port", fmtTime(target), opts.Port)
	}
	if opts.DataDir == "" || !filepath.IsAbs(opts.DataDir) || strings.ContainsAny(opts.DataDir, `'"\`) {
		return nil, fmt.Errorf("restore to %s: data directory %q: want an absolute path without quotes or backslashes", fmtTime(target), opts.DataDir)
	}
	if fi, err := os.Stat(filepath.Dir(opts.DataDir)); err != nil || !fi.IsDir() {
		return nil, hint.With(fmt.Errorf("restore to %s: the parent of data directory %s does not exist", fmtTime(target), opts.DataDir),
			"create it, accessible to the user that runs PostgreSQL")
	}
	ents, err := os.ReadDir(opts.DataDir)
	dataDirExisted := err == nil
	if len(ents) > 0 {
		return nil, hint.With(fmt.Errorf("restore to %s: data directory %s is not empty", fmtTime(target), opts.DataDir),
			"restore into a new directory")
	}
	uid, gid, err := lookupUser(opts.RunAs)
	if err != nil {
		return nil, err
	}
	pgctl, err := binary(opts.BinDir, "pg_ctl")
	if err != nil {
		return nil, err
	}
	controldata, err := binary(opts.BinDir, "pg_controldata")
	if err != nil {
		return nil, err
	}
	base, chain, err := plan(ctx, r, target, opts.Resource)
	if err != nil {
		return nil, err
	}
	walDir, tsDir := opts.DataDir+"-wal", opts.DataDir+"-tablespaces"
	for _, d := range []string{walDir, tsDir} {
		if _, err := os.Lstat(d); err == nil {
			return nil, hint.With(fmt.Errorf("restore to %s: %s already exists", fmtTime(target), d), "restore into a new directory")
		}
	}
	prepare := func() (LSN, error) {
		if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
			return 0, fmt.Errorf("restore: %w", err)
		}
		if err := extractBase(ctx, r, base, opts.DataDir); err != nil {
			return 0, fmt.Errorf("restore base backup %s: %w", base.m.ID.Short(), err)
		}
		end, err := writeWAL(ctx, r, chain, walDir)
		if err != nil {
			return 0, fmt.Errorf("restore WAL: %w", err)
		}
		if err := configure(opts, walDir, target, true); err != nil {
			return 0, fmt.Errorf("restore: configure: %w", err)
		}
		for _, d := range []string{opts.DataDir, walDir, tsDir} {
			if err := chownTree(d, uid, gid); err != nil {
				return 0, fmt.Errorf("restore: %w", err)
			}
		}
		return end, nil
	}
	end, err := prepare()
	if err != nil {
		// Nothing runs on these yet: leave no half-restored directory.
		for _, d := range []string{walDir, tsDir} {
			_ = os.RemoveAll(d)
		}
		if !dataDirExisted {
			_ = os.RemoveAll(opts.DataDir)
		} else if ents, rerr := os.ReadDir(opts.DataDir); rerr == nil {
			for _, e := range ents { // it was empty: empty it again (it may be a mount point)
				_ = os.RemoveAll(filepath.Join(opts.DataDir, e.Name()))
			}
		}
		return nil, err
	}
	out := &Restored{DataDir: opts.DataDir, Port: opts.Port, LogFile: filepath.Join(opts.DataDir, "coffre-restore.log"),
		Base: base.m, WALPoints: len(chain), StartLSN: base.meta.StartLSN, EndLSN: end, TargetReached: true}
	srv := server{pgctl: pgctl, controldata: controldata, dir: opts.DataDir, log: out.LogFile, uid: uid, gid: gid}
	rctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	err = srv.recover(rctx)
	if errors.Is(err, errTargetNotReached) {
		// Every commit up to the target is in the WAL given and none after
		// it: its end is the state at the target.
		out.TargetReached = false
		if err = configure(opts, walDir, target, false); err == nil {
			if err = chownTree(opts.DataDir, uid, gid); err == nil {
				err = srv.recover(rctx)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	out.Reached = srv.reached()
	_ = os.RemoveAll(walDir)
	return out, nil
}

// plan chooses the base backup and the WAL points that reach target.
func plan(ctx context.Context, r *repo.Repository, target time.Time, resource string) (*basePoint, []walPoint, error) {
	ms, _, err := snapshot.LoadAll(ctx, r)
	if err != nil {
		return nil, nil, fmt.Errorf("list recovery points: %w", err)
	}
	var bases []*basePoint
	var wals []walPoint
	for _, m := range ms {
		if resource != "" && m.Source.Resource != resource {
			continue
		}
		switch m.Source.Type {
		case TypeBase:
			b := &basePoint{m: m}
			if err := readJSON(ctx, r, m, "meta.json", &b.meta); err != nil {
				return nil, nil, fmt.Errorf("base backup %s: %w", m.ID.Short(), err)
			}
			bases = append(bases, b)
		case TypeWAL:
			wm, err := walMetaFromTags(m.Tags)
			if err != nil {
				return nil, nil, fmt.Errorf("WAL point %s: %w", m.ID.Short(), err)
			}
			wals = append(wals, walPoint{m: m, meta: wm})
		}
	}
	if len(bases) == 0 {
		return nil, nil, hint.With(fmt.Errorf("restore to %s: no PostgreSQL base backup in the vault", fmtTime(target)), "run a base backup first")
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i].meta.EndTime.Before(bases[j].meta.EndTime) })
	var base *basePoint
	for _, b := range bases {
		if !b.meta.EndTime.After(target) {
			base = b
		}
	}
	if base == nil {
		return nil, nil, hint.With(fmt.Errorf("restore to %s: the target is before the oldest base backup, which ended at %s",
			fmtTime(target), fmtTime(bases[0].meta.EndTime)), "choose a later time: no backup holds the database as it was then")
	}
	bm := base.meta
	var pts []walPoint
	for _, w := range wals {
		if w.meta.SystemID == bm.SystemID && w.meta.Timeline == bm.Timeline && w.meta.SegmentSize == bm.SegmentSize {
			pts = append(pts, w)
		}
	}
	sort.Slice(pts, func(i, j int) bool {
		if pts[i].meta.StartLSN != pts[j].meta.StartLSN {
			return pts[i].meta.StartLSN < pts[j].meta.StartLSN
		}
		return pts[i].meta.EndLSN > pts[j].meta.EndLSN
	})
	segSize := bm.SegmentSize
	gap := func(from, to LSN) error {
		return hint.With(fmt.Errorf("restore to %s: %w: the vault has no WAL from %s to %s (segments %s to %s) after base backup %s: refusing to restore to another time than asked",
			fmtTime(target), ErrWALGap, from, to, segmentName(bm.Timeline, from, segSize), segmentName(bm.Timeline, to-1, segSize), base.m.ID.Short()),
			"a WAL recovery point is missing (deleted, or the WAL streamer was stopped longer than the server kept the WAL); choose a time before the gap, or after a later base backup")
	}
	var (
		chain   []walPoint
		cur     = bm.StartLSN // WAL is contiguous from the base's start to cur
		started bool
		covered time.Time
	)
	done := func() bool { return cur >= bm.EndLSN && !covered.Before(target) }
	last := -1
	for i, w := range pts {
		if done() {
			break
		}
		m := w.meta
		if m.EndLSN < bm.StartLSN || (m.EndLSN == bm.StartLSN && m.StartLSN != m.EndLSN) {
			continue // before the base backup
		}
		if m.StartLSN > cur {
			return nil, nil, gap(cur, m.StartLSN)
		}
		started = true
		if m.EndLSN > cur {
			chain = append(chain, w)
			cur = m.EndLSN
		}
		if m.CoveredUntil.After(covered) {
			covered = m.CoveredUntil
		}
		last = i
	}
	if !done() {
		switch {
		case !started:
			return nil, nil, hint.With(fmt.Errorf("restore to %s: %w: no WAL archived from %s (the start of base backup %s) on",
				fmtTime(target), ErrWALGap, bm.StartLSN, base.m.ID.Short()), "run the WAL streamer (continuous backup) for this server")
		case cur < bm.EndLSN:
			return nil, nil, hint.With(fmt.Errorf("restore to %s: %w: the archived WAL stops at %s, before the end of base backup %s at %s",
				fmtTime(target), ErrWALGap, cur, base.m.ID.Short(), bm.EndLSN), "the WAL streamer has not archived this far yet, or a WAL point is missing")
		default:
			return nil, nil, hint.With(fmt.Errorf("restore to %s: the target is after the newest archived WAL, which covers until %s",
				fmtTime(target), fmtTime(covered)), "choose an earlier time, or wait for the WAL streamer to archive past it")
		}
	}
	// Commits are timestamped before they are flushed and sent: take the
	// WAL that follows, as far as it covers coverSlack past the target, when
	// the vault has it (more WAL is harmless: recovery stops at the target).
	for _, w := range pts[last+1:] {
		m := w.meta
		if !covered.Before(target.Add(coverSlack)) || m.StartLSN > cur {
			break
		}
		if m.EndLSN > cur {
			chain = append(chain, w)
			cur = m.EndLSN
		}
		if m.CoveredUntil.After(covered) {
			covered = m.CoveredUntil
		}
	}
	return base, chain, nil
}

// coverSlack is how much WAL past the target a restore takes when it can.
const coverSlack = 10 * time.Second

func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.999999Z07:00") }

func readJSON(ctx context.Context, r *repo.Repository, m *snapshot.Manifest, p string, v any) error {
	n, err := stream.Lookup(ctx, r, m.Tree, p)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(stream.NewReader(ctx, r, n))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// extractBase writes the base backup's archives into dir (and the other
// tablespaces beside it).
func extractBase(ctx context.Context, r *repo.Repository, b *basePoint, dir string) error {
	n, err := stream.Lookup(ctx, r, b.m.Tree, "base/main.tar")
	if err != nil {
		return err
	}
	if err := untar(stream.NewReader(ctx, r, n), dir, true); err != nil {
		return fmt.Errorf("base/main.tar: %w", err)
	}
	var tsmap strings.Builder
	for _, ts := range b.meta.Tablespaces {
		n, err := stream.Lookup(ctx, r, b.m.Tree, ts.File)
		if err != nil {
			return err
		}
		to := filepath.Join(dir+"-tablespaces", strconv.Itoa(int(ts.OID)))
		if err := os.MkdirAll(to, 0o700); err != nil {
			return err
		}
		if err := untar(stream.NewReader(ctx, r, n), to, false); err != nil {
			return fmt.Errorf("%s: %w", ts.File, err)
		}
		fmt.Fprintf(&tsmap, "%d %s\n", ts.OID, to)
	}
	if len(b.meta.Tablespaces) > 0 {
		// Point the tablespaces at their new places, never at the source's.
		if err := os.WriteFile(filepath.Join(dir, "tablespace_map"), []byte(tsmap.String()), 0o600); err != nil {
			return err
		}
	}
	if n, err := stream.Lookup(ctx, r, b.m.Tree, "backup_manifest"); err == nil {
		f, err := os.OpenFile(filepath.Join(dir, "backup_manifest"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, err = stream.WriteTo(ctx, r, n, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return os.MkdirAll(filepath.Join(dir, "pg_wal", "archive_status"), 0o700)
}

func untar(rd io.Reader, dir string, main bool) error {
	tr := tar.NewReader(rd)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(h.Name)
		if name == "." {
			continue
		}
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("unsafe path %q in archive", h.Name)
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if main && strings.HasPrefix(name, "pg_tblspc/") {
				continue // recovery recreates them from tablespace_map
			}
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		}
	}
}

var segPieceRE = regexp.MustCompile(`^([0-9A-F]{24})_([0-9A-F]{8})$`)

// writeWAL writes the chain's WAL as whole segment files into dir and
// returns the end of the WAL written.
func writeWAL(ctx context.Context, r *repo.Repository, chain []walPoint, dir string) (LSN, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	segs := map[string]int64{}
	var end LSN
	for _, w := range chain {
		end = max(end, w.meta.EndLSN)
		if w.meta.StartLSN == w.meta.EndLSN {
			continue
		}
		dn, err := stream.Lookup(ctx, r, w.m.Tree, "wal")
		if err != nil {
			return 0, fmt.Errorf("WAL point %s: %w", w.m.ID.Short(), err)
		}
		if dn.Subtree == nil {
			return 0, fmt.Errorf("WAL point %s: wal is not a directory", w.m.ID.Short())
		}
		t, err := tree.Load(ctx, r, *dn.Subtree)
		if err != nil {
			return 0, fmt.Errorf("WAL point %s: %w", w.m.ID.Short(), err)
		}
		for i := range t.Nodes {
			n := &t.Nodes[i]
			mt := segPieceRE.FindStringSubmatch(n.Name)
			if mt == nil {
				return 0, fmt.Errorf("WAL point %s: unexpected file wal/%s", w.m.ID.Short(), n.Name)
			}
			off, _ := strconv.ParseInt(mt[2], 16, 64)
			if off+int64(n.Size) > w.meta.SegmentSize {
				return 0, fmt.Errorf("WAL point %s: wal/%s goes past the end of its segment", w.m.ID.Short(), n.Name)
			}
			f, err := os.OpenFile(filepath.Join(dir, mt[1]), os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				return 0, err
			}
			_, err = stream.WriteTo(ctx, r, n, io.NewOffsetWriter(f, off))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return 0, fmt.Errorf("WAL point %s: %w", w.m.ID.Short(), err)
			}
			segs[mt[1]] = w.meta.SegmentSize
		}
	}
	for name, size := range segs {
		// The last segment is partial: zeros after the end read as the end
		// of WAL.
		if err := os.Truncate(filepath.Join(dir, name), size); err != nil {
			return 0, err
		}
	}
	return end, nil
}

const confMarker = "# coffre point-in-time restore"

// configure writes recovery.signal and coffre's settings at the end of
// postgresql.auto.conf (replacing those of an earlier call).
func configure(opts RestoreOptions, walDir string, target time.Time, withTarget bool) error {
	dir := opts.DataDir
	if _, err := os.Stat(filepath.Join(dir, "postgresql.conf")); errors.Is(err, os.ErrNotExist) {
		// Configuration kept outside the data directory (Debian's layout).
		if err := os.WriteFile(filepath.Join(dir, "postgresql.conf"), []byte("# written by coffre restore\n"), 0o600); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pg_hba.conf")); errors.Is(err, os.ErrNotExist) {
		hba := "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
		if err := os.WriteFile(filepath.Join(dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pg_ident.conf")); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(filepath.Join(dir, "pg_ident.conf"), nil, 0o600); err != nil {
			return err
		}
	}
	auto := filepath.Join(dir, "postgresql.auto.conf")
	old, err := os.ReadFile(auto)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if i := bytes.Index(old, []byte(confMarker)); i >= 0 {
		old = old[:i]
	}
	var b strings.Builder
	b.Write(old)
	if len(old) > 0 && !bytes.HasSuffix(old, []byte("\n")) {
		b.WriteString("\n")
	}
	b.WriteString(confMarker + "\n")
	set := func(k, v string) { fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(v, "'", "''")) }
	set("restore_command", `cp "`+walDir+`/%f" "%p"`)
	if withTarget {
		set("recovery_target_time", target.UTC().Format("2006-01-02 15:04:05.999999")+"+00")
	}
	set("recovery_target_action", "promote")
	set("recovery_target_timeline", "current")
	set("port", strconv.Itoa(opts.Port))
	set("listen_addresses", "127.0.0.1")
	set("unix_socket_directories", "")
	set("archive_mode", "off")
	set("primary_conninfo", "")
	set("primary_slot_name", "")
	set("logging_collector", "off")
	if err := os.WriteFile(auto, []byte(b.String()), 0o600); err != nil {
		return err
	}
	for _, f := range []string{"standby.signal", "postmaster.pid", "postmaster.opts"} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	return os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600)
}

func lookupUser(name string) (uid, gid int, err error) {
	if name == "" {
		if os.Getuid() == 0 {
			return 0, 0, hint.With(fmt.Errorf("restore: PostgreSQL refuses to run as root"), "set the OS user that runs PostgreSQL (usually postgres)")
		}
		return os.Getuid(), os.Getgid(), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, hint.With(fmt.Errorf("restore: OS user %q: %w", name, err), "set the user that runs PostgreSQL (usually postgres)")
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	if uid == 0 {
		return 0, 0, hint.With(fmt.Errorf("restore: PostgreSQL refuses to run as root"), "set the OS user that runs PostgreSQL (usually postgres)")
	}
	if uid != os.Getuid() && os.Geteuid() != 0 {
		return 0, 0, fmt.Errorf("restore: running the server as %s needs root", name)
	}
	return uid, gid, nil
}

func binary(dir, name string) (string, error) {
	if dir == "" {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", hint.With(fmt.Errorf("restore: %s not found on PATH", name), "set the directory of the PostgreSQL server programs (e.g. /usr/lib/postgresql/15/bin)")
		}
		return p, nil
	}
	p := filepath.Join(dir, name)
	if fi, err := os.Stat(p); err != nil || fi.IsDir() {
		return "", hint.With(fmt.Errorf("restore: %s not found in %s", name, dir), "set the directory of the PostgreSQL server programs (e.g. /usr/lib/postgresql/15/bin)")
	}
	return p, nil
}

func chownTree(dir string, uid, gid int) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			if err := os.Chmod(p, 0o700); err != nil {
				return err
			}
		}
		if uid == os.Getuid() && gid == os.Getgid() {
			return nil
		}
		return os.Lchown(p, uid, gid)
	})
}

// server runs pg_ctl and pg_controldata on a restored data directory.
type server struct {
	pgctl, controldata, dir, log string
	uid, gid                     int
}

var errTargetNotReached = errors.New("recovery ended before the target")

func (s server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "LC_ALL=C")
	cmd.Dir = "/"
	if s.uid != os.Getuid() {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}}
	}
	return cmd
}

// recover starts the server and waits until it has promoted.
func (s server) recover(ctx context.Context) error {
	logOffset := int64(0)
	if fi, err := os.Stat(s.log); err == nil {
		logOffset = fi.Size()
	}
	out, err := s.command(ctx, s.pgctl, "-D", s.dir, "-l", s.log, "-w", "-t", "3600", "start").CombinedOutput()
	if err != nil {
		return s.failed(logOffset, fmt.Errorf("pg_ctl start: %w: %s", err, bytes.TrimSpace(out)))
	}
	for {
		out, err := s.command(ctx, s.controldata, s.dir).Output()
		if err == nil && inProduction.Match(out) {
			return nil
		}
		if st := s.command(ctx, s.pgctl, "-D", s.dir, "status"); st.Run() != nil {
			return s.failed(logOffset, errors.New("the server stopped during recovery"))
		}
		select {
		case <-ctx.Done():
			_ = s.command(context.Background(), s.pgctl, "-D", s.dir, "-m", "fast", "stop").Run()
			return fmt.Errorf("restore: waiting for recovery to finish: %w (log: %s)", ctx.Err(), s.log)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// failed explains a failed start from the log's new lines.
func (s server) failed(from int64, err error) error {
	b, _ := os.ReadFile(s.log)
	if int64(len(b)) >= from {
		b = b[from:]
	}
	if bytes.Contains(b, []byte("recovery ended before configured recovery target was reached")) {
		return errTargetNotReached
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return fmt.Errorf("restore: %w; server log %s ends with:\n%s", err, s.log, strings.Join(lines, "\n"))
}

var inProduction = regexp.MustCompile(`(?m)^Database cluster state:\s+in production$`)

var lastTxRE = regexp.MustCompile(`last completed transaction was at log time (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?[+-]\d\d(?::\d\d)?)`)

// reached reads the time of the last transaction replayed from the log.
func (s server) reached() time.Time {
	f, err := os.Open(s.log)
	if err != nil {
		return time.Time{}
	}
	defer f.Close()
	var t time.Time
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := lastTxRE.FindStringSubmatch(sc.Text()); m != nil {
			for _, layout := range []string{"2006-01-02 15:04:05.999999-07", "2006-01-02 15:04:05.999999-07:00"} {
				if v, err := time.Parse(layout, m[1]); err == nil {
					t = v
					break
				}
			}
		}
	}
	return t
}
