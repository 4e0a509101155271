package archiver

import (
	"context"
	"fmt"
	"io"
	"sync"

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
		a.prog.Current.Store(sn.Name)
		chunk, err := c.Next(nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = fmt.Errorf("read stream: %w", err)
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
		case a.saveCh <- saveJob{data: buf, out: id, done: done}:
		case <-wctx.Done():
			wg.Done()
			rerr = wctx.Err()
		}
		if rerr != nil {
			break
		}
	}
	wg.Wait()
	a.stop()
	if serr != nil || rerr != nil {
		a.r.Abort()
	}
	if serr != nil {
		return nil, fmt.Errorf("back up %s: %w", describe(src), serr)
	}
	if rerr != nil {
		return nil, fmt.Errorf("back up %s: %w", describe(src), rerr)
	}
	if finish != nil {
		if err := finish(); err != nil {
			a.r.Abort()
			return nil, fmt.Errorf("back up %s: %w", describe(src), err)
		}
	}
	n.Content = make([]crypto.ID, len(ids))
	for i, id := range ids {
		n.Content[i] = *id
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
