package faulty_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/blobtest"
	"github.com/coffre/coffre/internal/repo/blob/faulty"
	"github.com/coffre/coffre/internal/repo/blob/mem"
)

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Storage { return faulty.New(mem.New()) })
}

var errBoom = errors.New("boom")

func h(name string) blob.Handle { return blob.Handle{Kind: blob.KindData, Name: name} }

func save(ctx context.Context, s blob.Storage, h blob.Handle, data string) error {
	return s.Save(ctx, h, strings.NewReader(data), int64(len(data)))
}

func mustSave(t *testing.T, s blob.Storage, h blob.Handle, data string) {
	t.Helper()
	if err := save(context.Background(), s, h, data); err != nil {
		t.Fatal(err)
	}
}

func TestFailSave(t *testing.T) {
	ctx := context.Background()
	s := faulty.New(mem.New())
	s.FailSave(func(x blob.Handle) error {
		if x.Name == "bad1" {
			return errBoom
		}
		return nil
	})
	if err := save(ctx, s, h("bad1"), "x"); !errors.Is(err, errBoom) {
		t.Errorf("Save(bad1) = %v, want boom", err)
	}
	if _, err := s.Inner().Stat(ctx, h("bad1")); !blob.IsNotExist(err) {
		t.Errorf("failed Save stored the file: %v", err)
	}
	mustSave(t, s, h("good"), "x")
	s.FailSave(nil)
	mustSave(t, s, h("bad1"), "x")
	if got := s.Calls(faulty.OpSave); got != 3 {
		t.Errorf("Calls(save) = %d, want 3", got)
	}
}

func TestFailOthers(t *testing.T) {
	ctx := context.Background()
	s := faulty.New(mem.New())
	mustSave(t, s, h("ab"), "data")
	fail := func(blob.Handle) error { return errBoom }
	s.FailLoad(fail)
	s.FailStat(fail)
	s.FailRemove(fail)
	s.FailList(func(blob.Kind) error { return errBoom })
	if _, err := s.Load(ctx, h("ab"), 0, 0); !errors.Is(err, errBoom) {
		t.Errorf("Load = %v, want boom", err)
	}
	if _, err := s.Stat(ctx, h("ab")); !errors.Is(err, errBoom) {
		t.Errorf("Stat = %v, want boom", err)
	}
	if err := s.Remove(ctx, h("ab")); !errors.Is(err, errBoom) {
		t.Errorf("Remove = %v, want boom", err)
	}
	called := false
	if err := s.List(ctx, blob.KindData, func(blob.FileInfo) error { called = true; return nil }); !errors.Is(err, errBoom) || called {
		t.Errorf("List = %v (fn called %v), want boom before any callback", err, called)
	}
	if _, err := s.Inner().Stat(ctx, h("ab")); err != nil {
		t.Errorf("failed Remove removed the file: %v", err)
	}
	s.Reset()
	if got, err := blob.LoadAll(ctx, s, h("ab")); err != nil || string(got) != "data" {
		t.Errorf("LoadAll after Reset = %q, %v", got, err)
	}
	if err := s.Remove(ctx, h("ab")); err != nil {
		t.Errorf("Remove after Reset: %v", err)
	}
}

func TestShortRead(t *testing.T) {
	ctx := context.Background()
	s := faulty.New(mem.New())
	mustSave(t, s, h("ab"), "0123456789")
	mustSave(t, s, h("cd"), "0123456789")
	s.ShortRead(func(x blob.Handle) bool { return x.Name == "ab" })
	rd, err := s.Load(ctx, h("ab"), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rd)
	rd.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(got) != "01234" {
		t.Errorf("short read = %q, %v; want \"01234\", unexpected EOF", got, err)
	}
	if _, err := blob.LoadRange(ctx, s, h("ab"), 2, 6, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("LoadRange of a short read: %v", err)
	}
	if got, err := blob.LoadAll(ctx, s, h("cd")); err != nil || string(got) != "0123456789" {
		t.Errorf("other file: %q, %v", got, err)
	}
}

func TestCorrupt(t *testing.T) {
	ctx := context.Background()
	s := faulty.New(mem.New())
	want := []byte("0123456789")
	mustSave(t, s, h("ab"), string(want))
	s.Corrupt(func(x blob.Handle) bool { return x.Name == "ab" })
	got, err := blob.LoadAll(ctx, s, h("ab"))
	if err != nil || len(got) != len(want) || bytes.Equal(got, want) {
		t.Fatalf("corrupted load = %q, %v; want 10 different bytes", got, err)
	}
	diff := 0
	for i := range got {
		if got[i] != want[i] {
			diff++
		}
	}
	if diff != 1 {
		t.Errorf("%d bytes differ, want 1", diff)
	}
	if stored, err := blob.LoadAll(ctx, s.Inner(), h("ab")); err != nil || !bytes.Equal(stored, want) {
		t.Errorf("stored file changed: %q, %v", stored, err)
	}
	s.Corrupt(nil)
	if got, err := blob.LoadAll(ctx, s, h("ab")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("after removing the rule: %q, %v", got, err)
	}
}

func TestCrashAfter(t *testing.T) {
	ctx := context.Background()
	inner := mem.New()
	s := faulty.New(inner)
	mustSave(t, s, h("aa"), "before")
	s.CrashAfter(2)
	mustSave(t, s, h("ab"), "1")
	if s.Crashed() {
		t.Fatal("crashed after 1 of 2 saves")
	}
	// A failed Save does not count.
	s.FailSave(func(x blob.Handle) error {
		if x.Name == "zz" {
			return errBoom
		}
		return nil
	})
	if err := save(ctx, s, h("zz"), "x"); !errors.Is(err, errBoom) {
		t.Fatalf("Save(zz) = %v", err)
	}
	mustSave(t, s, h("ac"), "2")
	if !s.Crashed() {
		t.Fatal("not crashed after 2 saves")
	}
	if err := save(ctx, s, h("ad"), "3"); !errors.Is(err, faulty.ErrCrashed) {
		t.Errorf("Save after crash = %v", err)
	}
	if _, err := s.Load(ctx, h("aa"), 0, 0); !errors.Is(err, faulty.ErrCrashed) {
		t.Errorf("Load after crash = %v", err)
	}
	if _, err := s.Stat(ctx, h("aa")); !errors.Is(err, faulty.ErrCrashed) {
		t.Errorf("Stat after crash = %v", err)
	}
	if err := s.List(ctx, blob.KindData, func(blob.FileInfo) error { return nil }); !errors.Is(err, faulty.ErrCrashed) {
		t.Errorf("List after crash = %v", err)
	}
	if err := s.Remove(ctx, h("aa")); !errors.Is(err, faulty.ErrCrashed) {
		t.Errorf("Remove after crash = %v", err)
	}
	if err := s.Close(); !errors.Is(err, faulty.ErrCrashed) {
		t.Errorf("Close after crash = %v", err)
	}
	// What was saved before the crash remains; nothing after.
	var names []string
	if err := inner.List(ctx, blob.KindData, func(fi blob.FileInfo) error { names = append(names, fi.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) != 3 {
		t.Errorf("inner holds %v, want aa, ab, ac", names)
	}
	if _, err := inner.Stat(ctx, h("ad")); !blob.IsNotExist(err) {
		t.Errorf("Save after crash stored the file: %v", err)
	}
	s.Reset()
	if err := save(ctx, s, h("ad"), "3"); err != nil {
		t.Errorf("Save after Reset: %v", err)
	}
}

func TestCrashNow(t *testing.T) {
	s := faulty.New(mem.New())
	s.CrashAfter(0)
	if err := save(context.Background(), s, h("ab"), "x"); !errors.Is(err, faulty.ErrCrashed) {
		t.Errorf("Save = %v", err)
	}
	s.CrashAfter(-1)
	if s.Crashed() {
		t.Error("CrashAfter(-1) left the crash")
	}
}

func TestCrashAfterConcurrent(t *testing.T) {
	ctx := context.Background()
	inner := mem.New()
	s := faulty.New(inner)
	s.CrashAfter(10)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				err := save(ctx, s, h(fmt.Sprintf("w%di%d", w, i)), "x")
				if err != nil && !errors.Is(err, faulty.ErrCrashed) {
					t.Errorf("Save: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	n := 0
	if err := inner.List(ctx, blob.KindData, func(blob.FileInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 10 || !s.Crashed() {
		t.Errorf("%d files saved (crashed %v), want 10 then a crash", n, s.Crashed())
	}
}

func TestCounters(t *testing.T) {
	ctx := context.Background()
	s := faulty.New(mem.New())
	mustSave(t, s, h("ab"), "x")
	mustSave(t, s, blob.Handle{Kind: blob.KindIndex, Name: "ab"}, "x")
	_, _ = blob.LoadAll(ctx, s, h("ab"))
	_, _ = s.Stat(ctx, h("ab"))
	_, _ = s.Stat(ctx, h("missing"))
	_ = s.List(ctx, blob.KindIndex, func(blob.FileInfo) error { return nil })
	_ = s.Remove(ctx, h("ab"))
	for _, c := range []struct {
		op   faulty.Op
		k    blob.Kind
		want int
	}{
		{faulty.OpSave, blob.KindData, 1},
		{faulty.OpSave, blob.KindIndex, 1},
		{faulty.OpLoad, blob.KindData, 1},
		{faulty.OpStat, blob.KindData, 2},
		{faulty.OpList, blob.KindIndex, 1},
		{faulty.OpList, blob.KindData, 0},
		{faulty.OpRemove, blob.KindData, 1},
	} {
		if got := s.CallsOf(c.op, c.k); got != c.want {
			t.Errorf("CallsOf(%v, %v) = %d, want %d", c.op, c.k, got, c.want)
		}
	}
	if got := s.Calls(faulty.OpSave); got != 2 {
		t.Errorf("Calls(save) = %d, want 2", got)
	}
	s.ResetCalls()
	if got := s.Calls(faulty.OpSave); got != 0 {
		t.Errorf("Calls(save) after ResetCalls = %d", got)
	}
	if !strings.HasPrefix(s.Location(), "faulty(") {
		t.Errorf("Location = %q", s.Location())
	}
}
