package postgres

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/repo"
	"github.com/coffre/coffre/internal/repo/crypto"
	"github.com/coffre/coffre/internal/repo/snapshot"
	"github.com/coffre/coffre/internal/repo/tree"
	"github.com/coffre/coffre/internal/source"
	"github.com/coffre/coffre/internal/source/stream"
)

// Stream paths inside a recovery point.
const (
	metaPath   = "meta.json"
	schemaPath = "schema.pgdump"
	rolesPath  = "roles.sql"
)

// MetaFormat is the version of meta.json written by this package.
const MetaFormat = 1

// Meta is meta.json, the description of a PostgreSQL recovery point that
// Restore and Validate work from.
type Meta struct {
	Format int `json:"format"`
	// Time is the snapshot's time, by the server's clock.
	Time             time.Time `json:"time"`
	Snapshot         string    `json:"snapshot"` // the exported snapshot's id
	ServerVersion    string    `json:"server_version"`
	ServerVersionNum int       `json:"server_version_num"`
	PgDump           string    `json:"pg_dump"` // pg_dump --version
	Database         string    `json:"database"`
	Encoding         string    `json:"encoding"`
	Collate          string    `json:"collate"`
	Ctype            string    `json:"ctype"`
	// LocaleProvider is pg_database.datlocprovider ("c" libc, "i" ICU, "b"
	// builtin; empty before PostgreSQL 15) and Locale its locale.
	LocaleProvider string `json:"locale_provider,omitempty"`
	Locale         string `json:"locale,omitempty"`
	// Schema is the stream holding pg_dump's custom-format archive of the
	// pre-data and post-data sections.
	Schema string `json:"schema"`
	// Order is the setting order of the backup: "physical" or "key" (empty
	// in points made before it existed: key).
	Order        string        `json:"order,omitempty"`
	Tables       []Table       `json:"tables"`
	Sequences    []Sequence    `json:"sequences"`
	LargeObjects []LargeObject `json:"large_objects"`
	Roles        Roles         `json:"roles"`
	Warnings     []string      `json:"warnings,omitempty"`
}

// Table is one table's data stream (COPY text or binary format).
type Table struct {
	Schema  string   `json:"schema"`
	Name    string   `json:"name"`
	Path    string   `json:"path"`
	Columns []string `json:"columns"` // the COPY column list (generated columns left out)
	// Format is the COPY format of the table's streams (its parts' too):
	// "binary" or "text"; empty in points made before it existed: text.
	Format string `json:"format,omitempty"`
	// OrderBy is the primary key the rows are sorted by; empty: physical
	// order (order=physical, or no primary key).
	OrderBy []string `json:"order_by,omitempty"`
	// Parts, when not empty, replace Path: the rows split by ranges of the
	// table's blocks (big tables on PostgreSQL 14 and later,
	// order=physical), or by ranges of its key (RangeKey set, order=range),
	// one stream each.
	Parts []Part `json:"parts,omitempty"`
	// RangeKey is the primary key column whose ranges split the table
	// (order=range; the first column of Columns), RangeKeyType its type,
	// and part i holds the keys k with k>>RangeShift == RangeFirst+i.
	RangeKey     string `json:"range_key,omitempty"`
	RangeKeyType string `json:"range_key_type,omitempty"`
	RangeShift   uint   `json:"range_shift,omitempty"`
	RangeFirst   int64  `json:"range_first,omitempty"`
	// IndexOIDs and ConstraintOIDs are the source's OIDs of the table's
	// own indexes and of its primary key, unique and exclusion constraints
	// (not for partitions and inheritance children): the restore builds
	// them as soon as the table's rows are in, while other tables load.
	IndexOIDs      []uint32 `json:"index_oids,omitempty"`
	ConstraintOIDs []uint32 `json:"constraint_oids,omitempty"`
	Rows           int64    `json:"rows"` // all parts together
	Bytes          int64    `json:"bytes"`
}

// Part is the stream of the rows stored in blocks [FromBlock, ToBlock) of
// a table (ToBlock 0: to the end of the table), or, in a table split by
// key ranges, of the rows whose key is in the range Keys describes.
type Part struct {
	Path      string `json:"path"`
	FromBlock int64  `json:"from_block"`
	ToBlock   int64  `json:"to_block,omitempty"`
	Keys      string `json:"keys,omitempty"` // e.g. "id 1048576 to 2097151"
	Rows      int64  `json:"rows"`
	Bytes     int64  `json:"bytes"`
}

// Sequence is a sequence's state at backup time.
type Sequence struct {
	Schema    string `json:"schema"`
	Name      string `json:"name"`
	LastValue int64  `json:"last_value"`
	IsCalled  bool   `json:"is_called"`
}

// LargeObject is one large object's content stream.
type LargeObject struct {
	OID   uint32 `json:"oid"`
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
}

// Roles says whether roles.sql (pg_dumpall --roles-only) is included.
type Roles struct {
	Included bool   `json:"included"`
	Path     string `json:"path,omitempty"`
	Reason   string `json:"reason,omitempty"` // why not, when not included
}

func (t Table) String() string { return t.Schema + "." + t.Name }

func (t Table) qname() string { return qi(t.Schema) + "." + qi(t.Name) }

func (s Sequence) qname() string { return qi(s.Schema) + "." + qi(s.Name) }

// columnList is " (a, b)", or "" for a table without columns.
func (t Table) columnList() string {
	if len(t.Columns) == 0 {
		return ""
	}
	q := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		q[i] = qi(c)
	}
	return " (" + strings.Join(q, ", ") + ")"
}

// COPY formats of a table's streams (Table.Format).
const (
	formatText   = "text"
	formatBinary = "binary"
)

// binary says whether the table's streams are in COPY's binary format.
func (t Table) binary() bool { return t.Format == formatBinary }

// copyOptions are the COPY statement's options for the table's format.
func (t Table) copyOptions() string {
	if t.binary() {
		return " (FORMAT binary)"
	}
	return ""
}

// copyOut is the statement reading the table's rows, or those of part p.
func (t Table) copyOut(p *Part) string {
	if p != nil {
		cols := strings.Trim(t.columnList(), " ()")
		where := fmt.Sprintf(" WHERE ctid >= '(%d,0)'::pg_catalog.tid", p.FromBlock)
		if p.ToBlock > 0 {
			where += fmt.Sprintf(" AND ctid < '(%d,0)'::pg_catalog.tid", p.ToBlock)
		}
		return "COPY (SELECT " + cols + " FROM ONLY " + t.qname() + where + ") TO STDOUT" + t.copyOptions()
	}
	if len(t.OrderBy) == 0 || len(t.Columns) == 0 {
		return "COPY " + t.qname() + t.columnList() + " TO STDOUT" + t.copyOptions()
	}
	o := make([]string, len(t.OrderBy))
	for i, c := range t.OrderBy {
		o[i] = qi(c)
	}
	cols := strings.Trim(t.columnList(), " ()")
	return "COPY (SELECT " + cols + " FROM ONLY " + t.qname() + " ORDER BY " + strings.Join(o, ", ") + ") TO STDOUT" + t.copyOptions()
}

// copyIn is the statement loading the table's rows.
func (t Table) copyIn() string {
	return "COPY " + t.qname() + t.columnList() + " FROM STDIN" + t.copyOptions()
}

// escapeName makes a schema or table name usable in a stream file name:
// '%', '/', '.' and control bytes become %XX, so that "<schema>.<table>" is
// unambiguous.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' || c == '/' || c == '.' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func tablePath(schema, name string) string {
	return "data/" + escapeName(schema) + "." + escapeName(name) + ".copy"
}

// partPath names part i of a table: the escaping of the names keeps
// "<schema>.<table>.part<i>" unambiguous.
func partPath(schema, name string, i int) string {
	return fmt.Sprintf("data/%s.%s.part%04d.copy", escapeName(schema), escapeName(name), i)
}

// dataStream is one stream of table rows: a whole table (p nil) or one of
// its parts.
type dataStream struct {
	t *Table
	p *Part
}

// ranged says whether the table is split by key ranges, read with one
// COPY whose rows coffre routes to the parts (see copyRanges).
func (t Table) ranged() bool { return t.RangeKey != "" }

// copyJobs lists what the backup's workers copy: a table, a part of a
// table split by blocks, or a whole table split by key ranges (one COPY
// feeds all its parts).
func (m *Meta) copyJobs() []dataStream {
	var ds []dataStream
	for _, d := range m.dataStreams() {
		if d.t.ranged() {
			if d.p == &d.t.Parts[0] {
				ds = append(ds, dataStream{t: d.t})
			}
			continue
		}
		ds = append(ds, d)
	}
	return ds
}

// dataStreams lists the tables' row streams: each table's, or its parts.
func (m *Meta) dataStreams() []dataStream {
	var ds []dataStream
	for i := range m.Tables {
		t := &m.Tables[i]
		if len(t.Parts) == 0 {
			ds = append(ds, dataStream{t: t})
		}
		for k := range t.Parts {
			ds = append(ds, dataStream{t: t, p: &t.Parts[k]})
		}
	}
	return ds
}

// describe returns the stream's name for messages, its path, and its
// recorded rows.
func (d dataStream) describe() (what, path string, rows int64) {
	if d.p != nil && d.p.Keys != "" {
		return "table " + d.t.String() + " (" + d.p.Keys + ")", d.p.Path, d.p.Rows
	}
	if d.p != nil {
		return "table " + d.t.String() + " " + d.p.blocks(), d.p.Path, d.p.Rows
	}
	return "table " + d.t.String(), d.t.Path, d.t.Rows
}

// blocks describes the part's range for messages.
func (p Part) blocks() string {
	if p.ToBlock == 0 {
		return fmt.Sprintf("(blocks %d to the end)", p.FromBlock)
	}
	return fmt.Sprintf("(blocks %d to %d)", p.FromBlock, p.ToBlock-1)
}

func lobPath(oid uint32) string { return fmt.Sprintf("lobs/%d", oid) }

// ReadMeta reads (verified) the meta.json of PostgreSQL recovery point m.
func ReadMeta(ctx context.Context, r *repo.Repository, m *snapshot.Manifest) (*Meta, error) {
	var meta Meta
	if err := source.ReadJSON(ctx, r, m, "postgres", metaPath, &meta); err != nil {
		return nil, err
	}
	if meta.Format != MetaFormat {
		return nil, fmt.Errorf("recovery point %s: %s format %d, this coffre reads %d", m.ID.Short(), metaPath, meta.Format, MetaFormat)
	}
	return &meta, nil
}

// files finds the file nodes of a recovery point, loading each directory's
// tree once.
type files struct {
	ctx  context.Context
	r    *repo.Repository
	root crypto.ID
	mu   sync.Mutex
	dirs map[string]*tree.Tree
}

func newFiles(ctx context.Context, r *repo.Repository, root crypto.ID) *files {
	return &files{ctx: ctx, r: r, root: root, dirs: map[string]*tree.Tree{}}
}

func (f *files) dir(p string) (*tree.Tree, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.dirs[p]; ok {
		return t, nil
	}
	var (
		t   *tree.Tree
		err error
	)
	if p == "." {
		t, err = tree.Load(f.ctx, f.r, f.root)
	} else {
		var n *tree.Node
		n, err = stream.Lookup(f.ctx, f.r, f.root, p)
		if err == nil && (n.Type != tree.TypeDir || n.Subtree == nil) {
			err = fmt.Errorf("%s is a %s, not a directory", p, n.Type)
		}
		if err == nil {
			t, err = tree.Load(f.ctx, f.r, *n.Subtree)
		}
	}
	if err != nil {
		return nil, err
	}
	f.dirs[p] = t
	return t, nil
}

// open returns a verifying reader of the file at p.
func (f *files) open(ctx context.Context, p string) (io.Reader, error) {
	t, err := f.dir(path.Dir(p))
	if err != nil {
		return nil, err
	}
	n := t.Find(path.Base(p))
	if n == nil {
		return nil, fmt.Errorf("%s: %w", p, os.ErrNotExist)
	}
	if n.Type != tree.TypeFile {
		return nil, fmt.Errorf("%s is a %s, not a file", p, n.Type)
	}
	return stream.NewReader(ctx, f.r, n), nil
}
