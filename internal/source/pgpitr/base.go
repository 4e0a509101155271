package pgpitr

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// BaseBackup stores one base backup of the server c points to as a
// recovery point of type "postgres-base" (see the package documentation).
// Nothing is committed when it fails.
func BaseBackup(ctx context.Context, arch *archiver.Archiver, c source.Conn) (*snapshot.Manifest, error) {
	conn, s, err := replConnect(ctx, c, "coffre base backup")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ident, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("resource %s: IDENTIFY_SYSTEM: %w", s.resource, err)
	}
	segSize, err := segmentSize(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("resource %s: %w", s.resource, err)
	}
	if s.slot != "" {
		if _, err := ensureSlot(ctx, conn, s.slot); err != nil {
			return nil, fmt.Errorf("resource %s: %w", s.resource, err)
		}
	}
	meta := BaseMeta{Format: metaFormat, SystemID: ident.SystemID, ServerVersion: conn.ParameterStatus("server_version"),
		SegmentSize: segSize, Slot: s.slot, StartTime: time.Now().UTC()}
	src := snapshot.Source{Type: TypeBase, Resource: c.Resource}
	return arch.BackupStreams(ctx, src, func(ctx context.Context, st *archiver.Streams) error {
		start, err := pglogrepl.StartBaseBackup(ctx, conn, pglogrepl.BaseBackupOptions{
			Label: "coffre", Fast: true, WAL: false, NoWait: true, TablespaceMap: true, Manifest: true,
		})
		if err != nil {
			return fmt.Errorf("BASE_BACKUP: %w", err)
		}
		meta.StartLSN, meta.Timeline = LSN(start.LSN), start.TimelineID
		for _, ts := range start.Tablespaces {
			meta.Tablespaces = append(meta.Tablespaces, Tablespace{OID: ts.OID, Location: ts.Location, File: "base/" + strconv.Itoa(int(ts.OID)) + ".tar"})
		}
		if err := receiveArchives(ctx, conn, st); err != nil {
			return err
		}
		end, err := pglogrepl.FinishBaseBackup(ctx, conn)
		if err != nil {
			return fmt.Errorf("finish BASE_BACKUP: %w", err)
		}
		meta.EndLSN = LSN(end.LSN)
		meta.EndTime = time.Now().UTC()
		if meta.EndLSN < meta.StartLSN {
			return fmt.Errorf("BASE_BACKUP ended at %s, before its start %s", meta.EndLSN, meta.StartLSN)
		}
		b, err := marshalMeta(meta)
		if err != nil {
			return err
		}
		return st.AddBytes("meta.json", b)
	})
}

// receiveArchives reads the CopyData messages of BASE_BACKUP (PostgreSQL
// 15 framing) and pipes each archive into its stream, until CopyDone.
func receiveArchives(ctx context.Context, conn interface {
	ReceiveMessage(context.Context) (pgproto3.BackendMessage, error)
}, st *archiver.Streams) error {
	var (
		pw   *io.PipeWriter
		done chan error
	)
	closeCur := func(cause error) error {
		if pw == nil {
			return nil
		}
		pw.CloseWithError(cause)
		err := <-done
		pw, done = nil, nil
		if err != nil {
			return err // Add's error says which stream failed
		}
		return cause
	}
	open := func(name string) {
		pr, w := io.Pipe()
		pw, done = w, make(chan error, 1)
		go func() {
			err := st.Add(name, pr)
			pr.CloseWithError(fmt.Errorf("store %s: stopped", name)) // unblock the writer if Add failed
			done <- err
		}()
	}
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return closeCur(fmt.Errorf("BASE_BACKUP: receive: %w", err))
		}
		switch m := msg.(type) {
		case *pgproto3.CopyOutResponse, *pgproto3.NoticeResponse:
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case 'n':
				if err := closeCur(nil); err != nil {
					return err
				}
				name, _, _ := bytes.Cut(m.Data[1:], []byte{0})
				open(archivePath(string(name)))
			case 'm':
				if err := closeCur(nil); err != nil {
					return err
				}
				open("backup_manifest")
			case 'd':
				if pw == nil {
					return fmt.Errorf("BASE_BACKUP: data before any archive")
				}
				if _, err := pw.Write(m.Data[1:]); err != nil {
					return closeCur(err)
				}
			case 'p':
			default:
				return closeCur(fmt.Errorf("BASE_BACKUP: unexpected message type %q", m.Data[0]))
			}
		case *pgproto3.CopyDone:
			return closeCur(nil)
		case *pgproto3.ErrorResponse:
			return closeCur(fmt.Errorf("BASE_BACKUP: %w", pgconn.ErrorResponseToPgError(m)))
		default:
			return closeCur(fmt.Errorf("BASE_BACKUP: unexpected %T", msg))
		}
	}
}

// archivePath maps BASE_BACKUP's archive names to stream paths.
func archivePath(name string) string {
	name = strings.TrimPrefix(name, "./")
	if name == "base.tar" {
		return "base/main.tar"
	}
	return "base/" + strings.ReplaceAll(name, "/", "_")
}
