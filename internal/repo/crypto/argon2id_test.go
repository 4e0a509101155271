package crypto

import (
	"bytes"
	"encoding/hex"
	"testing"

	"golang.org/x/crypto/argon2"
)

// testBytes returns n deterministic bytes that differ with seed.
func testBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// TestArgon2idMatchesXCrypto checks argon2idKey against x/crypto's IDKey,
// byte for byte, over every combination of time, memory (including sizes
// below the minimum and not a multiple of 4*threads) and threads, with
// password, salt and key lengths cycling through their edge cases.
func TestArgon2idMatchesXCrypto(t *testing.T) {
	memories := []uint32{8, 9, 31, 33, 64, 70, 100, 1024, 1030, 4096}
	pwLens := []int{0, 1, 16, 64}
	saltLens := []int{8, 16, 64}
	keyLens := []uint32{4, 16, 32, 64, 65, 100, 128}
	n := 0
	for tm := uint32(1); tm <= 3; tm++ {
		for _, m := range memories {
			if testing.Short() && m > 1024 {
				continue
			}
			for p := uint8(1); p <= 4; p++ {
				pw := testBytes(pwLens[n%len(pwLens)], byte(n))
				salt := testBytes(saltLens[n/len(pwLens)%len(saltLens)], byte(n+100))
				kl := keyLens[n%len(keyLens)]
				n++
				got := argon2idKey(pw, salt, tm, m, p, kl)
				want := argon2.IDKey(pw, salt, tm, m, p, kl)
				if !bytes.Equal(got, want) {
					t.Errorf("t=%d m=%d p=%d pw=%d salt=%d keyLen=%d:\n got %x\nwant %x", tm, m, p, len(pw), len(salt), kl, got, want)
				}
			}
		}
	}
}

// TestArgon2idInputsAndKeyLengths crosses every password, salt and key length
// at a small memory size, where the hashing around the block filling (H0 and
// the variable-length H') does most of the work.
func TestArgon2idInputsAndKeyLengths(t *testing.T) {
	for _, pwLen := range []int{0, 1, 16, 64} {
		for _, saltLen := range []int{8, 16, 64} {
			for _, kl := range []uint32{4, 16, 32, 63, 64, 65, 96, 100, 128, 129} {
				pw, salt := testBytes(pwLen, 1), testBytes(saltLen, 2)
				got := argon2idKey(pw, salt, 1, 16, 2, kl)
				want := argon2.IDKey(pw, salt, 1, 16, 2, kl)
				if !bytes.Equal(got, want) {
					t.Errorf("pw=%d salt=%d keyLen=%d:\n got %x\nwant %x", pwLen, saltLen, kl, got, want)
				}
			}
		}
	}
}

// TestArgon2idKnownAnswers pins outputs so that a change in both this code
// and x/crypto would still be caught. The first vectors were computed once
// with x/crypto v0.59.0; the last is the Argon2id vector of the PHC reference
// implementation (also in x/crypto's tests).
func TestArgon2idKnownAnswers(t *testing.T) {
	for _, v := range []struct {
		password, salt string
		time, memory   uint32
		threads        uint8
		want           string
	}{
		{"correct horse battery staple", "coffre salt 0001", 1, 256, 2,
			"66f6616fe39f2ce6c67f34c51cc455004a511280de76d5441176b46c0ad2c723"},
		{"pässwörd", "0123456789abcdef", 3, 100, 3,
			"5b3be364bee9d62861d6f6bda913926a4211758b09dc90e1c1b1a3fe89a60b3e1c939dc4dbb69f685a829681276f9912f51accb6e332dc6ceef2035e2aaea540aa9c21e207bacfc96e31123165a80dfc648e307609e41bf36523721f91597f746f1c45ec"},
		{"", "saltsalt", 2, 8, 4,
			"ebc09b943edd8f4584cd25a64d71b82c61f642f40fb61d6f2bfd66639ca0d35541287ad0db0548d5465bb617c217fe08ca84b56573b62bdebe86639f63dabcc5"},
		{"password", "somesalt", 2, 64, 2,
			"350ac37222f436ccb5c0972f1ebd3bf6b958bf2071841362"},
	} {
		want, _ := hex.DecodeString(v.want)
		got := argon2idKey([]byte(v.password), []byte(v.salt), v.time, v.memory, v.threads, uint32(len(want)))
		if !bytes.Equal(got, want) {
			t.Errorf("%q/%q t=%d m=%d p=%d:\n got %x\nwant %x", v.password, v.salt, v.time, v.memory, v.threads, got, want)
		}
	}
}

// BenchmarkArgon2id64MiB compares argon2idKey with x/crypto's IDKey at the
// default passphrase parameters (1 pass, 64 MiB, 2 lanes).
func BenchmarkArgon2id64MiB(b *testing.B) {
	pw, salt := []byte("correct horse battery staple"), testBytes(16, 3)
	for _, f := range []struct {
		name string
		key  func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte
	}{
		{"coffre", argon2idKey},
		{"xcrypto", argon2.IDKey},
	} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.key(pw, salt, 1, 64<<10, 2, 32)
			}
		})
	}
}
