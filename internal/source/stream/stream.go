// Package stream owns the stream source: any byte stream (standard input or
// a command's standard output) backed up as one file of a recovery point, and
// written back to a writer on restore.
package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/pack"
	"github.com/coffre/coffre/internal/repo/tree"
)

// Command is a running command whose standard output is the stream.
type Command struct {
	io.Reader
	cmd  *exec.Cmd
	args []string
}

// StartCommand starts args[0] with args[1:]; its stderr goes to errw.
func StartCommand(ctx context.Context, args []string, errw io.Writer) (*Command, error) {
	if len(args) == 0 {
		return nil, errors.New("no command given")
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stderr = errw
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, hint.With(fmt.Errorf("start %s: %w", args[0], err), "check that the command exists and is executable")
	}
	return &Command{Reader: out, cmd: cmd, args: args}, nil
}

// Wait waits for the command and returns an error if it failed: a backup of
// a failed command's output must not be committed.
func (c *Command) Wait() error {
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("command %s failed: %w", c.args[0], err)
	}
	return nil
}

// BlobLoader reads verified blobs (implemented by *repo.Repository).
type BlobLoader interface {
	LoadBlob(ctx context.Context, t pack.BlobType, id crypto.ID, buf []byte) ([]byte, error)
}

// WriteTo writes the content of file node n to w, verifying every chunk, and
// returns the number of bytes written.
func WriteTo(ctx context.Context, r BlobLoader, n *tree.Node, w io.Writer) (int64, error) {
	if n.Type != tree.TypeFile {
		return 0, fmt.Errorf("%s is a %s, not a file", n.Name, n.Type)
	}
	var (
		buf   []byte
		total int64
		err   error
	)
	for i, id := range n.Content {
		if buf, err = r.LoadBlob(ctx, pack.DataBlob, id, buf); err != nil {
			return total, fmt.Errorf("read %s chunk %d: %w", n.Name, i, err)
		}
		m, err := w.Write(buf)
		total += int64(m)
		if err != nil {
			return total, fmt.Errorf("write %s: %w", n.Name, err)
		}
	}
	if uint64(total) != n.Size {
		return total, fmt.Errorf("%s: wrote %d bytes, recovery point says %d (damaged recovery point; run `coffre check`)", n.Name, total, n.Size)
	}
	return total, nil
}
