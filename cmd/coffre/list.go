package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/maintain"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
	"github.com/coffre/coffre/internal/source/fs"
	"github.com/coffre/coffre/internal/source/stream"
)

func cmdList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"snapshots"},
		Short:   "List recovery points",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.open(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			ms, errs, err := snapshot.LoadAll(ctx, r)
			if err != nil {
				return err
			}
			for _, e := range errs {
				fmt.Fprintf(g.stderr, "warning: %v\n", e)
			}
			if g.jsonOut {
				out := make([]map[string]any, 0, len(ms))
				for _, m := range ms {
					out = append(out, manifestJSON(m))
				}
				return g.printJSON(out)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tSTATUS\tSOURCE\tFILES\tSIZE")
			for _, m := range ms {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", m.ID.String()[:12], m.Time.Local().Format("2006-01-02 15:04:05"), m.Status,
					describeSource(m), m.Stats.Files, humanBytes(m.Stats.Bytes))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%d recovery point(s)\n", len(ms))
			return nil
		},
	}
}

func describeSource(m *snapshot.Manifest) string {
	switch {
	case len(m.Source.Paths) > 0:
		return strings.Join(m.Source.Paths, ",")
	case m.Source.Command != "":
		return "cmd: " + m.Source.Command
	case m.Source.Type == snapshot.SourceStream:
		return "stream: " + m.Source.Filename
	}
	return m.Source.Type
}

func cmdShow(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one recovery point (id, unique prefix, or latest)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.open(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			m, err := snapshot.Find(ctx, r, args[0])
			if err != nil {
				return err
			}
			if g.jsonOut {
				return g.printJSON(manifestJSON(m))
			}
			s := m.Stats
			fmt.Fprintf(g.stdout, "id        %s\ntime      %s\nhost      %s\nsource    %s\nstatus    %s\ntree      %s\n",
				m.ID, m.Time.Format(time.RFC3339), m.Hostname, describeSource(m), m.Status, m.Tree)
			if m.Parent != nil {
				fmt.Fprintf(g.stdout, "parent    %s\n", m.Parent)
			}
			for k, v := range m.Tags {
				fmt.Fprintf(g.stdout, "tag       %s=%s\n", k, v)
			}
			fmt.Fprintf(g.stdout, "files     %d (%d read, %d reused)\ndirs      %d\nsize      %s\nadded     %s (%s stored)\nduration  %.2fs\n",
				s.Files, s.FilesChanged, s.Files-s.FilesChanged, s.Dirs, humanBytes(s.Bytes), humanBytes(s.BytesAdded), humanBytes(s.StoredAdded), s.DurationSec)
			for _, e := range m.Errors {
				fmt.Fprintf(g.stdout, "error     %s\n", e)
			}
			return nil
		},
	}
}

func cmdLs(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ls ID [PATH]",
		Short: "List the files of a recovery point",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.open(ctx, true)
			if err != nil {
				return err
			}
			defer r.Close()
			m, err := snapshot.Find(ctx, r, args[0])
			if err != nil {
				return err
			}
			prefix := ""
			if len(args) == 2 {
				prefix = strings.Trim(args[1], "/")
			}
			var out []map[string]any
			err = tree.Walk(ctx, r, m.Tree, func(p string, n *tree.Node) error {
				if prefix != "" && p != prefix && !strings.HasPrefix(p, prefix+"/") {
					if !strings.HasPrefix(prefix, p+"/") {
						return tree.SkipDir
					}
					return nil
				}
				if g.jsonOut {
					out = append(out, map[string]any{"path": p, "type": n.Type, "size": n.Size, "mode": fmt.Sprintf("%04o", n.Mode), "mtime": n.ModTime})
					return nil
				}
				fmt.Fprintf(g.stdout, "%-7s %04o %12d %s %s\n", n.Type, n.Mode, n.Size, n.ModTime.Local().Format("2006-01-02 15:04"), p)
				return nil
			})
			if err != nil {
				return err
			}
			if g.jsonOut {
				return g.printJSON(out)
			}
			return nil
		},
	}
}

func cmdRestore(g *globals) *cobra.Command {
	var target, sub, output string
	var overwrite, toStdout bool
	c := &cobra.Command{
		Use:   "restore ID --target DIR | ID --stdout | ID --output FILE",
		Short: "Restore a recovery point (or a path in it) into a new directory, or a stream to stdout or a file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			n := 0
			for _, s := range []bool{target != "", toStdout, output != ""} {
				if s {
					n++
				}
			}
			if n != 1 {
				return withCode(exitUsage, fmt.Errorf("give exactly one of --target, --stdout, --output"))
			}
			r, lock, err := g.openLocked(ctx, false, "restore", true)
			if err != nil {
				return err
			}
			defer r.Close()
			defer lock.Unlock()
			m, err := snapshot.Find(ctx, r, args[0])
			if err != nil {
				return err
			}
			if toStdout || output != "" {
				return g.restoreStream(cmd, r, m, sub, output)
			}
			prog := &fs.RestoreProgress{}
			total := m.Stats.Bytes
			p := startProgress(g.stderr, g.isTerminal(), func(el time.Duration) string {
				return fmt.Sprintf("%d files  %s  %s", prog.Files.Load(), humanBytes(prog.Bytes.Load()), rateETA(prog.Bytes.Load(), total, el))
			})
			st, err := fs.Restore(ctx, r, m, fs.RestoreOptions{Target: target, Subpath: sub, Overwrite: overwrite, Progress: prog})
			p.Stop()
			if err != nil {
				return err
			}
			for _, w := range st.Warnings {
				fmt.Fprintf(g.stderr, "warning: %s\n", w)
			}
			if g.jsonOut {
				return g.printJSON(map[string]any{"id": m.ID.String(), "target": target, "files": st.Files, "dirs": st.Dirs, "links": st.Links, "bytes": st.Bytes, "warnings": st.Warnings})
			}
			fmt.Fprintf(g.stdout, "restored %s to %s: %d files, %d dirs, %d hard links, %s (every chunk verified)\n",
				m.ID.String()[:12], target, st.Files, st.Dirs, st.Links, humanBytes(st.Bytes))
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVarP(&target, "target", "t", "", "directory to restore into (must be new or empty)")
	fl.StringVar(&sub, "path", "", "restore only this path of the recovery point")
	fl.BoolVar(&overwrite, "overwrite", false, "allow a non-empty target (existing files are never replaced)")
	fl.BoolVar(&toStdout, "stdout", false, "write a stream recovery point (or the file --path) to standard output")
	fl.StringVarP(&output, "output", "o", "", "write a stream recovery point (or the file --path) to this new file")
	return c
}

func (g *globals) restoreStream(cmd *cobra.Command, r interface {
	stream.BlobLoader
	tree.BlobLoader
}, m *snapshot.Manifest, sub, output string) error {
	ctx := cmd.Context()
	t, err := tree.Load(ctx, r, m.Tree)
	if err != nil {
		return err
	}
	var n *tree.Node
	if sub != "" {
		err = tree.Walk(ctx, r, m.Tree, func(p string, nn *tree.Node) error {
			if p == strings.Trim(sub, "/") {
				c := *nn
				n = &c
			}
			return nil
		})
		if err != nil {
			return err
		}
	} else if len(t.Nodes) == 1 && t.Nodes[0].Type == tree.TypeFile {
		n = &t.Nodes[0]
	}
	if n == nil {
		return withCode(exitUsage, fmt.Errorf("recovery point %s is not a single stream: use --path FILE with --stdout/--output, or --target DIR", m.ID.String()[:12]))
	}
	w := g.stdout
	if output != "" {
		f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("restore to %s: %w", output, err)
		}
		tmp := f.Name()
		_, werr := stream.WriteTo(ctx, r, n, f)
		if werr == nil {
			werr = f.Sync()
		}
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(tmp)
			return werr
		}
		fmt.Fprintf(g.stderr, "restored %s (%s) to %s\n", n.Name, humanBytes(int64(n.Size)), filepath.Clean(output))
		return nil
	}
	_, err = stream.WriteTo(ctx, r, n, w)
	return err
}

func cmdDelete(g *globals) *cobra.Command {
	var prune bool
	c := &cobra.Command{
		Use:   "delete ID...",
		Short: "Delete recovery points (their data is reclaimed by prune)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, lock, err := g.openLocked(ctx, true, "delete", false)
			if err != nil {
				return err
			}
			defer r.Close()
			defer lock.Unlock()
			var ids []crypto.ID
			for _, a := range args {
				m, err := snapshot.Find(ctx, r, a)
				if err != nil {
					return err
				}
				ids = append(ids, m.ID)
			}
			for _, id := range ids {
				if err := snapshot.Delete(ctx, r, id); err != nil {
					return err
				}
				if !g.jsonOut {
					fmt.Fprintf(g.stdout, "deleted recovery point %s\n", id.String()[:12])
				}
			}
			if prune {
				return g.runPrune(ctx, r, lock, pruneFlags{grace: maintain.DefaultGrace})
			}
			if g.jsonOut {
				return g.printJSON(map[string]any{"deleted": ids})
			}
			return nil
		},
	}
	c.Flags().BoolVar(&prune, "prune", false, "reclaim the space right away")
	return c
}

func cmdUnlock(g *globals) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "unlock",
		Short: "Remove stale locks (of processes that are gone)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.open(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			n, err := r.RemoveStaleLocks(ctx, all)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "removed %d lock(s)\n", n)
			return nil
		},
	}
	c.Flags().BoolVar(&all, "remove-all", false, "remove every lock, also live ones (only when you know no operation runs)")
	return c
}

func cmdKey(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "key", Short: "Manage key-encryption keys"}
	c.AddCommand(&cobra.Command{
		Use:   "generate FILE",
		Short: "Write a new random key file (use it with --key-file)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := crypto.GenerateKeyFile(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote key file %s (keep a copy: without it the vault cannot be opened)\n", args[0])
			return nil
		},
	})
	var newKeyFile, newPwFile string
	add := &cobra.Command{
		Use:   "add",
		Short: "Add another key (passphrase from --new-password-file, or --new-key-file) that opens the vault",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.open(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			var kp crypto.KeyProvider
			switch {
			case newKeyFile != "":
				kp = &crypto.KeyFileProvider{Path: newKeyFile}
			case newPwFile != "":
				b, err := os.ReadFile(newPwFile)
				if err != nil {
					return err
				}
				kp = &crypto.Passphrase{Secret: strings.TrimRight(string(b), "\r\n")}
			default:
				return withCode(exitUsage, fmt.Errorf("give --new-key-file or --new-password-file"))
			}
			id, err := r.AddKey(ctx, kp)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "added %s key %s\n", kp.Type(), id[:8])
			return nil
		},
	}
	add.Flags().StringVar(&newKeyFile, "new-key-file", "", "key file to add")
	add.Flags().StringVar(&newPwFile, "new-password-file", "", "file holding the passphrase to add")
	c.AddCommand(add)
	return c
}
