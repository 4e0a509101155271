//go:build !cgo

package repo

import (
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// goEncoder is the pure-Go zstd encoder of builds without cgo. Reference
// levels map to its four speeds as klauspost/compress maps them.
type goEncoder struct{ enc *zstd.Encoder }

func newEncoder(level int) encoder {
	// The options are constant and valid: this constructor cannot fail.
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithEncoderCRC(false),
		zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<20))
	return goEncoder{enc}
}

func (e goEncoder) encode(dst, src []byte) ([]byte, error) { return e.enc.EncodeAll(src, dst), nil }
