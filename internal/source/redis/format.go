package redis

// Format of a Redis recovery point, version 1.
//
// # Layout
//
//	meta.json                  what the backup saw (see meta): server version and run id,
//	                           backup start on the server's clock, and per database the
//	                           key count, the files and a sample of keys with digests
//	db<N>/shard-<SS>.rdbdump   the keys of database N whose cluster slot falls in shard SS
//
// A key's shard is its Redis Cluster hash slot (CRC16 of the key or of its
// {hash tag}, modulo 16384) scaled to the shard count: shard = slot*shards/16384.
// The shard count is the adapter's Parallel at backup time and is recorded in
// meta.json; a change of Parallel re-shuffles keys between files once.
//
// # Shard file
//
// A shard file is a header, records, and a trailer; integers are big-endian.
//
//	header   8 bytes  "CRDUMP\x00\x01" (magic; the last byte is the format version)
//	record   u32      key length L (0 ≤ L < 0xFFFFFFFF)
//	         L bytes  key
//	         i64      expire-at: absolute expiry in Unix milliseconds on the source
//	                  server's clock, -1 when the key has no expiry
//	         u64      payload length P
//	         P bytes  payload: the reply of DUMP key, verbatim (type byte, RDB
//	                  serialisation of the value, RDB version u16 little-endian,
//	                  CRC64 little-endian)
//	trailer  u32      0xFFFFFFFF
//	         u64      number of records in the file
//
// A file without its trailer, or whose trailer count differs from the records
// read, is truncated and refused. The same key may appear twice in one file
// (SCAN may return a key twice while the server resizes its hash table); the
// later record wins on restore and meta.json counts the key once.
//
// Records follow SCAN order, filtered to the shard: for an unchanged keyspace
// SCAN order is stable (it walks the hash table's buckets), so unchanged keys
// produce unchanged bytes and the next day's backup deduplicates; sorting
// would need the whole keyspace in memory. A rehash of the source's table
// (the key count crossing a power of two) changes the order once.
//
// The expiry is absolute, not the PTTL read at backup time, for the same
// reason: an unchanged key with a TTL keeps the same record day after day,
// whereas its PTTL shrinks with every backup. It comes from PEXPIRETIME
// (Redis ≥ 7.0) or, on older servers, from TIME + PTTL in the same pipeline
// (exact to the millisecond of the pipeline, so such keys deduplicate less).
// Restore gives each key the TTL it had left when the backup started
// (expire-at − meta.json's started_ms), see Restore.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

const (
	magic       = "CRDUMP\x00\x01"
	trailerMark = math.MaxUint32
	// maxKeyLen and maxPayloadLen bound what the reader allocates for one
	// record: Redis keys are at most 512 MiB, and a payload larger than
	// maxPayloadLen could not be sent to a server in one RESTORE anyway.
	maxKeyLen     = 512 << 20
	maxPayloadLen = 4 << 30
)

// record is one key of a shard file.
type record struct {
	Key      []byte
	ExpireAt int64 // Unix ms on the source's clock; -1: no expiry
	Payload  []byte
}

// recordWriter writes a shard file.
type recordWriter struct {
	w   *bufio.Writer
	n   uint64
	buf [12]byte
}

func newRecordWriter(w io.Writer) (*recordWriter, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.WriteString(magic); err != nil {
		return nil, err
	}
	return &recordWriter{w: bw}, nil
}

func (rw *recordWriter) write(key, payload []byte, expireAt int64) error {
	if len(key) >= maxKeyLen {
		return fmt.Errorf("key of %d bytes is longer than Redis allows", len(key))
	}
	binary.BigEndian.PutUint32(rw.buf[:4], uint32(len(key)))
	if _, err := rw.w.Write(rw.buf[:4]); err != nil {
		return err
	}
	if _, err := rw.w.Write(key); err != nil {
		return err
	}
	binary.BigEndian.PutUint64(rw.buf[:8], uint64(expireAt))
	if _, err := rw.w.Write(rw.buf[:8]); err != nil {
		return err
	}
	binary.BigEndian.PutUint64(rw.buf[:8], uint64(len(payload)))
	if _, err := rw.w.Write(rw.buf[:8]); err != nil {
		return err
	}
	if _, err := rw.w.Write(payload); err != nil {
		return err
	}
	rw.n++
	return nil
}

// close writes the trailer and flushes; it does not close the underlying writer.
func (rw *recordWriter) close() error {
	binary.BigEndian.PutUint32(rw.buf[:4], trailerMark)
	binary.BigEndian.PutUint64(rw.buf[4:12], rw.n)
	if _, err := rw.w.Write(rw.buf[:12]); err != nil {
		return err
	}
	return rw.w.Flush()
}

// recordReader reads a shard file.
type recordReader struct {
	r    *bufio.Reader
	name string
	n    uint64
	done bool
}

var errCorrupt = errors.New("malformed shard file")

func newRecordReader(r io.Reader, name string) (*recordReader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var h [len(magic)]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, fmt.Errorf("%s: read header: %w", name, unexpected(err))
	}
	if string(h[:]) != magic {
		if string(h[:len(magic)-1]) == magic[:len(magic)-1] {
			return nil, fmt.Errorf("%s: shard format version %d, this build reads version %d: upgrade coffre", name, h[len(magic)-1], magic[len(magic)-1])
		}
		return nil, fmt.Errorf("%s: not a redis shard file (bad header): %w", name, errCorrupt)
	}
	return &recordReader{r: br, name: name}, nil
}

// next returns the next record, reusing rec's buffers, or io.EOF after a
// valid trailer.
func (rr *recordReader) next(rec *record) error {
	if rr.done {
		return io.EOF
	}
	var b [8]byte
	if _, err := io.ReadFull(rr.r, b[:4]); err != nil {
		return fmt.Errorf("%s: record %d: %w", rr.name, rr.n, unexpected(err))
	}
	kl := binary.BigEndian.Uint32(b[:4])
	if kl == trailerMark {
		if _, err := io.ReadFull(rr.r, b[:8]); err != nil {
			return fmt.Errorf("%s: trailer: %w", rr.name, unexpected(err))
		}
		if n := binary.BigEndian.Uint64(b[:8]); n != rr.n {
			return fmt.Errorf("%s: trailer counts %d records, read %d: %w", rr.name, n, rr.n, errCorrupt)
		}
		if _, err := rr.r.ReadByte(); err != io.EOF {
			return fmt.Errorf("%s: data after the trailer: %w", rr.name, errCorrupt)
		}
		rr.done = true
		return io.EOF
	}
	if kl >= maxKeyLen {
		return fmt.Errorf("%s: record %d: key length %d: %w", rr.name, rr.n, kl, errCorrupt)
	}
	var err error
	if rec.Key, err = readN(rr.r, rec.Key, uint64(kl)); err != nil {
		return fmt.Errorf("%s: record %d: %w", rr.name, rr.n, err)
	}
	if _, err := io.ReadFull(rr.r, b[:8]); err != nil {
		return fmt.Errorf("%s: record %d: %w", rr.name, rr.n, unexpected(err))
	}
	rec.ExpireAt = int64(binary.BigEndian.Uint64(b[:8]))
	if rec.ExpireAt < -1 {
		return fmt.Errorf("%s: record %d: expiry %d: %w", rr.name, rr.n, rec.ExpireAt, errCorrupt)
	}
	if _, err := io.ReadFull(rr.r, b[:8]); err != nil {
		return fmt.Errorf("%s: record %d: %w", rr.name, rr.n, unexpected(err))
	}
	pl := binary.BigEndian.Uint64(b[:8])
	if pl > maxPayloadLen || pl < 10 {
		return fmt.Errorf("%s: record %d: payload length %d: %w", rr.name, rr.n, pl, errCorrupt)
	}
	if rec.Payload, err = readN(rr.r, rec.Payload, pl); err != nil {
		return fmt.Errorf("%s: record %d: %w", rr.name, rr.n, err)
	}
	rr.n++
	return nil
}

// readN reads n bytes into buf (grown as needed). It grows the buffer in
// steps so that a corrupt length cannot allocate more than the data holds.
func readN(r io.Reader, buf []byte, n uint64) ([]byte, error) {
	buf = buf[:0]
	const step = 1 << 20
	for uint64(len(buf)) < n {
		k := min(n-uint64(len(buf)), step)
		start := len(buf)
		buf = append(buf, make([]byte, k)...)
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			return buf, unexpected(err)
		}
	}
	return buf, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return fmt.Errorf("truncated: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// ---------------------------------------------------------------- DUMP payloads

// payloadRDBVersion returns the RDB version a DUMP payload was written with.
func payloadRDBVersion(p []byte) int {
	if len(p) < 10 {
		return -1
	}
	return int(binary.LittleEndian.Uint16(p[len(p)-10:]))
}

// payloadType names the RDB object type of a DUMP payload's first byte.
func payloadType(p []byte) string {
	if len(p) == 0 {
		return "empty payload"
	}
	names := map[byte]string{
		0: "string", 1: "list", 2: "set", 3: "zset", 4: "hash", 5: "zset",
		6: "module", 7: "module", 9: "hash (zipmap)", 10: "list (ziplist)",
		11: "set (intset)", 12: "zset (ziplist)", 13: "hash (ziplist)",
		14: "list (quicklist)", 15: "stream", 16: "hash (listpack)",
		17: "zset (listpack)", 18: "list (quicklist v2)", 19: "stream (v2)",
		20: "set (listpack)", 21: "stream (v3)",
	}
	if n, ok := names[p[0]]; ok {
		return fmt.Sprintf("%s, RDB type %d", n, p[0])
	}
	return fmt.Sprintf("RDB type %d, unknown to this build", p[0])
}

// rdbVersionsByRedis maps the first Redis release writing each RDB version.
var rdbVersionsByRedis = []struct {
	rdb   int
	redis string
}{
	{6, "2.6"}, {7, "3.2"}, {8, "4.0"}, {9, "5.0"}, {10, "7.0"}, {11, "7.2"}, {12, "7.4"},
}

// redisForRDB says which Redis release writes RDB version v.
func redisForRDB(v int) string {
	for i := len(rdbVersionsByRedis) - 1; i >= 0; i-- {
		if rdbVersionsByRedis[i].rdb == v {
			return "Redis " + rdbVersionsByRedis[i].redis + " or later"
		}
	}
	return "a Redis release newer than this build knows"
}

// maxRDBFor returns the newest RDB version Redis version ver (e.g. "7.0.15")
// reads, or -1 if unknown.
func maxRDBFor(ver string) int {
	var major, minor int
	if _, err := fmt.Sscanf(ver, "%d.%d", &major, &minor); err != nil {
		return -1
	}
	best := -1
	for _, e := range rdbVersionsByRedis {
		var ma, mi int
		fmt.Sscanf(e.redis, "%d.%d", &ma, &mi)
		if major > ma || (major == ma && minor >= mi) {
			best = e.rdb
		}
	}
	return best
}

// crc64 is Redis's CRC-64 (Jones polynomial, reflected, initial value 0, no
// final xor) that ends every DUMP payload.
func crc64(crc uint64, p []byte) uint64 {
	for _, b := range p {
		crc ^= uint64(b)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0x95ac9329ac4bc9b5
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// ---------------------------------------------------------------- key slots

// keySlot returns the Redis Cluster hash slot of key (CRC16/XMODEM of the
// key, or of the first non-empty {hash tag}, modulo 16384).
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) & 16383
}

// shardOf maps key to one of n shards by its slot.
func shardOf(key string, n int) int { return keySlot(key) * n / 16384 }

func shardPath(db, shard int) string { return fmt.Sprintf("db%d/shard-%02d.rdbdump", db, shard) }
