package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// harnessCallTimeout bounds each call run makes: the deployments' own
// waits (30s) would hold a scenario long after its end.
const harnessCallTimeout = 10 * time.Second

// harness lets the runner, which is no test, call the deployments of
// internal/redistest (Cluster, Sentinel), whose functions take a
// testing.TB: Fatal and Fatalf end the call and make run return the
// message as an error, Error and Errorf record one for run to return,
// Cleanup defers to Close, TempDir makes a new directory under the
// scenario's, and Context is the runner's, ending harnessCallTimeout into
// the call. The methods of testing.TB it does not implement panic (the
// embedded interface is nil); redistest calls none of them. Its calls
// must not overlap.
type harness struct {
	testing.TB
	base context.Context
	dir  string

	mu       sync.Mutex
	ctx      context.Context // of the call under way
	errs     []error
	cleanups []func()
	failed   bool
}

// harnessFailure is the panic value of Fatal, recovered by run.
type harnessFailure struct{ msg string }

func newHarness(ctx context.Context, dir string) *harness {
	return &harness{base: ctx, ctx: ctx, dir: dir}
}

// run calls f and returns the message of a Fatal that ended it, joined
// with the errors recorded by Error and Errorf meanwhile.
func (h *harness) run(f func()) (err error) {
	ctx, cancel := context.WithTimeout(h.base, harnessCallTimeout)
	h.mu.Lock()
	h.ctx = ctx
	h.mu.Unlock()
	defer func() {
		cancel()
		if r := recover(); r != nil {
			hf, ok := r.(harnessFailure)
			if !ok {
				panic(r)
			}
			err = errors.New(hf.msg)
		}
		err = errors.Join(err, h.takeErrors())
	}()
	f()
	return nil
}

func (h *harness) takeErrors() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	err := errors.Join(h.errs...)
	h.errs = nil
	return err
}

// Close runs the cleanups, the last registered first, and returns the
// errors they recorded.
func (h *harness) Close() error {
	h.mu.Lock()
	cleanups := h.cleanups
	h.cleanups = nil
	h.mu.Unlock()
	var errs []error
	for i := len(cleanups) - 1; i >= 0; i-- {
		errs = append(errs, h.run(cleanups[i]))
	}
	return errors.Join(errs...)
}

func (h *harness) fail(msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failed = true
	h.errs = append(h.errs, errors.New(msg))
}

func (h *harness) Helper() {}

func (h *harness) Fatal(args ...any) {
	h.mu.Lock()
	h.failed = true
	h.mu.Unlock()
	panic(harnessFailure{fmt.Sprint(args...)})
}

func (h *harness) Fatalf(format string, args ...any) {
	h.Fatal(fmt.Sprintf(format, args...))
}

func (h *harness) Error(args ...any) { h.fail(fmt.Sprint(args...)) }

func (h *harness) Errorf(format string, args ...any) { h.fail(fmt.Sprintf(format, args...)) }

func (h *harness) Log(...any) {}

func (h *harness) Logf(string, ...any) {}

func (h *harness) Failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}

func (h *harness) Name() string { return "chaos" }

func (h *harness) Cleanup(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanups = append(h.cleanups, f)
}

func (h *harness) TempDir() string {
	d, err := os.MkdirTemp(h.dir, "redis-")
	if err != nil {
		h.Fatalf("chaos: %v", err)
	}
	return d
}

func (h *harness) Context() context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ctx
}
