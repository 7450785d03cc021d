package taskqueuetest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// fakeT is a testing.TB that records failures, for tests of the kit's failure reports and for the examples
// (where a test would pass its *testing.T). Its Fatalf ends the calling goroutine, as testing.T's does.
type fakeT struct {
	testing.TB // nil: only the methods below are called
	mu         sync.Mutex
	errs       []string
	fatal      bool
	cleanups   []func()
}

func (f *fakeT) Helper()             {}
func (f *fakeT) Name() string        { return "fakeT" }
func (f *fakeT) Logf(string, ...any) {}
func (f *fakeT) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *fakeT) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
	f.fatal = true
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeT) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.errs) > 0
}

func (f *fakeT) messages() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.errs, "\n")
}

// finish runs the cleanups, last first, as the end of a test does.
func (f *fakeT) finish() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// record runs fn with a fakeT on a goroutine of its own, so that a Fatalf ends only that goroutine, and reports
// whether fn returned (false after a Fatalf).
func record(fn func(tb testing.TB)) (f *fakeT, returned bool) {
	f = &fakeT{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
		returned = true
	}()
	<-done
	f.finish()
	return f, returned
}
