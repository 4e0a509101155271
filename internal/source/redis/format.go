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
//	                  CRC64 little-endian); on the PSYNC path the same bytes,
//	                  built from the snapshot (see rdb.go)
//	trailer  u32      0xFFFFFFFF
//	         u64      number of records in the file
//
// A file without its trailer, or whose trailer count differs from the records
// read, is truncated and refused. The same key may appear twice in one file
// (SCAN may return a key twice while the server resizes its hash table); the
// later record wins on restore and meta.json counts the key once.
//
// Records follow SCAN order, filtered to the shard (PSYNC: the snapshot's
// order, which walks the same hash table): for an unchanged keyspace that
// order is stable (it walks the hash table's buckets), so unchanged keys
// produce unchanged bytes and the next day's backup deduplicates; sorting
// would need the whole keyspace in memory. A rehash of the source's table
// (the key count crossing a power of two) changes the order once. A PSYNC
// point never holds a key twice.
//
// The expiry is absolute, not the PTTL read at backup time, for the same
// reason: an unchanged key with a TTL keeps the same record day after day,
// whereas its PTTL shrinks with every backup. It comes from PEXPIRETIME
// (Redis ≥ 7.0) or, on older servers, from TIME + PTTL in the same pipeline
// (exact to the millisecond of the pipeline, so such keys deduplicate less);
// on the PSYNC path, from the snapshot, which holds absolute expiries.
// Restore gives each key the TTL it had left when the backup started
// (expire-at − meta.json's started_ms), see Restore.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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

// appendRecordHead appends the head of a record (key length, key, expiry and
// a zero payload length) to dst, for records assembled in memory (the PSYNC
// path); the payload follows, and setPayloadLen then fills in its length at
// lenAt. Such records reach a shard file through writeEncoded.
func appendRecordHead(dst, key []byte, expireAt int64) (out []byte, lenAt int, err error) {
	if len(key) >= maxKeyLen {
		return dst, 0, fmt.Errorf("key of %d bytes is longer than Redis allows", len(key))
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(key)))
	dst = append(dst, key...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(expireAt))
	lenAt = len(dst)
	return binary.BigEndian.AppendUint64(dst, 0), lenAt, nil
}

// setPayloadLen writes the payload length n into a record head at lenAt.
func setPayloadLen(rec []byte, lenAt, n int) { binary.BigEndian.PutUint64(rec[lenAt:], uint64(n)) }

// writeEncoded writes n records encoded with appendRecordHead and their
// payloads.
func (rw *recordWriter) writeEncoded(b []byte, n int) error {
	if _, err := rw.w.Write(b); err != nil {
		return err
	}
	rw.n += uint64(n)
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
// final xor) that ends every DUMP payload and RDB file; slicing by 8 bytes.
func crc64(crc uint64, p []byte) uint64 {
	t := &crc64Tables
	for len(p) >= 8 {
		crc ^= binary.LittleEndian.Uint64(p)
		crc = t[7][crc&0xff] ^ t[6][crc>>8&0xff] ^ t[5][crc>>16&0xff] ^ t[4][crc>>24&0xff] ^
			t[3][crc>>32&0xff] ^ t[2][crc>>40&0xff] ^ t[1][crc>>48&0xff] ^ t[0][crc>>56]
		p = p[8:]
	}
	for _, b := range p {
		crc = t[0][byte(crc)^b] ^ crc>>8
	}
	return crc
}

// crc64Tables[k][b] is the CRC of byte b followed by k zero bytes.
var crc64Tables = func() (t [8][256]uint64) {
	const poly = 0x95ac9329ac4bc9b5 // Jones, reflected
	for i := range 256 {
		c := uint64(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ poly
			} else {
				c >>= 1
			}
		}
		t[0][i] = c
	}
	for k := 1; k < 8; k++ {
		for i := range 256 {
			t[k][i] = t[k-1][i]>>8 ^ t[0][byte(t[k-1][i])]
		}
	}
	return t
}()

// ---------------------------------------------------------------- key slots

// keySlot returns the Redis Cluster hash slot of key (CRC16/XMODEM of the
// key, or of the first non-empty {hash tag}, modulo 16384).
func keySlot[K ~string | ~[]byte](key K) int {
	start, end := 0, len(key)
	for i := 0; i < len(key); i++ {
		if key[i] != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j > i+1 {
					start, end = i+1, j
				}
				break
			}
		}
		break
	}
	var crc uint16
	for i := start; i < end; i++ {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^key[i]]
	}
	return int(crc) & 16383
}

// crc16Table is CRC16/XMODEM (polynomial 0x1021) by byte.
var crc16Table = func() (t [256]uint16) {
	for i := range 256 {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// shardOf maps key to one of n shards by its slot.
func shardOf[K ~string | ~[]byte](key K, n int) int { return keySlot(key) * n / 16384 }

func shardPath(db, shard int) string { return fmt.Sprintf("db%d/shard-%02d.rdbdump", db, shard) }
