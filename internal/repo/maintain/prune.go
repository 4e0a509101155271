package maintain

import (
	"context"
	"fmt"
	"time"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/index"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
)

// PruneOptions tune a prune.
type PruneOptions struct {
	DryRun bool
	// RepackThreshold: a pack whose unused bytes exceed this fraction of
	// its size is repacked (its used blobs copied to new packs). Default 0.2.
	RepackThreshold float64
	// Grace: packs not in any index are deleted only when older than this
	// (they may belong to a backup that has not written its index yet).
	// Zero means DefaultGrace; negative means no grace at all.
	Grace time.Duration
	// BeforeDelete, when set, is called before the first deletion; an error
	// stops the prune with nothing deleted (the CLI passes the lock's Check).
	BeforeDelete func(ctx context.Context) error
}

// DefaultGrace is the default grace period for unindexed packs.
const DefaultGrace = time.Hour

// PruneStats describes what prune did (or would do, in a dry run).
type PruneStats struct {
	Snapshots        int   `json:"recovery_points"`
	PacksTotal       int   `json:"packs_total"`
	PacksDeleted     int   `json:"packs_deleted"`
	PacksRepacked    int   `json:"packs_repacked"`
	PacksUnindexed   int   `json:"packs_unindexed_deleted"`
	PacksKeptRecent  int   `json:"packs_unindexed_kept"` // too young to delete
	BlobsRemoved     int   `json:"blobs_removed"`
	BlobsRepacked    int   `json:"blobs_repacked"`
	BytesFreed       int64 `json:"bytes_freed"`
	BytesRepacked    int64 `json:"bytes_repacked_written"`
	IndexFilesBefore int   `json:"index_files_before"`
	TempFilesRemoved int   `json:"temp_files_removed"`
	DryRun           bool  `json:"dry_run"`
}

// Prune removes data no recovery point references. The caller must hold an
// exclusive lock, which guarantees no backup runs concurrently (a running
// backup holds a shared lock). The ordering makes every crash point safe:
//
//  1. mark: load every recovery point and walk its trees; any unreadable
//     recovery point or tree, or a referenced blob missing from the index,
//     aborts the prune (it cannot know what is in use);
//  2. repack: copy the used blobs of sparse packs into new packs; flush them
//     and their index file (durable before anything is deleted);
//  3. write one new index file listing every pack kept, superseding all
//     older index files;
//  4. delete the older index files;
//  5. delete the packs no longer indexed: unused, repacked, and unindexed
//     packs older than the grace period;
//  6. remove temporary files (a crash's leftovers) older than the grace period.
//
// A crash before 3 leaves extra packs (removed by the next prune); between 3
// and 4, duplicate index entries (harmless); during 5, unindexed packs
// (removed by the next prune). No step deletes data an index still lists.
func Prune(ctx context.Context, r *repo.Repository, o PruneOptions) (*PruneStats, error) {
	if o.RepackThreshold <= 0 {
		o.RepackThreshold = 0.2
	}
	if o.Grace == 0 {
		o.Grace = DefaultGrace
	}
	st := &PruneStats{DryRun: o.DryRun}
	if err := r.LoadIndex(ctx); err != nil {
		return nil, hint.With(fmt.Errorf("prune: %w", err), "run `coffre check`; prune refuses to run on a damaged index")
	}
	// Exactly the index files loaded: those are what the new index replaces.
	oldIndex := r.Index().Files()
	st.IndexFilesBefore = len(oldIndex)
	// 1. Mark.
	used, n, err := markUsed(ctx, r)
	if err != nil {
		return nil, err
	}
	st.Snapshots = n

	// Classify packs.
	packs := r.Index().Packs()
	st.PacksTotal = len(packs)
	var keep, remove []index.Pack
	var repack []index.Pack
	for _, p := range packs {
		var usedBytes, total int64
		for _, e := range p.Blobs {
			total += int64(e.Length)
			if used[blobKey{e.ID, p.Type}] {
				usedBytes += int64(e.Length)
			}
		}
		switch {
		case usedBytes == 0:
			remove = append(remove, p)
			st.BlobsRemoved += len(p.Blobs)
			st.BytesFreed += int64(p.Size)
		case float64(total-usedBytes) > o.RepackThreshold*float64(total):
			repack = append(repack, p)
		default:
			keep = append(keep, p)
		}
	}
	// Unindexed packs.
	var orphans []blob.Handle
	now := r.Clock().Now()
	for _, k := range []blob.Kind{blob.KindData, blob.KindTree} {
		err := r.Backend().List(ctx, k, func(fi blob.FileInfo) error {
			id, err := crypto.ParseID(fi.Name)
			if err != nil || r.Index().HasPack(id) {
				return nil
			}
			if o.Grace > 0 && now.Sub(fi.ModTime) < o.Grace {
				st.PacksKeptRecent++
				return nil
			}
			orphans = append(orphans, blob.Handle{Kind: k, Name: fi.Name})
			st.BytesFreed += fi.Size
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("prune: list packs: %w", err)
		}
	}
	st.PacksUnindexed = len(orphans)
	st.PacksDeleted = len(remove)
	st.PacksRepacked = len(repack)
	if o.DryRun {
		for _, p := range repack {
			for _, e := range p.Blobs {
				if used[blobKey{e.ID, p.Type}] {
					st.BlobsRepacked++
				} else {
					st.BlobsRemoved++
				}
			}
			st.BytesFreed += int64(p.Size)
		}
		return st, nil
	}

	// 2. Repack.
	var newPacks []index.Pack
	if len(repack) > 0 {
		var err error
		newPacks, err = doRepack(ctx, r, repack, used, st)
		if err != nil {
			return nil, err
		}
	}
	// 3. New index: every kept pack plus the new ones. It supersedes the
	// index files read at the start and those the repack wrote, and only
	// those: an index file written since by someone else is left alone.
	superseded := append(oldIndex, r.IndexFilesWritten()...)
	f := &index.File{Supersedes: superseded, Packs: append(keep, newPacks...)}
	if o.BeforeDelete != nil {
		if err := o.BeforeDelete(ctx); err != nil {
			return nil, fmt.Errorf("prune: stopping before deleting anything: %w", err)
		}
	}
	if _, err := r.SaveIndexFile(ctx, f); err != nil {
		return nil, fmt.Errorf("prune: write new index: %w", err)
	}
	// 4. The superseded index files.
	for _, id := range superseded {
		if err := r.Remove(ctx, blob.KindIndex, id); err != nil && !blob.IsNotExist(err) {
			return nil, fmt.Errorf("prune: remove old index %s: %w", id.Short(), err)
		}
	}
	// 5. Packs.
	del := orphans
	for _, p := range append(remove, repack...) {
		del = append(del, blob.Handle{Kind: kindOf(p.Type), Name: p.ID.String()})
	}
	for _, h := range del {
		if err := r.Backend().Remove(ctx, h); err != nil && !blob.IsNotExist(err) {
			return nil, fmt.Errorf("prune: remove %s: %w", h, err)
		}
	}
	// 6. Temporary files a crash left behind, with the same grace.
	if tc, ok := r.Backend().(blob.TempCleaner); ok {
		cutoff := now
		if o.Grace > 0 {
			cutoff = now.Add(-o.Grace)
		}
		n, err := tc.RemoveTemp(ctx, cutoff)
		if err != nil {
			return nil, fmt.Errorf("prune: remove temporary files: %w", err)
		}
		st.TempFilesRemoved = n
	}
	return st, nil
}

type blobKey struct {
	id crypto.ID
	t  pack.BlobType
}

// markUsed returns every blob referenced by a recovery point.
func markUsed(ctx context.Context, r *repo.Repository) (map[blobKey]bool, int, error) {
	ids, err := r.List(ctx, blob.KindSnapshot)
	if err != nil {
		return nil, 0, err
	}
	used := map[blobKey]bool{}
	for _, id := range ids {
		m, err := snapshot.Load(ctx, r, id)
		if err != nil {
			return nil, 0, hint.With(fmt.Errorf("prune: %w", err), "prune cannot know what that recovery point uses; run `coffre check`, then delete the damaged recovery point")
		}
		if err := markTree(ctx, r, m.Tree, used); err != nil {
			return nil, 0, hint.With(fmt.Errorf("prune: recovery point %s: %w", id.Short(), err), "run `coffre check`; prune refuses to run while a recovery point is unreadable")
		}
	}
	return used, len(ids), nil
}

func markTree(ctx context.Context, r *repo.Repository, id crypto.ID, used map[blobKey]bool) error {
	k := blobKey{id, pack.TreeBlob}
	if used[k] {
		return nil
	}
	t, err := tree.Load(ctx, r, id)
	if err != nil {
		return err
	}
	used[k] = true
	for _, n := range t.Nodes {
		for _, c := range n.Content {
			if !r.Index().Has(pack.DataBlob, c) {
				return fmt.Errorf("file %s references data blob %s, which is not in the index", n.Name, c.Short())
			}
			used[blobKey{c, pack.DataBlob}] = true
		}
		if n.Subtree != nil {
			if err := markTree(ctx, r, *n.Subtree, used); err != nil {
				return err
			}
		}
	}
	return nil
}

// doRepack copies the used blobs of the given packs into new packs.
func doRepack(ctx context.Context, r *repo.Repository, packs []index.Pack, used map[blobKey]bool, st *PruneStats) ([]index.Pack, error) {
	since := r.PacksWrittenCount()
	for _, p := range packs {
		for _, e := range p.Blobs {
			if !used[blobKey{e.ID, p.Type}] {
				st.BlobsRemoved++
				continue
			}
			data, err := r.LoadBlob(ctx, p.Type, e.ID, nil)
			if err != nil {
				return nil, fmt.Errorf("prune: repack: %w", err)
			}
			if err := r.RepackBlob(ctx, p.Type, e.ID, data); err != nil {
				return nil, fmt.Errorf("prune: repack: %w", err)
			}
			st.BlobsRepacked++
		}
		st.BytesFreed += int64(p.Size)
	}
	newPacks, err := r.FlushRepacked(ctx, since)
	if err != nil {
		return nil, fmt.Errorf("prune: repack: %w", err)
	}
	for _, p := range newPacks {
		st.BytesRepacked += int64(p.Size)
		st.BytesFreed -= int64(p.Size)
	}
	return newPacks, nil
}
