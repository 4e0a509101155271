package crypto

// This file owns the passphrase KDF: Argon2id (RFC 9106, version 0x13) with
// its block memory outside the Go heap. golang.org/x/crypto/argon2 computes
// the same function, but allocates its 64 MiB as a fresh Go slice that the
// kernel then faults in page by page: 16,000 faults, 0.15-0.3 s on a
// Firecracker VM, several times the cost of the hash itself. Here the blocks
// come from one anonymous mapping, populated up front with huge pages where
// the kernel allows (argon2id_mem_linux.go), that is unmapped as soon as the
// tag is computed, so it neither faults page by page nor stays in the heap
// afterwards. The block filling is plain Go: no assembly.

import (
	"encoding/binary"
	"math/bits"
	"sync"

	"golang.org/x/crypto/blake2b"
)

const (
	argon2Version = 0x13 // RFC 9106 v
	argon2idType  = 2    // RFC 9106 y for Argon2id
	argon2Slices  = 4    // RFC 9106 SL: synchronisation points per pass
	argon2Words   = 128  // 64-bit words in a 1 KiB block
)

// argon2Block is one 1 KiB Argon2 memory block, as 128 little-endian words.
// It holds no pointers, so it may live in memory the Go heap does not manage.
type argon2Block [argon2Words]uint64

// argon2idKey derives keyLen bytes from password and salt with Argon2id
// (version 0x13, no secret, no associated data). Its output and parameter
// semantics are those of golang.org/x/crypto/argon2.IDKey: time passes over
// memoryKiB KiB rounded down to a multiple of 4*threads blocks and at least
// 8*threads, threads lanes filled in parallel. time and threads must be at
// least 1.
func argon2idKey(password, salt []byte, time, memoryKiB uint32, threads uint8, keyLen uint32) []byte {
	if time < 1 {
		panic("argon2id: time must be at least 1")
	}
	if threads < 1 {
		panic("argon2id: threads must be at least 1")
	}
	p := uint32(threads)
	h0 := argon2H0(password, salt, time, memoryKiB, p, keyLen)

	// m' = 4p * floor(m / 4p), at least 2 * 4p so every segment holds at
	// least two blocks.
	blocks := memoryKiB / (argon2Slices * p) * (argon2Slices * p)
	if blocks < 2*argon2Slices*p {
		blocks = 2 * argon2Slices * p
	}
	mem, release := argon2Memory(blocks)
	defer release()

	a := &argon2Fill{
		mem:     mem,
		time:    time,
		blocks:  blocks,
		lanes:   p,
		laneLen: blocks / p,
		segLen:  blocks / p / argon2Slices,
	}
	a.first(&h0)
	for pass := uint32(0); pass < time; pass++ {
		for slice := uint32(0); slice < argon2Slices; slice++ {
			// Segments of one slice depend only on earlier slices and on
			// their own lane, so the lanes run in parallel (RFC 9106 §3.4).
			if p == 1 {
				a.segment(pass, slice, 0)
				continue
			}
			var wg sync.WaitGroup
			for lane := uint32(0); lane < p; lane++ {
				wg.Go(func() { a.segment(pass, slice, lane) })
			}
			wg.Wait()
		}
	}
	return a.final(keyLen)
}

// argon2H0 computes the 64-byte pre-hashing digest H0 of RFC 9106 §3.2,
// with K and X empty. memoryKiB is hashed as given, before rounding.
func argon2H0(password, salt []byte, time, memoryKiB, threads, keyLen uint32) [blake2b.Size]byte {
	h, _ := blake2b.New512(nil)
	var w [4]byte
	le32 := func(v uint32) {
		binary.LittleEndian.PutUint32(w[:], v)
		h.Write(w[:])
	}
	le32(threads)
	le32(keyLen)
	le32(memoryKiB)
	le32(time)
	le32(argon2Version)
	le32(argon2idType)
	le32(uint32(len(password)))
	h.Write(password)
	le32(uint32(len(salt)))
	h.Write(salt)
	le32(0) // secret K
	le32(0) // associated data X
	var h0 [blake2b.Size]byte
	h.Sum(h0[:0])
	return h0
}

// argon2Hash is the variable-length hash H' of RFC 9106 §3.3: it fills out
// with len(out) bytes derived from in.
func argon2Hash(out, in []byte) {
	var t [4]byte
	binary.LittleEndian.PutUint32(t[:], uint32(len(out)))
	if len(out) <= blake2b.Size {
		h, _ := blake2b.New(len(out), nil)
		h.Write(t[:])
		h.Write(in)
		h.Sum(out[:0])
		return
	}
	// V1 = H^64(LE32(T) || A), V(i+1) = H^64(Vi); the output is the first
	// 32 bytes of V1..Vr followed by V(r+1) = H^(T-32r)(Vr) in full, with
	// r = ceil(T/32) - 2.
	r := (len(out)+31)/32 - 2
	h, _ := blake2b.New512(nil)
	h.Write(t[:])
	h.Write(in)
	var v [blake2b.Size]byte
	h.Sum(v[:0])
	for i := 1; i < r; i++ {
		copy(out, v[:32])
		out = out[32:]
		h.Reset()
		h.Write(v[:])
		h.Sum(v[:0])
	}
	copy(out, v[:32])
	out = out[32:]
	h, _ = blake2b.New(len(out), nil)
	h.Write(v[:])
	h.Sum(out[:0])
}

// argon2Fill is one Argon2id computation: the memory and its shape.
type argon2Fill struct {
	mem     []argon2Block // blocks = lanes * laneLen, lane after lane
	time    uint32        // passes t
	blocks  uint32        // m', rounded memory in blocks
	lanes   uint32        // p
	laneLen uint32        // q = m' / p
	segLen  uint32        // q / 4
}

// first computes the first two blocks of every lane from H0 (RFC 9106 §3.2
// steps 3 and 4).
func (a *argon2Fill) first(h0 *[blake2b.Size]byte) {
	var in [blake2b.Size + 8]byte
	copy(in[:], h0[:])
	var buf [8 * argon2Words]byte
	for lane := uint32(0); lane < a.lanes; lane++ {
		binary.LittleEndian.PutUint32(in[blake2b.Size+4:], lane)
		for j := uint32(0); j < 2; j++ {
			binary.LittleEndian.PutUint32(in[blake2b.Size:], j)
			argon2Hash(buf[:], in[:])
			b := &a.mem[lane*a.laneLen+j]
			for i := range b {
				b[i] = binary.LittleEndian.Uint64(buf[8*i:])
			}
		}
	}
}

// segment fills the segment of lane in slice during pass (RFC 9106 §3.2
// steps 5 and 6, §3.4). Argon2id takes its reference indices from address
// blocks (data-independent) in the first two slices of the first pass, and
// from the previous block (data-dependent) everywhere else.
func (a *argon2Fill) segment(pass, slice, lane uint32) {
	independent := pass == 0 && slice < argon2Slices/2
	var input, addresses, zero argon2Block
	if independent {
		input[0] = uint64(pass)
		input[1] = uint64(lane)
		input[2] = uint64(slice)
		input[3] = uint64(a.blocks)
		input[4] = uint64(a.time)
		input[5] = argon2idType
	}
	start := uint32(0)
	if pass == 0 && slice == 0 {
		start = 2 // blocks 0 and 1 come from H0
	}
	laneStart := lane * a.laneLen
	for i := start; i < a.segLen; i++ {
		cur := laneStart + slice*a.segLen + i
		prev := cur - 1
		if cur == laneStart {
			prev = laneStart + a.laneLen - 1 // wrap to the lane's last block
		}
		var j uint64 // J1 in the low half, J2 in the high half
		if independent {
			// Address block number k (counter k, from 1) covers the
			// segment's indices 128(k-1) to 128k-1.
			if i == start || i%argon2Words == 0 {
				input[6]++
				compress(&addresses, &zero, &input, false)
				compress(&addresses, &zero, &addresses, false)
			}
			j = addresses[i%argon2Words]
		} else {
			j = a.mem[prev][0]
		}
		ref := a.refIndex(pass, slice, lane, i, j)
		compress(&a.mem[cur], &a.mem[prev], &a.mem[ref], pass > 0)
	}
}

// refIndex maps the pseudo-random J1 || J2 of the block at index i of a
// segment to the index in memory of its reference block (RFC 9106 §3.4.1.2).
func (a *argon2Fill) refIndex(pass, slice, lane, i uint32, j uint64) uint32 {
	j1 := j & 0xffffffff
	refLane := uint32(j>>32) % a.lanes
	if pass == 0 && slice == 0 {
		refLane = lane
	}
	// W, the set of blocks to choose from, is a run of |W| blocks in
	// refLane starting at wStart: all finished blocks of the lane but the
	// previous one when refLane is ours, only those of finished segments
	// (less the last one when i == 0) when it is another lane. After the
	// first pass "finished" means the last three segments plus ours.
	var size, wStart uint32
	if pass == 0 {
		size = slice * a.segLen
	} else {
		size = (argon2Slices - 1) * a.segLen
		wStart = (slice + 1) % argon2Slices * a.segLen
	}
	if refLane == lane {
		size += i - 1
	} else if i == 0 {
		size--
	}
	// Map J1 onto W, biased towards recent blocks.
	x := j1 * j1 >> 32
	y := uint64(size) * x >> 32
	z := uint64(size) - 1 - y
	return refLane*a.laneLen + uint32((uint64(wStart)+z)%uint64(a.laneLen))
}

// final XORs the last blocks of the lanes and hashes the result to keyLen
// bytes (RFC 9106 §3.2 steps 7 and 8).
func (a *argon2Fill) final(keyLen uint32) []byte {
	c := a.mem[a.laneLen-1]
	for lane := uint32(1); lane < a.lanes; lane++ {
		last := &a.mem[lane*a.laneLen+a.laneLen-1]
		for i := range c {
			c[i] ^= last[i]
		}
	}
	var buf [8 * argon2Words]byte
	for i, w := range c {
		binary.LittleEndian.PutUint64(buf[8*i:], w)
	}
	key := make([]byte, keyLen)
	argon2Hash(key, buf[:])
	return key
}

// compress is the compression function G of RFC 9106 §3.5: with R = x ^ y,
// it applies the permutation P to the rows of R, then to its columns, and
// stores the result XOR R in dst, or XORs it into dst when xor is set
// (passes after the first, version 0x13). dst may alias x or y.
func compress(dst, x, y *argon2Block, xor bool) {
	var r, q argon2Block
	for i := range r {
		r[i] = x[i] ^ y[i]
	}
	q = r
	// R as an 8x8 matrix of 16-byte registers: row k is words 16k..16k+15,
	// column k is words 2k, 2k+1, 2k+16, 2k+17, ..., 2k+112, 2k+113.
	for k := 0; k < 8; k++ {
		permute((*[16]uint64)(q[16*k:]))
	}
	for k := 0; k < 8; k++ {
		var col [16]uint64
		for n := 0; n < 8; n++ {
			col[2*n], col[2*n+1] = q[16*n+2*k], q[16*n+2*k+1]
		}
		permute(&col)
		for n := 0; n < 8; n++ {
			q[16*n+2*k], q[16*n+2*k+1] = col[2*n], col[2*n+1]
		}
	}
	if xor {
		for i := range dst {
			dst[i] ^= q[i] ^ r[i]
		}
	} else {
		for i := range dst {
			dst[i] = q[i] ^ r[i]
		}
	}
}

// permute is the permutation P of RFC 9106 §3.6 on 16 words v0..v15: GB on
// the columns of the 4x4 word matrix, then on its diagonals. Each GB is
// written as its two halves, which the compiler inlines.
func permute(v *[16]uint64) {
	v0, v1, v2, v3 := v[0], v[1], v[2], v[3]
	v4, v5, v6, v7 := v[4], v[5], v[6], v[7]
	v8, v9, v10, v11 := v[8], v[9], v[10], v[11]
	v12, v13, v14, v15 := v[12], v[13], v[14], v[15]

	v0, v4, v8, v12 = gbHalf(v0, v4, v8, v12, 32, 24)
	v0, v4, v8, v12 = gbHalf(v0, v4, v8, v12, 16, 63)
	v1, v5, v9, v13 = gbHalf(v1, v5, v9, v13, 32, 24)
	v1, v5, v9, v13 = gbHalf(v1, v5, v9, v13, 16, 63)
	v2, v6, v10, v14 = gbHalf(v2, v6, v10, v14, 32, 24)
	v2, v6, v10, v14 = gbHalf(v2, v6, v10, v14, 16, 63)
	v3, v7, v11, v15 = gbHalf(v3, v7, v11, v15, 32, 24)
	v3, v7, v11, v15 = gbHalf(v3, v7, v11, v15, 16, 63)

	v0, v5, v10, v15 = gbHalf(v0, v5, v10, v15, 32, 24)
	v0, v5, v10, v15 = gbHalf(v0, v5, v10, v15, 16, 63)
	v1, v6, v11, v12 = gbHalf(v1, v6, v11, v12, 32, 24)
	v1, v6, v11, v12 = gbHalf(v1, v6, v11, v12, 16, 63)
	v2, v7, v8, v13 = gbHalf(v2, v7, v8, v13, 32, 24)
	v2, v7, v8, v13 = gbHalf(v2, v7, v8, v13, 16, 63)
	v3, v4, v9, v14 = gbHalf(v3, v4, v9, v14, 32, 24)
	v3, v4, v9, v14 = gbHalf(v3, v4, v9, v14, 16, 63)

	v[0], v[1], v[2], v[3] = v0, v1, v2, v3
	v[4], v[5], v[6], v[7] = v4, v5, v6, v7
	v[8], v[9], v[10], v[11] = v8, v9, v10, v11
	v[12], v[13], v[14], v[15] = v12, v13, v14, v15
}

// gbHalf is one half of the function GB of RFC 9106 §3.6 (BLAKE2b's G with
// each a + b replaced by BlaMka's a + b + 2 * lo32(a) * lo32(b)): GB(a, b, c,
// d) is gbHalf with rotations 32 and 24, then with 16 and 63. d is rotated
// right by rd bits, b by rb.
func gbHalf(a, b, c, d uint64, rd, rb int) (uint64, uint64, uint64, uint64) {
	a += b + 2*uint64(uint32(a))*uint64(uint32(b))
	d = bits.RotateLeft64(d^a, -rd)
	c += d + 2*uint64(uint32(c))*uint64(uint32(d))
	b = bits.RotateLeft64(b^c, -rb)
	return a, b, c, d
}

// argon2HeapMemory returns n zeroed blocks from the Go heap, where the
// garbage collector reclaims them; release does nothing.
func argon2HeapMemory(n uint32) ([]argon2Block, func()) {
	return make([]argon2Block, n), func() {}
}
