package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/location"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source/fs"
	"github.com/coffre/coffre/internal/source/stream"
)

func cmdInit(g *globals) *cobra.Command {
	io := repo.DefaultInitOptions
	var packMiB int
	c := &cobra.Command{
		Use:   "init",
		Short: "Create a new vault",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			kp, err := g.keyProvider(true)
			if err != nil {
				return err
			}
			be, err := location.Open(ctx, g.vault, true)
			if err != nil {
				return err
			}
			defer be.Close()
			io.PackSize = packMiB << 20
			if cmd.Flags().Changed("compression-level") {
				// A level chosen by hand applies to every blob.
				io.ZstdLevelLarge, io.ZstdLevelStream = io.ZstdLevel, io.ZstdLevel
			}
			r, err := repo.Init(ctx, be, kp, io, repo.Options{Logger: g.log})
			if err != nil {
				return err
			}
			if g.jsonOut {
				return g.printJSON(map[string]any{"vault": be.Location(), "id": r.Config().ID})
			}
			fmt.Fprintf(g.stdout, "created vault %s at %s\n", r.Config().ID[:8], be.Location())
			return nil
		},
	}
	c.Flags().StringVar(&io.Compression, "compression", io.Compression, "zstd or none")
	c.Flags().IntVar(&io.ZstdLevel, "compression-level", io.ZstdLevel, "zstd level on zstd's own scale, 1 (fastest) to 19 (smallest), for every blob (default: 3, 4 for blobs of 1 MiB and more, 1 for the chunks of streams and databases)")
	c.Flags().IntVar(&packMiB, "pack-size", io.PackSize>>20, "target size of data packs in MiB")
	return c
}

type backupFlags struct {
	excludes []string
	tags     []string
	stdin    bool
	filename string
	command  bool
	resource string
	noParent bool
}

func parseTags(tags []string) (map[string]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("tag %q: want key=value", t)
		}
		m[k] = v
	}
	return m, nil
}

func cmdBackup(g *globals) *cobra.Command {
	f := &backupFlags{}
	c := &cobra.Command{
		Use:   "backup [PATH | --stdin | --command -- CMD ARGS...]",
		Short: "Back up a directory, a file, standard input or a command's output",
		Long: `Back up a directory or file (incrementally: unchanged files are reused from the
latest recovery point of the same path), standard input (--stdin), or the standard
output of a command (--command -- pg_dump mydb). A backup whose files could not all be
read is stored as PARTIAL and exits with code 3.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			tags, err := parseTags(f.tags)
			if err != nil {
				return withCode(exitUsage, err)
			}
			switch {
			case f.stdin && f.command:
				return withCode(exitUsage, errors.New("--stdin and --command exclude each other"))
			case f.stdin && len(args) > 0:
				return withCode(exitUsage, errors.New("--stdin takes no path"))
			case f.command && len(args) == 0:
				return withCode(exitUsage, errors.New("--command needs the command after --"))
			case !f.stdin && !f.command && len(args) != 1:
				return withCode(exitUsage, errors.New("give exactly one path to back up"))
			}
			var src *fs.Source
			if !f.stdin && !f.command {
				// Check the source before touching the vault.
				if src, err = fs.New(args[0], f.excludes); err != nil {
					return err
				}
			}
			r, lock, err := g.openLocked(ctx, false, "backup", true)
			if err != nil {
				return err
			}
			defer r.Close()
			defer lock.Unlock()
			prog := &archiver.Progress{}
			opts := archiver.Options{Progress: prog, Tags: tags, Resource: f.resource, BeforeCommit: lock.Check,
				OnError: func(p string, err error) { g.log.Warn("file not backed up completely", "path", p, "err", err) }}
			var m *snapshot.Manifest
			if f.stdin || f.command {
				m, err = g.backupStream(ctx, r, opts, f, args)
			} else {
				m, err = g.backupPath(ctx, r, opts, src, f)
			}
			if err != nil {
				return err
			}
			g.log.Debug("recovery point committed", "id", m.ID.Short())
			return g.reportBackup(m)
		},
	}
	fl := c.Flags()
	fl.StringArrayVarP(&f.excludes, "exclude", "e", nil, "exclude entries matching a pattern (base name or relative path; trailing / = directories only); repeatable")
	fl.StringArrayVar(&f.tags, "tag", nil, "key=value tag on the recovery point; repeatable")
	fl.BoolVar(&f.stdin, "stdin", false, "back up standard input as a stream")
	fl.StringVar(&f.filename, "stdin-filename", "", "name of the stream inside the recovery point (default stdin, or the command name)")
	fl.BoolVar(&f.command, "command", false, "back up the standard output of the command given after --; fails if the command fails")
	fl.StringVar(&f.resource, "resource", "", "protected resource id recorded in the recovery point")
	fl.BoolVar(&f.noParent, "full", false, "read every file (do not reuse unchanged files from the previous recovery point)")
	return c
}

func (g *globals) backupPath(ctx context.Context, r *repo.Repository, opts archiver.Options, src *fs.Source, f *backupFlags) (*snapshot.Manifest, error) {
	if !f.noParent {
		parent, err := findParent(ctx, r, src.Path())
		if err != nil {
			return nil, err
		}
		opts.Parent = parent
		g.log.Debug("parent recovery point", "found", parent != nil)
	}
	var total int64
	if opts.Parent != nil {
		total = opts.Parent.Stats.Bytes
	}
	prog := opts.Progress
	p := startProgress(g.stderr, g.isTerminal(), func(el time.Duration) string {
		cur, _ := prog.Current.Load().(string)
		return fmt.Sprintf("%d files  %s  %s  %s", prog.Files.Load(), humanBytes(prog.Bytes.Load()),
			rateETA(prog.Bytes.Load(), total, el), truncate(cur, 40))
	})
	a := archiver.New(r, opts)
	m, err := a.Backup(ctx, src, snapshot.Source{Type: snapshot.SourceFilesystem, Paths: []string{src.Path()}, Resource: opts.Resource})
	p.Stop()
	return m, err
}

// findParent returns the newest recovery point of the same path, if any.
func findParent(ctx context.Context, r *repo.Repository, path string) (*snapshot.Manifest, error) {
	ms, errs, err := snapshot.LoadAll(ctx, r)
	if err != nil {
		return nil, err
	}
	for _, e := range errs {
		r.Logger().Warn("unreadable recovery point ignored", "err", e)
	}
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		if m.Source.Type == snapshot.SourceFilesystem && len(m.Source.Paths) == 1 && m.Source.Paths[0] == path {
			return m, nil
		}
	}
	return nil, nil
}

func (g *globals) backupStream(ctx context.Context, r *repo.Repository, opts archiver.Options, f *backupFlags, args []string) (*snapshot.Manifest, error) {
	var rd io.Reader = os.Stdin
	src := snapshot.Source{Type: snapshot.SourceStream, Resource: opts.Resource}
	name := f.filename
	var finish func() error
	if f.command {
		s, err := stream.StartCommand(ctx, args, g.stderr)
		if err != nil {
			return nil, err
		}
		rd, finish = s, s.Wait
		src.Command = strings.Join(args, " ")
		if name == "" {
			name = filepath.Base(args[0])
		}
	}
	prog := opts.Progress
	p := startProgress(g.stderr, g.isTerminal(), func(el time.Duration) string {
		return fmt.Sprintf("%s  %s", humanBytes(prog.Bytes.Load()), rateETA(prog.Bytes.Load(), 0, el))
	})
	a := archiver.New(r, opts)
	m, err := a.BackupStream(ctx, rd, archiver.StreamNode{Name: name}, src, finish)
	p.Stop()
	if err != nil && f.command {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, hint.With(err, "the command failed, so nothing was stored; see its messages above")
		}
	}
	return m, err
}

func (g *globals) reportBackup(m *snapshot.Manifest) error {
	if g.jsonOut {
		if err := g.printJSON(manifestJSON(m)); err != nil {
			return err
		}
	} else {
		s := m.Stats
		fmt.Fprintf(g.stdout, "recovery point %s %s: %d files, %d dirs, %s; %d files read (%s), %s added (%s stored) in %.2fs\n",
			m.ID.String()[:12], m.Status, s.Files, s.Dirs, humanBytes(s.Bytes), s.FilesChanged, humanBytes(s.BytesRead),
			humanBytes(s.BytesAdded), humanBytes(s.StoredAdded), s.DurationSec)
		for _, e := range m.Errors {
			fmt.Fprintf(g.stderr, "  not backed up: %s\n", e)
		}
	}
	if m.Status == snapshot.StatusPartial {
		return withCode(exitPartial, hint.With(fmt.Errorf("recovery point %s is PARTIAL: %d file(s) could not be read", m.ID.String()[:12], m.Stats.Errors),
			"the files listed above are missing or incomplete in this recovery point; fix their permissions or exclude them"))
	}
	return nil
}

func manifestJSON(m *snapshot.Manifest) map[string]any {
	return map[string]any{
		"id": m.ID.String(), "time": m.Time, "hostname": m.Hostname, "source": m.Source, "tree": m.Tree.String(),
		"status": m.Status, "errors": m.Errors, "tags": m.Tags, "stats": m.Stats, "parent": m.Parent,
	}
}
