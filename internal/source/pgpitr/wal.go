package pgpitr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/archiver"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/source"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// maxPending is how much WAL a streamer keeps in memory while the vault is
// locked (by a prune) before it gives up.
const maxPending = 512 << 20

// DefaultSlot is the physical replication slot a WALStreamer uses when
// neither Slot nor the slot setting names one.
const DefaultSlot = "coffre"

// WALStreamer archives a server's WAL continuously into a vault, one
// recovery point of type "postgres-wal" every FlushEvery (see the package
// documentation). Run it once at a time per slot.
type WALStreamer struct {
	Repo *repo.Repository // opened, index loaded
	Conn source.Conn
	// Slot is the physical replication slot, created if missing (default:
	// the slot setting, else DefaultSlot).
	Slot string
	// FlushEvery is how often received WAL is committed (default 30s): the
	// RPO. A point is also committed as soon as a segment's worth of WAL is
	// pending.
	FlushEvery time.Duration
	// HeartbeatEvery is how often a point without WAL is committed while the
	// server writes nothing, to record that the time up to then is covered
	// (default 1 minute): on an idle server, a restore to a time later than
	// the newest point is refused.
	HeartbeatEvery time.Duration
	// Lifecycle and Tags are recorded in each point's manifest.
	Lifecycle *snapshot.Lifecycle
	Log       *slog.Logger
	// OnCommit, when set, is called with each committed point (the control
	// plane registers it in its catalog); an error is logged, not fatal: the
	// point is safe in the vault and a catalog rebuild finds it.
	OnCommit func(m *snapshot.Manifest) error

	mu    sync.Mutex
	stats WALStats
}

// WALStats is a WALStreamer's progress.
type WALStats struct {
	Points       int       // points committed by this Run
	ReceivedLSN  LSN       // end of the WAL received
	ArchivedLSN  LSN       // end of the WAL committed to the vault (and confirmed to the server)
	CoveredUntil time.Time // server time up to which all WAL is in the vault
	LastCommit   time.Time
	// Lag is, for the last point, the time from receiving its first byte to
	// its commit: the data-loss window had the streamer stopped just before.
	Lag time.Duration
}

// Stats returns the streamer's progress; safe to call while Run runs.
func (w *WALStreamer) Stats() WALStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

func (w *WALStreamer) log() *slog.Logger {
	if w.Log != nil {
		return w.Log
	}
	return slog.Default()
}

// pending is the WAL received and not yet committed.
type pending struct {
	start, end  LSN
	buf         []byte
	covered     time.Time
	firstRecv   time.Time // receive time of the first byte (zero: none)
	lastRecv    time.Time
	lastCommit  time.Time
	prevCovered time.Time
}

// Run streams WAL until ctx is cancelled (then it commits what it received
// and returns nil) or an error occurs. The WAL the server keeps for the
// slot is released only up to what was committed, so a Run started after a
// failure resumes without loss.
func (w *WALStreamer) Run(ctx context.Context) error {
	if w.Repo == nil {
		return errors.New("WAL streamer: no vault")
	}
	if w.FlushEvery <= 0 {
		w.FlushEvery = 30 * time.Second
	}
	if w.HeartbeatEvery <= 0 {
		w.HeartbeatEvery = time.Minute
	}
	slot := w.Slot
	if slot == "" {
		slot = w.Conn.Settings["slot"]
	}
	if slot == "" {
		slot = DefaultSlot
	}
	if !validSlot(slot) {
		return fmt.Errorf("WAL streamer: slot %q: want lower-case letters, digits and underscores", slot)
	}
	conn, s, err := replConnect(ctx, w.Conn, "coffre wal streamer")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ident, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("resource %s: IDENTIFY_SYSTEM: %w", s.resource, err)
	}
	segSize, err := segmentSize(ctx, conn)
	if err != nil {
		return fmt.Errorf("resource %s: %w", s.resource, err)
	}
	si, err := ensureSlot(ctx, conn, slot)
	if err != nil {
		return fmt.Errorf("resource %s: %w", s.resource, err)
	}
	last, err := w.lastPoint(ctx, ident.SystemID, ident.Timeline, slot)
	if err != nil {
		return err
	}
	var startLSN LSN
	var prevCovered time.Time
	switch {
	case last != nil && (si.restartLSN == 0 || last.EndLSN >= si.restartLSN):
		startLSN, prevCovered = last.EndLSN, last.CoveredUntil
	case si.restartLSN != 0:
		if last != nil {
			w.log().Warn("the slot no longer holds the WAL after the last archived point: point-in-time restore across the gap is impossible",
				"resource", s.resource, "slot", slot, "archived_until", last.EndLSN.String(), "slot_restart_lsn", si.restartLSN.String())
		}
		startLSN = si.restartLSN - si.restartLSN%LSN(segSize)
	default:
		startLSN = LSN(ident.XLogPos) - LSN(ident.XLogPos)%LSN(segSize)
	}
	err = pglogrepl.StartReplication(ctx, conn, slot, pglogrepl.LSN(startLSN),
		pglogrepl.StartReplicationOptions{Timeline: ident.Timeline, Mode: pglogrepl.PhysicalReplication})
	if err != nil {
		return fmt.Errorf("resource %s: START_REPLICATION SLOT %s PHYSICAL %s: %w", s.resource, slot, startLSN, err)
	}
	w.log().Info("streaming WAL", "resource", s.resource, "slot", slot, "from", startLSN.String(), "timeline", ident.Timeline)
	w.mu.Lock()
	w.stats.ReceivedLSN, w.stats.ArchivedLSN, w.stats.CoveredUntil = startLSN, startLSN, prevCovered
	w.mu.Unlock()

	base := WALMeta{Format: metaFormat, SystemID: ident.SystemID, Timeline: ident.Timeline, Slot: slot, SegmentSize: segSize}
	p := &pending{start: startLSN, end: startLSN, prevCovered: prevCovered, lastCommit: time.Now()}
	statusEvery := min(w.FlushEvery, 10*time.Second)
	nextFlush := time.Now().Add(w.FlushEvery)
	nextStatus := time.Now()
	confirmed := startLSN
	var retryAt time.Time // after the vault was found locked

	sendStatus := func(ctx context.Context, reply bool) error {
		if conn.IsClosed() {
			// Lost: pgconn is closing it in the background, and
			// SendStandbyStatusUpdate writes without pgconn's lock.
			return fmt.Errorf("resource %s: send standby status: connection closed", s.resource)
		}
		err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: pglogrepl.LSN(p.end), WALFlushPosition: pglogrepl.LSN(confirmed),
			WALApplyPosition: pglogrepl.LSN(confirmed), ClientTime: time.Now(), ReplyRequested: reply,
		})
		if err != nil {
			return fmt.Errorf("resource %s: send standby status: %w", s.resource, err)
		}
		nextStatus = time.Now().Add(statusEvery)
		return nil
	}
	flush := func(ctx context.Context, force bool) error {
		nextFlush = time.Now().Add(w.FlushEvery)
		advanced := p.covered.After(p.prevCovered)
		if len(p.buf) == 0 && !(advanced && (force || time.Since(p.lastCommit) >= w.HeartbeatEvery)) {
			return nil
		}
		m := base
		m.StartLSN, m.EndLSN = p.start, p.end
		m.CoveredUntil = p.covered
		if m.CoveredUntil.Before(p.prevCovered) {
			m.CoveredUntil = p.prevCovered
		}
		m.ReceivedFrom, m.ReceivedUntil = p.firstRecv, p.lastRecv
		if m.ReceivedFrom.IsZero() {
			m.ReceivedFrom, m.ReceivedUntil = p.lastCommit, time.Now()
		}
		committed, err := w.commit(ctx, s.resource, &m, p.buf)
		if err != nil {
			if errors.Is(err, repo.ErrLocked) {
				if len(p.buf) > maxPending {
					return fmt.Errorf("resource %s: %w: %d MiB of WAL waiting; stopping (the slot keeps the WAL on the server until a streamer runs again)",
						s.resource, err, len(p.buf)>>20)
				}
				w.log().Warn("vault locked: WAL kept to be committed later", "resource", s.resource, "err", err)
				retryAt = time.Now().Add(w.FlushEvery)
				return nil
			}
			return err
		}
		now := time.Now()
		w.mu.Lock()
		w.stats.Points++
		w.stats.ArchivedLSN, w.stats.CoveredUntil, w.stats.LastCommit = m.EndLSN, m.CoveredUntil, now
		if !p.firstRecv.IsZero() {
			w.stats.Lag = now.Sub(p.firstRecv)
		}
		w.mu.Unlock()
		w.log().Debug("WAL committed", "resource", s.resource, "point", committed.ID.Short(), "start", m.StartLSN.String(), "end", m.EndLSN.String())
		if w.OnCommit != nil {
			if err := w.OnCommit(committed); err != nil {
				w.log().Warn("WAL point committed but not registered", "resource", s.resource, "point", committed.ID.Short(), "err", err)
			}
		}
		confirmed = p.end
		*p = pending{start: p.end, end: p.end, covered: m.CoveredUntil, prevCovered: m.CoveredUntil, lastCommit: now}
		// Only now may the server recycle the WAL up to confirmed.
		if err := sendStatus(ctx, false); err != nil && !force {
			return err
		}
		return nil
	}
	stop := func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := flush(sctx, true); err != nil {
			return err
		}
		w.log().Info("WAL streaming stopped", "resource", s.resource, "slot", slot, "archived_until", confirmed.String())
		return nil
	}

	for {
		if ctx.Err() != nil {
			return stop()
		}
		if (!time.Now().Before(nextFlush) || int64(len(p.buf)) >= segSize) && !time.Now().Before(retryAt) {
			if err := flush(ctx, false); err != nil {
				if ctx.Err() != nil {
					return stop() // cancelled during the commit: commit again, uncancelled
				}
				return err
			}
		}
		if !time.Now().Before(nextStatus) {
			// Ask for a keepalive: its server time and end of WAL tell up to
			// when the WAL received is complete, even on an idle server.
			if err := sendStatus(ctx, true); err != nil {
				return err
			}
		}
		deadline := nextFlush
		if nextStatus.Before(deadline) {
			deadline = nextStatus
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return stop()
			}
			if pgconn.Timeout(err) {
				continue
			}
			// Connection lost (server shut down…): keep what was received.
			if serr := stop(); serr != nil {
				w.log().Error("commit the WAL received before the connection was lost", "resource", s.resource, "err", serr)
			}
			return hint.With(fmt.Errorf("resource %s: receive WAL: %w", s.resource, err),
				"the replication connection was lost (server shut down or restarted?): run the streamer again; it resumes where the vault's WAL ends")
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("resource %s: %w", s.resource, err)
				}
				if LSN(k.ServerWALEnd) <= p.end && k.ServerTime.After(p.covered) {
					p.covered = k.ServerTime
				}
				if k.ReplyRequested {
					// The server waits for us (a shutdown waits until its
					// WAL is confirmed): commit now rather than at
					// FlushEvery.
					if len(p.buf) > 0 && !time.Now().Before(retryAt) {
						if err := flush(ctx, false); err != nil {
							if ctx.Err() != nil {
								return stop()
							}
							return err
						}
					}
					if err := sendStatus(ctx, false); err != nil {
						return err
					}
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("resource %s: %w", s.resource, err)
				}
				if LSN(x.WALStart) != p.end {
					return fmt.Errorf("resource %s: WAL from %s received while expecting %s", s.resource, LSN(x.WALStart), p.end)
				}
				now := time.Now()
				if p.firstRecv.IsZero() && len(x.WALData) > 0 {
					p.firstRecv = now
				}
				p.lastRecv = now
				p.buf = append(p.buf, x.WALData...)
				p.end += LSN(len(x.WALData))
				if LSN(x.ServerWALEnd) <= p.end && x.ServerTime.After(p.covered) {
					p.covered = x.ServerTime
				}
				w.mu.Lock()
				w.stats.ReceivedLSN = p.end
				w.mu.Unlock()
			}
		case *pgproto3.CopyDone:
			if err := stop(); err != nil {
				return err
			}
			return fmt.Errorf("resource %s: the server ended WAL streaming at %s (timeline switch or shutdown)", s.resource, p.end)
		case *pgproto3.ErrorResponse:
			if err := stop(); err != nil {
				return err
			}
			return fmt.Errorf("resource %s: WAL streaming: %w", s.resource, pgconn.ErrorResponseToPgError(m))
		}
	}
}

// commit stores buf (the WAL from m.StartLSN to m.EndLSN) as one point,
// under the vault's shared lock.
func (w *WALStreamer) commit(ctx context.Context, resource string, m *WALMeta, buf []byte) (*snapshot.Manifest, error) {
	lock, err := w.Repo.Lock(ctx, false, "WAL archive "+resource+" slot "+m.Slot)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	meta, err := marshalMeta(m)
	if err != nil {
		return nil, err
	}
	arch := archiver.New(w.Repo, archiver.Options{Tags: m.tags(), Resource: resource, Lifecycle: w.Lifecycle, BeforeCommit: lock.Check})
	src := snapshot.Source{Type: TypeWAL, Resource: resource}
	return arch.BackupStreams(ctx, src, func(ctx context.Context, st *archiver.Streams) error {
		lsn := m.StartLSN
		rest := buf
		for len(rest) > 0 {
			off := int64(lsn) % m.SegmentSize
			n := min(int64(len(rest)), m.SegmentSize-off)
			name := fmt.Sprintf("wal/%s_%08X", segmentName(m.Timeline, lsn, m.SegmentSize), off)
			if err := st.AddBytes(name, rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
			lsn += LSN(n)
		}
		return st.AddBytes("meta.json", meta)
	})
}

// lastPoint returns the WAL point of that server, timeline and slot that
// ends furthest, or nil.
func (w *WALStreamer) lastPoint(ctx context.Context, system string, tl int32, slot string) (*WALMeta, error) {
	ms, _, err := snapshot.LoadAll(ctx, w.Repo)
	if err != nil {
		return nil, fmt.Errorf("list recovery points: %w", err)
	}
	var last *WALMeta
	for _, man := range ms {
		if man.Source.Type != TypeWAL || man.Source.Resource != w.Conn.Resource {
			continue
		}
		m, err := walMetaFromTags(man.Tags)
		if err != nil || m.SystemID != system || m.Timeline != tl || m.Slot != slot {
			continue
		}
		if last == nil || m.EndLSN > last.EndLSN {
			last = m
		}
	}
	return last, nil
}
