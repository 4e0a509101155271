// Package stream owns the stream source: any byte stream (standard input or
// a command's standard output) backed up as one file of a recovery point, and
// written back to a writer on restore.
package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
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

// BlobLoader reads a sequence of verified blobs with few storage reads
// (implemented by *repo.Repository): a stream's chunks are small, and one
// storage read each would cost more than the rest of their restore.
type BlobLoader interface {
	NewBlobReader(ctx context.Context, t pack.BlobType, ids []crypto.ID) *repo.BlobReader
}

// WriteTo writes the content of file node n to w, verifying every chunk, and
// returns the number of bytes written.
func WriteTo(ctx context.Context, r BlobLoader, n *tree.Node, w io.Writer) (int64, error) {
	if n.Type != tree.TypeFile {
		return 0, fmt.Errorf("%s is a %s, not a file", n.Name, n.Type)
	}
	next := r.NewBlobReader(ctx, pack.DataBlob, n.Content).Next
	var total int64
	for i := 0; ; i++ {
		b, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return total, fmt.Errorf("read %s chunk %d: %w", n.Name, i, err)
		}
		m, err := w.Write(b)
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

// Lookup finds the node at the slash-separated path below tree root.
func Lookup(ctx context.Context, r tree.BlobLoader, root crypto.ID, p string) (*tree.Node, error) {
	id := root
	parts := strings.Split(strings.Trim(p, "/"), "/")
	for i, name := range parts {
		t, err := tree.Load(ctx, r, id)
		if err != nil {
			return nil, err
		}
		n := t.Find(name)
		if n == nil {
			return nil, fmt.Errorf("%s: %w", strings.Join(parts[:i+1], "/"), os.ErrNotExist)
		}
		if i == len(parts)-1 {
			return n, nil
		}
		if n.Type != tree.TypeDir || n.Subtree == nil {
			return nil, fmt.Errorf("%s is a %s, not a directory", strings.Join(parts[:i+1], "/"), n.Type)
		}
		id = *n.Subtree
	}
	return nil, fmt.Errorf("%q: %w", p, os.ErrNotExist)
}

// NewReader returns a reader of file node n's content, loading and verifying
// one chunk at a time; it fails at the end if the size does not match.
func NewReader(ctx context.Context, r BlobLoader, n *tree.Node) io.Reader {
	return &nodeReader{ctx: ctx, r: r, n: n}
}

type nodeReader struct {
	ctx  context.Context
	r    BlobLoader
	n    *tree.Node
	next func() ([]byte, error)
	i    int
	rest []byte
	read uint64
}

func (nr *nodeReader) Read(p []byte) (int, error) {
	for len(nr.rest) == 0 {
		if nr.n.Type != tree.TypeFile {
			return 0, fmt.Errorf("%s is a %s, not a file", nr.n.Name, nr.n.Type)
		}
		if nr.next == nil {
			nr.next = nr.r.NewBlobReader(nr.ctx, pack.DataBlob, nr.n.Content).Next
		}
		b, err := nr.next()
		if err == io.EOF {
			if nr.read != nr.n.Size {
				return 0, fmt.Errorf("%s: read %d bytes, recovery point says %d (damaged recovery point; run `coffre check`)", nr.n.Name, nr.read, nr.n.Size)
			}
			return 0, io.EOF
		}
		if err != nil {
			return 0, fmt.Errorf("read %s chunk %d: %w", nr.n.Name, nr.i, err)
		}
		nr.i++
		nr.rest = b
	}
	k := copy(p, nr.rest)
	nr.rest = nr.rest[k:]
	nr.read += uint64(k)
	return k, nil
}
