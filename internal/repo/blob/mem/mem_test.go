package mem_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/blobtest"
	"github.com/coffre/coffre/internal/repo/blob/mem"
)

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Storage { return mem.New() })
}

func BenchmarkMem(b *testing.B) {
	blobtest.RunBench(b, func(b *testing.B) blob.Storage { return mem.New() })
}

func TestClock(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	c := clock.NewFake(t0)
	s := mem.New(mem.WithClock(c))
	h := blob.Handle{Kind: blob.KindLock, Name: "abc"}
	if err := s.Save(ctx, h, bytes.NewReader([]byte("x")), 1); err != nil {
		t.Fatal(err)
	}
	fi, err := s.Stat(ctx, h)
	if err != nil || !fi.ModTime.Equal(t0) {
		t.Fatalf("Stat = %v, %v; want ModTime %v", fi.ModTime, err, t0)
	}
	c.Advance(time.Hour)
	if err := s.Save(ctx, h, bytes.NewReader([]byte("y")), 1); err != nil {
		t.Fatal(err)
	}
	err = s.List(ctx, blob.KindLock, func(fi blob.FileInfo) error {
		if !fi.ModTime.Equal(t0.Add(time.Hour)) {
			t.Errorf("List ModTime = %v, want %v", fi.ModTime, t0.Add(time.Hour))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestClosed(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	h := blob.Handle{Kind: blob.KindLock, Name: "abc"}
	if err := s.Save(ctx, h, bytes.NewReader([]byte("x")), 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Stat(ctx, h); err == nil || blob.IsNotExist(err) {
		t.Errorf("Stat after Close: %v, want a closed error", err)
	}
	if err := s.Save(ctx, h, bytes.NewReader([]byte("x")), 1); err == nil {
		t.Error("Save after Close succeeded")
	}
}

func TestConfigName(t *testing.T) {
	s := mem.New()
	h := blob.Handle{Kind: blob.KindConfig, Name: "other"}
	if err := s.Save(context.Background(), h, bytes.NewReader(nil), 0); err == nil {
		t.Error("Save of a config named other than config succeeded")
	}
}
