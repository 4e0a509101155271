// Package faulty owns a fault-injecting blob.Storage wrapper, a test fake for
// crash and error-path tests; it is never used outside tests.
package faulty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/coffre/coffre/internal/repo/blob"
)

// ErrCrashed is returned by every call once the simulated crash of CrashAfter
// happened.
var ErrCrashed = errors.New("faulty storage: simulated crash")

// Op names a Storage operation, for the call counters.
type Op string

// The operations counted.
const (
	OpSave   Op = "save"
	OpLoad   Op = "load"
	OpStat   Op = "stat"
	OpList   Op = "list"
	OpRemove Op = "remove"
)

type counterKey struct {
	op   Op
	kind blob.Kind
}

// Storage is a test fake wrapping a real Storage and injecting faults. With no
// rules set it behaves exactly like the wrapped storage. Rules may be changed
// at any time; it is safe for concurrent use.
type Storage struct {
	inner blob.Storage

	mu          sync.Mutex
	failSave    func(blob.Handle) error
	failLoad    func(blob.Handle) error
	failStat    func(blob.Handle) error
	failRemove  func(blob.Handle) error
	failList    func(blob.Kind) error
	shortRead   func(blob.Handle) bool
	corrupt     func(blob.Handle) bool
	crashArmed  bool
	crashBudget int // Saves left before the crash (reserved at the start of a Save)
	crashed     bool
	calls       map[counterKey]int
}

var _ blob.Storage = (*Storage)(nil)

// New wraps inner with no faults set.
func New(inner blob.Storage) *Storage {
	return &Storage{inner: inner, calls: make(map[counterKey]int)}
}

// Inner returns the wrapped storage, e.g. to inspect what survived a crash.
func (s *Storage) Inner() blob.Storage { return s.inner }

// FailSave makes Save return fn(h) (wrapped) without storing anything when
// fn(h) is not nil. A nil fn removes the rule.
func (s *Storage) FailSave(fn func(h blob.Handle) error) { s.mu.Lock(); s.failSave = fn; s.mu.Unlock() }

// FailLoad makes Load return fn(h) (wrapped) when it is not nil. A nil fn
// removes the rule.
func (s *Storage) FailLoad(fn func(h blob.Handle) error) { s.mu.Lock(); s.failLoad = fn; s.mu.Unlock() }

// FailStat makes Stat return fn(h) (wrapped) when it is not nil. A nil fn
// removes the rule.
func (s *Storage) FailStat(fn func(h blob.Handle) error) { s.mu.Lock(); s.failStat = fn; s.mu.Unlock() }

// FailRemove makes Remove return fn(h) (wrapped) without removing anything
// when it is not nil. A nil fn removes the rule.
func (s *Storage) FailRemove(fn func(h blob.Handle) error) {
	s.mu.Lock()
	s.failRemove = fn
	s.mu.Unlock()
}

// FailList makes List return fn(k) (wrapped) before calling its callback when
// it is not nil. A nil fn removes the rule.
func (s *Storage) FailList(fn func(k blob.Kind) error) { s.mu.Lock(); s.failList = fn; s.mu.Unlock() }

// ShortRead makes Load of the handles for which fn returns true return a
// reader that yields only the first half of the requested bytes and then
// fails with io.ErrUnexpectedEOF. A nil fn removes the rule.
func (s *Storage) ShortRead(fn func(h blob.Handle) bool) {
	s.mu.Lock()
	s.shortRead = fn
	s.mu.Unlock()
}

// Corrupt makes Load of the handles for which fn returns true return data
// with one byte flipped (the middle byte of the requested range; empty ranges
// are returned unchanged). The stored file is not changed. A nil fn removes
// the rule.
func (s *Storage) Corrupt(fn func(h blob.Handle) bool) { s.mu.Lock(); s.corrupt = fn; s.mu.Unlock() }

// CrashAfter simulates a process killed after n more successful Saves
// (counted from this call): the nth Save succeeds, then every further call
// (including Close) returns ErrCrashed. Files saved before the crash remain in
// the wrapped storage. Concurrent Saves never let more than n succeed.
// CrashAfter(0) crashes now. A negative n disarms the crash.
func (s *Storage) CrashAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.crashArmed = n >= 0
	s.crashBudget = max(n, 0)
	s.crashed = n == 0
}

// Crashed reports whether the simulated crash happened.
func (s *Storage) Crashed() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.crashed }

// Reset removes every rule and undoes a crash; the counters are kept.
func (s *Storage) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failSave, s.failLoad, s.failStat, s.failRemove, s.failList = nil, nil, nil, nil, nil
	s.shortRead, s.corrupt = nil, nil
	s.crashArmed, s.crashBudget, s.crashed = false, 0, false
}

// Calls returns how many times op was called, for all kinds, including calls
// that failed.
func (s *Storage) Calls(op Op) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, c := range s.calls {
		if k.op == op {
			n += c
		}
	}
	return n
}

// CallsOf returns how many times op was called for files of kind k (List
// counts for the kind listed), including calls that failed.
func (s *Storage) CallsOf(op Op, k blob.Kind) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[counterKey{op, k}]
}

// ResetCalls sets every counter to zero.
func (s *Storage) ResetCalls() { s.mu.Lock(); clear(s.calls); s.mu.Unlock() }

// enter counts a call and reports ErrCrashed after the crash.
func (s *Storage) enter(op Op, k blob.Kind) error {
	s.calls[counterKey{op, k}]++
	if s.crashed {
		return ErrCrashed
	}
	return nil
}

// Location returns the wrapped location, marked as faulty.
func (s *Storage) Location() string { return "faulty(" + s.inner.Location() + ")" }

// Save stores through the wrapped storage unless a rule or the crash says
// otherwise.
func (s *Storage) Save(ctx context.Context, h blob.Handle, rd io.Reader, size int64) error {
	s.mu.Lock()
	if err := s.enter(OpSave, h.Kind); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("save %v: %w", h, err)
	}
	fail := s.failSave
	reserved := false
	if s.crashArmed {
		if s.crashBudget == 0 {
			s.crashed = true
			s.mu.Unlock()
			return fmt.Errorf("save %v: %w", h, ErrCrashed)
		}
		s.crashBudget--
		reserved = true
	}
	s.mu.Unlock()

	var err error
	if fail != nil {
		if ferr := fail(h); ferr != nil {
			err = fmt.Errorf("save %v: %w", h, ferr)
		}
	}
	if err == nil {
		err = s.inner.Save(ctx, h, rd, size)
	}
	if reserved {
		s.mu.Lock()
		if err != nil {
			s.crashBudget++
		} else if s.crashArmed && s.crashBudget == 0 {
			s.crashed = true
		}
		s.mu.Unlock()
	}
	return err
}

// Load reads through the wrapped storage, applying FailLoad, Corrupt and
// ShortRead.
func (s *Storage) Load(ctx context.Context, h blob.Handle, offset, length int64) (io.ReadCloser, error) {
	s.mu.Lock()
	if err := s.enter(OpLoad, h.Kind); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	fail, short, corrupt := s.failLoad, s.shortRead, s.corrupt
	s.mu.Unlock()

	if fail != nil {
		if err := fail(h); err != nil {
			return nil, fmt.Errorf("load %v: %w", h, err)
		}
	}
	rd, err := s.inner.Load(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	doShort := short != nil && short(h)
	doCorrupt := corrupt != nil && corrupt(h)
	if !doShort && !doCorrupt {
		return rd, nil
	}
	data, err := io.ReadAll(rd)
	rd.Close()
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	if doCorrupt && len(data) > 0 {
		data[len(data)/2] ^= 0xff
	}
	if doShort {
		return io.NopCloser(io.MultiReader(bytes.NewReader(data[:len(data)/2]), errorReader{io.ErrUnexpectedEOF})), nil
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

type errorReader struct{ err error }

func (r errorReader) Read([]byte) (int, error) { return 0, r.err }

// Stat passes through unless FailStat or the crash says otherwise.
func (s *Storage) Stat(ctx context.Context, h blob.Handle) (blob.FileInfo, error) {
	s.mu.Lock()
	if err := s.enter(OpStat, h.Kind); err != nil {
		s.mu.Unlock()
		return blob.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	fail := s.failStat
	s.mu.Unlock()
	if fail != nil {
		if err := fail(h); err != nil {
			return blob.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
		}
	}
	return s.inner.Stat(ctx, h)
}

// List passes through unless FailList or the crash says otherwise.
func (s *Storage) List(ctx context.Context, k blob.Kind, fn func(blob.FileInfo) error) error {
	s.mu.Lock()
	if err := s.enter(OpList, k); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("list %v: %w", k, err)
	}
	fail := s.failList
	s.mu.Unlock()
	if fail != nil {
		if err := fail(k); err != nil {
			return fmt.Errorf("list %v: %w", k, err)
		}
	}
	return s.inner.List(ctx, k, fn)
}

// Remove passes through unless FailRemove or the crash says otherwise.
func (s *Storage) Remove(ctx context.Context, h blob.Handle) error {
	s.mu.Lock()
	if err := s.enter(OpRemove, h.Kind); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("remove %v: %w", h, err)
	}
	fail := s.failRemove
	s.mu.Unlock()
	if fail != nil {
		if err := fail(h); err != nil {
			return fmt.Errorf("remove %v: %w", h, err)
		}
	}
	return s.inner.Remove(ctx, h)
}

// Close closes the wrapped storage. After the simulated crash it returns
// ErrCrashed and leaves the wrapped storage open, so a test can inspect it.
func (s *Storage) Close() error {
	s.mu.Lock()
	crashed := s.crashed
	s.mu.Unlock()
	if crashed {
		return fmt.Errorf("close: %w", ErrCrashed)
	}
	return s.inner.Close()
}
