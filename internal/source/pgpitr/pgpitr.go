// Package pgpitr backs up self-hosted PostgreSQL physically: base backups over the replication protocol and WAL streamed continuously into the vault, restored to any second into a new data directory started on a new port.
//
// # Base backups
//
// BaseBackup opens a replication connection (replication=true), checks
// wal_level (replica or logical), reads IDENTIFY_SYSTEM (system identifier,
// timeline) and, when the slot setting is given, creates that physical
// replication slot with RESERVE_WAL if it is missing, so that the WAL
// written from the backup's start on is kept until a WALStreamer has put it
// in the vault. It then runs BASE_BACKUP (fast checkpoint, tablespace map,
// backup manifest, no WAL: the WAL comes from the WALStreamer) and pipes
// each tablespace's tar archive, as the server sends it, into a stream of
// one recovery point written with archiver.BackupStreams: a failure commits
// nothing. Only the framing of PostgreSQL 15 and newer (CopyData messages
// typed 'n', 'd', 'm', 'p') is read; older servers are refused.
//
// # WAL archiving
//
// A WALStreamer keeps a physical replication slot (created if missing) and
// streams WAL with START_REPLICATION SLOT … PHYSICAL from the end of the
// newest WAL recovery point of the same server, timeline and slot in the
// vault (or, the first time, from the start of the segment holding the
// slot's restart LSN). Every FlushEvery (30 s by default: the RPO) it
// commits one recovery point holding the WAL received since the previous
// one, under the vault's shared lock (lock.Check as BeforeCommit), and only
// then confirms that position to the server as flushed, so the slot keeps
// the WAL until it is safe in the vault. A point is also committed without
// WAL every HeartbeatEvery when the server is idle, so that a restore to a
// time after the last write is possible. Cancelling the context commits
// what was received and stops (Run returns nil); a lost connection commits
// what was received and returns the error. While the vault is locked
// exclusively (a prune), the WAL waits in memory and the commit is retried
// every FlushEvery; past 512 MiB Run gives up with an error, and the slot
// keeps the WAL on the server for the next Run. When the server asks for a
// reply (as it does while shutting down: a shutdown waits until the
// streamer has confirmed all the WAL), the WAL received is committed at
// once.
//
// Time coverage. Every XLogData and keepalive message carries the server's
// clock at transmission and the server's end of WAL (flushed, for XLogData;
// sent, for keepalives); the streamer asks for a keepalive at every standby
// status update (every min(FlushEvery, 10s)). For each point it records
// CoveredUntil: the server time of the last message whose end of WAL the
// point reaches. Every transaction the server had committed and flushed by
// then is in this point or an earlier one. This is an approximation in one
// respect: a commit is timestamped just before it is flushed and sent, so a
// commit stamped a few milliseconds before CoveredUntil may arrive in the
// next point. A restore therefore takes the WAL that covers 10 seconds past
// the target when the vault has it (recovery stops at the target anyway).
// The receive times on the coffre side are recorded as well, for
// information only: they are later than the server's and depend on both
// clocks. On an idle server a point without WAL is committed every
// HeartbeatEvery (1 minute), so that the time up to then is covered.
//
// Data loss window (RPO): at most FlushEvery plus the time of a commit
// (measured in the tests with FlushEvery = 200 ms on an in-memory vault: a
// transaction is in the vault ~200 ms after it committed). WAL not yet
// committed is not lost when coffre stops: the slot keeps it on the
// server (unbounded unless max_slot_wal_keep_size is set: a slot whose
// streamer is never run again fills the server's disk). DropSlot drops a
// slot once nothing streams from it; the control plane calls it when
// continuous backup is turned off for a slot it named.
//
// # Restore
//
// RestoreToTime reads the vault (its caller holds the shared lock, as for
// any restore). It picks the newest base backup that ended (coffre's clock,
// read after the end of the backup: conservative when the clocks agree) at
// or before the target, then the WAL points of the same system and timeline
// from the base's start LSN to the first point whose CoveredUntil is at or
// after the target (plus the slack above). The chain must be contiguous
// (each point starts where the previous ended, or inside the previous one:
// the points of two slots may overlap) and reach the base's end LSN;
// otherwise the restore is refused with an error naming the missing LSN
// range (ErrWALGap): never a silent restore to another time. It extracts
// the tars into the new data directory (0700, owned by the run-as user;
// other tablespaces under <DataDir>-tablespaces/<oid>, the tablespace_map
// rewritten to point there), writes the WAL as 16 MiB segment files (named
// by timeline and LSN, a partial last segment padded with zeros) into the
// side directory <DataDir>-wal, read by restore_command = 'cp …'
// (PostgreSQL refuses archive recovery without a restore_command), writes
// recovery.signal and appends to postgresql.auto.conf the recovery target
// (recovery_target_time, recovery_target_action = 'promote'), the port,
// listen_addresses = '127.0.0.1', no Unix socket (unix_socket_directories),
// archive_mode = off (the copy must not archive into the source's archive)
// and no primary_conninfo; a postgresql.conf and a pg_hba.conf are written
// when the source keeps them outside its data directory. If anything fails
// before the server starts, the directories it created are removed. It
// starts the server with pg_ctl as the run-as user (log:
// <DataDir>/coffre-restore.log) and waits until pg_controldata says "in
// production" (promoted), then removes <DataDir>-wal. When the chosen WAL
// holds no commit after the target, PostgreSQL (14 and later) stops with
// "recovery ended before configured recovery target was reached"; since
// that WAL covers every commit up to the target, the restore then recovers
// to its end, which is the state at the target, and promotes
// (Restored.TargetReached is false).
//
// # Vault layout
//
// A base backup, source type "postgres-base":
//
//	meta.json          BaseMeta
//	base/main.tar      the main data directory (BASE_BACKUP's base.tar)
//	base/<oid>.tar     the tablespace of that oid
//	backup_manifest    PostgreSQL's backup manifest
//
// A WAL point, source type "postgres-wal", tags pgpitr.system, pgpitr.timeline,
// pgpitr.start_lsn, pgpitr.end_lsn, pgpitr.covered_until, pgpitr.slot,
// pgpitr.segment_size (the meta's fields, to choose points without reading
// each one):
//
//	meta.json                              WALMeta
//	wal/<segment name>_<offset, 8 hex>     WAL bytes from that offset of that segment on
//
// meta.json of a base backup (BaseMeta):
//
//	{"format":1,"system_id":"7312…","timeline":1,"start_lsn":"0/2000028",
//	 "end_lsn":"0/2000100","start_time":"…","end_time":"…",
//	 "server_version":"15.8","segment_size":16777216,"slot":"coffre",
//	 "tablespaces":[{"oid":16390,"location":"/srv/ts1","file":"base/16390.tar"}]}
//
// meta.json of a WAL point (WALMeta):
//
//	{"format":1,"system_id":"7312…","timeline":1,"slot":"coffre",
//	 "segment_size":16777216,"start_lsn":"0/2000000","end_lsn":"0/3000000",
//	 "covered_until":"…","received_from":"…","received_until":"…"}
//
// # Limits
//
// Only PostgreSQL 15 and newer. The streamer follows the timeline it starts
// on: a timeline switch on the server (a standby promoted) ends Run with an
// error, and a restore uses the base backup's timeline only. Base backup end
// times are coffre's clock while recovery targets are compared with the
// server's commit timestamps: the two clocks are assumed to agree (NTP) to
// well within a second. A restore reads every WAL point's manifest but only
// the chosen points' data.
//
// # Connections
//
// Settings: host, port (5432), user, password (a reference read with
// Conn.Secret), sslmode (prefer), slot (the physical slot; BaseBackup
// creates it when given). The role needs the REPLICATION attribute and a
// pg_hba.conf line for "replication".
package pgpitr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/source"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// Source types of the recovery points this package writes.
const (
	TypeBase = "postgres-base"
	TypeWAL  = "postgres-wal"
)

const metaFormat = 1

// LSN is a WAL position.
type LSN uint64

func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN parses "X/X".
func ParseLSN(s string) (LSN, error) {
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	return LSN(l), nil
}

// MarshalText writes the LSN as "X/X".
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads "X/X".
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	*l = v
	return err
}

// BaseMeta is meta.json of a base backup.
type BaseMeta struct {
	Format        int          `json:"format"`
	SystemID      string       `json:"system_id"`
	Timeline      int32        `json:"timeline"`
	StartLSN      LSN          `json:"start_lsn"`
	EndLSN        LSN          `json:"end_lsn"`
	StartTime     time.Time    `json:"start_time"` // client clock, before BASE_BACKUP
	EndTime       time.Time    `json:"end_time"`   // client clock, after the end LSN was received
	ServerVersion string       `json:"server_version"`
	SegmentSize   int64        `json:"segment_size"`
	Slot          string       `json:"slot,omitempty"`
	Tablespaces   []Tablespace `json:"tablespaces,omitempty"`
}

// Tablespace is a tablespace other than the main one in a base backup.
type Tablespace struct {
	OID      int32  `json:"oid"`
	Location string `json:"location"`
	File     string `json:"file"`
}

// WALMeta is meta.json of a WAL point.
type WALMeta struct {
	Format      int    `json:"format"`
	SystemID    string `json:"system_id"`
	Timeline    int32  `json:"timeline"`
	Slot        string `json:"slot,omitempty"`
	SegmentSize int64  `json:"segment_size"`
	StartLSN    LSN    `json:"start_lsn"`
	EndLSN      LSN    `json:"end_lsn"`
	// CoveredUntil is a server time before which every WAL record the server
	// had written is in this point or an earlier one.
	CoveredUntil  time.Time `json:"covered_until"`
	ReceivedFrom  time.Time `json:"received_from"`
	ReceivedUntil time.Time `json:"received_until"`
}

// Tag keys of WAL points.
const (
	tagSystem   = "pgpitr.system"
	tagTimeline = "pgpitr.timeline"
	tagStart    = "pgpitr.start_lsn"
	tagEnd      = "pgpitr.end_lsn"
	tagCovered  = "pgpitr.covered_until"
	tagSlot     = "pgpitr.slot"
	tagSegSize  = "pgpitr.segment_size"
)

func (m *WALMeta) tags() map[string]string {
	return map[string]string{
		tagSystem: m.SystemID, tagTimeline: strconv.Itoa(int(m.Timeline)), tagStart: m.StartLSN.String(),
		tagEnd: m.EndLSN.String(), tagCovered: m.CoveredUntil.UTC().Format(time.RFC3339Nano), tagSlot: m.Slot,
		tagSegSize: strconv.FormatInt(m.SegmentSize, 10),
	}
}

func walMetaFromTags(t map[string]string) (*WALMeta, error) {
	m := &WALMeta{Format: metaFormat, SystemID: t[tagSystem], Slot: t[tagSlot]}
	tl, err := strconv.Atoi(t[tagTimeline])
	if err != nil {
		return nil, fmt.Errorf("tag %s: %w", tagTimeline, err)
	}
	m.Timeline = int32(tl)
	if m.SegmentSize, err = strconv.ParseInt(t[tagSegSize], 10, 64); err != nil || m.SegmentSize <= 0 {
		return nil, fmt.Errorf("tag %s: %q is not a size", tagSegSize, t[tagSegSize])
	}
	if m.StartLSN, err = ParseLSN(t[tagStart]); err != nil {
		return nil, err
	}
	if m.EndLSN, err = ParseLSN(t[tagEnd]); err != nil {
		return nil, err
	}
	if m.CoveredUntil, err = time.Parse(time.RFC3339Nano, t[tagCovered]); err != nil {
		return nil, fmt.Errorf("tag %s: %w", tagCovered, err)
	}
	return m, nil
}

// segmentName is the WAL file name of the segment holding lsn.
func segmentName(tli int32, lsn LSN, segSize int64) string {
	segNo := uint64(lsn) / uint64(segSize)
	perID := uint64(0x100000000) / uint64(segSize)
	return fmt.Sprintf("%08X%08X%08X", uint32(tli), uint32(segNo/perID), uint32(segNo%perID))
}

// settings are a Conn's parsed connection settings (never the password).
type settings struct {
	resource string
	host     string
	port     int
	user     string
	sslmode  string
	slot     string
}

func parseSettings(c source.Conn) (settings, error) {
	s := settings{resource: c.Resource, host: c.Settings["host"], port: 5432, user: c.Settings["user"],
		sslmode: c.Settings["sslmode"], slot: c.Settings["slot"]}
	bad := func(format string, args ...any) (settings, error) {
		return settings{}, hint.With(fmt.Errorf("resource %s: "+format+": %w", append(append([]any{c.Resource}, args...), source.ErrSettings)...),
			"PostgreSQL physical backup settings: host, port, user, password (env:NAME or file:PATH), sslmode, slot")
	}
	var err error
	if s.port, err = c.Port(5432); err != nil {
		return settings{}, err
	}
	if s.sslmode, err = c.SSLMode(); err != nil {
		return settings{}, err
	}
	if s.slot != "" && !validSlot(s.slot) {
		return bad("slot %q: want lower-case letters, digits and underscores", s.slot)
	}
	return s, nil
}

func validSlot(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func (s settings) addr() string {
	h := s.host
	if h == "" {
		h = "localhost"
	}
	return net.JoinHostPort(h, strconv.Itoa(s.port))
}

func conninfo(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// replConnect opens a physical replication connection and checks that the
// server can be backed up physically.
func replConnect(ctx context.Context, c source.Conn, app string) (*pgconn.PgConn, settings, error) {
	s, err := parseSettings(c)
	if err != nil {
		return nil, s, err
	}
	pw, err := c.Secret("password")
	if err != nil {
		return nil, s, err
	}
	var b strings.Builder
	if s.host != "" {
		b.WriteString("host=" + conninfo(s.host) + " ")
	}
	b.WriteString("port=" + strconv.Itoa(s.port) + " sslmode=" + s.sslmode)
	if s.user != "" {
		b.WriteString(" user=" + conninfo(s.user))
	}
	cfg, err := pgconn.ParseConfig(b.String())
	if err != nil {
		return nil, s, fmt.Errorf("resource %s: connection settings: %w", s.resource, err)
	}
	cfg.Password = pw // from the settings only, never from PGPASSWORD
	cfg.ConnectTimeout = 10 * time.Second
	for k := range cfg.RuntimeParams {
		delete(cfg.RuntimeParams, k)
	}
	cfg.RuntimeParams["replication"] = "true"
	cfg.RuntimeParams["application_name"] = app
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, s, connectError(s, err)
	}
	if err := checkServer(ctx, conn, s); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, s, err
	}
	return conn, s, nil
}

func connectError(s settings, err error) error {
	e := fmt.Errorf("connect to PostgreSQL at %s for replication (user %q): %w", s.addr(), s.user, err)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "28P01":
		return hint.With(fmt.Errorf("%w: %w", source.ErrAuth, e), "check the user setting and the password its reference (env:NAME or file:PATH) points to")
	case errors.As(err, &pe) && pe.Code == "28000":
		return hint.With(fmt.Errorf("%w: %w", source.ErrAuth, e),
			`check the password, and that pg_hba.conf has a "host replication <user> <address> scram-sha-256" line for this user`)
	case errors.As(err, &pe) && pe.Code == "53300" && strings.Contains(pe.Message, "max_wal_senders"):
		return hint.With(e, "the server accepts no replication connections: set wal_level = replica and max_wal_senders > 0 in postgresql.conf and restart PostgreSQL")
	case errors.As(err, &pe) && pe.Code == "42501":
		return hint.With(e, "the role needs the REPLICATION attribute: ALTER ROLE "+s.user+" REPLICATION")
	case errors.As(err, &pe):
		return e
	}
	return hint.With(e, "check that PostgreSQL runs and listens on "+s.addr()+" and that host, port and sslmode are right")
}

// checkServer refuses servers that cannot be backed up physically.
func checkServer(ctx context.Context, conn *pgconn.PgConn, s settings) error {
	v := conn.ParameterStatus("server_version")
	major, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	if major < 15 {
		return hint.With(fmt.Errorf("resource %s: PostgreSQL %s at %s: physical backups need PostgreSQL 15 or newer", s.resource, v, s.addr()),
			"use the logical PostgreSQL adapter for older servers")
	}
	wl, err := show(ctx, conn, "wal_level")
	if err != nil {
		return fmt.Errorf("resource %s: read wal_level: %w", s.resource, err)
	}
	if wl == "minimal" {
		return hint.With(fmt.Errorf("resource %s: PostgreSQL at %s runs with wal_level=minimal: its WAL cannot rebuild a base backup", s.resource, s.addr()),
			"set wal_level = replica (and max_wal_senders > 0) in postgresql.conf and restart PostgreSQL")
	}
	return nil
}

// show runs SHOW name (a replication command).
func show(ctx context.Context, conn *pgconn.PgConn, name string) (string, error) {
	res, err := conn.Exec(ctx, "SHOW "+name).ReadAll()
	if err != nil {
		return "", err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return "", fmt.Errorf("SHOW %s: unexpected result", name)
	}
	return string(res[0].Rows[0][0]), nil
}

// segmentSize reads wal_segment_size in bytes.
func segmentSize(ctx context.Context, conn *pgconn.PgConn) (int64, error) {
	v, err := show(ctx, conn, "wal_segment_size")
	if err != nil {
		return 0, fmt.Errorf("read wal_segment_size: %w", err)
	}
	v = strings.TrimSpace(v)
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "GB"):
		mult, v = 1<<30, strings.TrimSuffix(v, "GB")
	case strings.HasSuffix(v, "MB"):
		mult, v = 1<<20, strings.TrimSuffix(v, "MB")
	case strings.HasSuffix(v, "kB"):
		mult, v = 1<<10, strings.TrimSuffix(v, "kB")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("wal_segment_size %q: not a size", v)
	}
	return n * mult, nil
}

// slotInfo is a physical slot's state (READ_REPLICATION_SLOT, PG 15+).
type slotInfo struct {
	exists     bool
	restartLSN LSN
	timeline   int32
}

func readSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (slotInfo, error) {
	res, err := conn.Exec(ctx, "READ_REPLICATION_SLOT "+slot).ReadAll()
	if err != nil {
		return slotInfo{}, fmt.Errorf("read replication slot %s: %w", slot, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 3 {
		return slotInfo{}, fmt.Errorf("read replication slot %s: unexpected result", slot)
	}
	row := res[0].Rows[0]
	if row[0] == nil { // slot_type is NULL when the slot does not exist
		return slotInfo{}, nil
	}
	si := slotInfo{exists: true}
	if string(row[0]) != "physical" {
		return si, fmt.Errorf("replication slot %s is a %s slot, not a physical one", slot, row[0])
	}
	if row[1] != nil {
		if si.restartLSN, err = ParseLSN(string(row[1])); err != nil {
			return si, err
		}
	}
	if row[2] != nil {
		tl, _ := strconv.Atoi(string(row[2]))
		si.timeline = int32(tl)
	}
	return si, nil
}

// ensureSlot creates the physical slot (reserving WAL now) if missing.
func ensureSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (slotInfo, error) {
	si, err := readSlot(ctx, conn, slot)
	if err != nil || si.exists {
		return si, err
	}
	if _, err := conn.Exec(ctx, "CREATE_REPLICATION_SLOT "+slot+" PHYSICAL RESERVE_WAL").ReadAll(); err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42710" { // created meanwhile
			return si, hint.With(fmt.Errorf("create physical replication slot %s: %w", slot, err),
				"check max_replication_slots in postgresql.conf")
		}
	}
	return readSlot(ctx, conn, slot)
}

// ErrSlotActive is what DropSlot wraps when a WAL sender still uses the
// slot.
var ErrSlotActive = errors.New("replication slot is in use")

// DropSlot drops the physical replication slot over a replication
// connection made with c's settings (DROP_REPLICATION_SLOT, without WAIT)
// and reports whether it existed. A slot in use is not dropped: the error
// wraps ErrSlotActive (its streamer still runs, here or on another server,
// or the server has not yet ended the WAL sender of a connection that just
// closed); try again later. A logical slot of that name is refused.
func DropSlot(ctx context.Context, c source.Conn, slot string) (bool, error) {
	if !validSlot(slot) {
		return false, fmt.Errorf("resource %s: drop replication slot %q: want lower-case letters, digits and underscores: %w", c.Resource, slot, source.ErrSettings)
	}
	conn, s, err := replConnect(ctx, c, "coffre slot cleanup")
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	si, err := readSlot(ctx, conn, slot)
	if err != nil {
		return false, fmt.Errorf("resource %s: %w", s.resource, err)
	}
	if !si.exists {
		return false, nil
	}
	if _, err := conn.Exec(ctx, "DROP_REPLICATION_SLOT "+slot).ReadAll(); err != nil {
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && pe.Code == "42704": // dropped meanwhile
			return false, nil
		case errors.As(err, &pe) && pe.Code == "55006":
			return false, fmt.Errorf("resource %s: drop replication slot %s at %s: %w (%s)", s.resource, slot, s.addr(), ErrSlotActive, pe.Message)
		}
		return false, fmt.Errorf("resource %s: drop replication slot %s at %s: %w", s.resource, slot, s.addr(), err)
	}
	return true, nil
}

// ServerAddr is the host:port c's settings name, for messages.
func ServerAddr(c source.Conn) string {
	s, err := parseSettings(c)
	if err != nil {
		return net.JoinHostPort(c.Settings["host"], c.Settings["port"])
	}
	return s.addr()
}

func marshalMeta(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }
