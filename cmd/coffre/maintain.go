package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/maintain"
)

func cmdCheck(g *globals) *cobra.Command {
	var readData bool
	c := &cobra.Command{
		Use:   "check",
		Short: "Check the vault's structure, and with --read-data every byte of data",
		Long: `Check the vault: index files, packs, recovery points and trees. With --read-data,
read every pack and verify every blob (decryption, content hash). Damage is reported
with the recovery points and files it affects; the exit code is then 4.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, lock, err := g.openLocked(ctx, false, "check", false)
			if err != nil {
				return err
			}
			defer r.Close()
			defer lock.Unlock()
			var read atomic.Int64
			p := startProgress(g.stderr, g.isTerminal(), func(el time.Duration) string {
				return fmt.Sprintf("read %s  %s", humanBytes(read.Load()), rateETA(read.Load(), 0, el))
			})
			res, err := maintain.Check(ctx, r, maintain.CheckOptions{ReadData: readData, Progress: &read})
			p.Stop()
			if err != nil {
				return err
			}
			if g.jsonOut {
				if err := g.printJSON(res); err != nil {
					return err
				}
			} else {
				for _, n := range res.Notices {
					fmt.Fprintf(g.stdout, "note: %s: %s\n", n.Object, n.Msg)
				}
				for _, pr := range res.Problems {
					fmt.Fprintf(g.stdout, "DAMAGE: %s: %s\n", pr.Object, pr.Err)
					for _, a := range pr.Affects {
						fmt.Fprintf(g.stdout, "  affects %s\n", a)
					}
				}
				what := "structure"
				if readData {
					what = fmt.Sprintf("structure and all data (%s read)", humanBytes(res.BytesRead))
				}
				fmt.Fprintf(g.stdout, "checked %s: %d packs, %d recovery points, %d trees, %d data blobs\n",
					what, res.Packs, res.Snapshots, res.Trees, res.DataBlobs)
			}
			if !res.OK() {
				return withCode(exitDamage, hint.With(fmt.Errorf("check found %d problem(s) affecting %d recovery point(s)", len(res.Problems), len(res.AffectedPoints)),
					"restore the damaged files from another copy of the vault, or delete the affected recovery points and prune"))
			}
			if !g.jsonOut {
				fmt.Fprintln(g.stdout, "no problems found")
			}
			return nil
		},
	}
	c.Flags().BoolVar(&readData, "read-data", false, "read and verify all data")
	return c
}

type pruneFlags struct {
	dryRun bool
	grace  time.Duration
}

func cmdPrune(g *globals) *cobra.Command {
	f := pruneFlags{}
	c := &cobra.Command{
		Use:   "prune",
		Short: "Reclaim the space of deleted recovery points (garbage collection and repacking)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, lock, err := g.openLocked(ctx, true, "prune", false)
			if err != nil {
				return err
			}
			defer r.Close()
			defer lock.Unlock()
			return g.runPrune(ctx, r, lock, f)
		},
	}
	c.Flags().BoolVarP(&f.dryRun, "dry-run", "n", false, "only show what would be removed")
	c.Flags().DurationVar(&f.grace, "grace", maintain.DefaultGrace, "keep packs that are in no index when younger than this (a backup may still be writing them)")
	return c
}

// runPrune prunes under the exclusive lock the caller holds.
func (g *globals) runPrune(ctx context.Context, r *repo.Repository, lock *repo.Lock, f pruneFlags) error {
	grace := f.grace
	if grace == 0 {
		grace = -1 // --grace 0: really none
	}
	st, err := maintain.Prune(ctx, r, maintain.PruneOptions{DryRun: f.dryRun, Grace: grace, BeforeDelete: lock.Check})
	if err != nil {
		return err
	}
	if g.jsonOut {
		return g.printJSON(st)
	}
	verb := "removed"
	if st.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(g.stdout, "%d recovery points in use; %s %d unused packs and %d unindexed packs, repacked %d packs (%d blobs kept, %d removed); %s freed\n",
		st.Snapshots, verb, st.PacksDeleted, st.PacksUnindexed, st.PacksRepacked, st.BlobsRepacked, st.BlobsRemoved, humanBytes(st.BytesFreed))
	if st.PacksKeptRecent > 0 {
		fmt.Fprintf(g.stdout, "kept %d unindexed packs younger than %s (a backup may still be writing them)\n", st.PacksKeptRecent, f.grace)
	}
	return nil
}
