package redistest

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// shared holds the servers that outlive single tests; Main stops them.
var shared struct {
	mu       sync.Mutex
	server   *Server
	cluster  *Cluster
	sentinel *Sentinel
	// stops releases everything shared (servers and their directories).
	stops []func() error
}

// Shared returns a server started on first use and reused by every test of
// the package, which saves starting one per test. Tests sharing it must use
// their own keys and must not stop, kill, pause or restart it (use Start for
// that). It is stopped and its directory removed by Main. If it is found
// not running, it is started again on the same port.
func Shared(t testing.TB) *Server {
	t.Helper()
	s, err := sharedServer()
	if err != nil {
		t.Fatal(err.Error())
	}
	return s
}

// SharedAddr returns the address of the shared server, starting it if
// needed, for code without a testing.TB. It panics with the reason if the
// server cannot be started. Main also gives the shared server's URL to
// Example functions in REDIS_URL, so that they connect as a program would.
func SharedAddr() string {
	s, err := sharedServer()
	if err != nil {
		panic(err.Error())
	}
	return s.Addr()
}

func sharedServer() (*Server, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if s := shared.server; s != nil {
		if s.running() {
			return s, nil
		}
		s.mu.Lock()
		err := s.stopLocked()
		if err == nil {
			err = s.startLocked(false)
		}
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redistest-shared-")
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	s, err := newServer(bin, dir, nil)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	shared.server = s
	shared.stops = append(shared.stops, func() error {
		return errors.Join(s.stop(), os.RemoveAll(dir))
	})
	return s, nil
}

// stopShared stops every shared server and removes its directory.
func stopShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var errs []error
	for _, stop := range shared.stops {
		errs = append(errs, stop())
	}
	shared.server, shared.cluster, shared.sentinel, shared.stops = nil, nil, nil, nil
	return errors.Join(errs...)
}

// Main runs the tests of a package, then stops the shared servers, checks
// that no goroutines leaked (when the tests passed) and exits with the
// resulting code. Use it as
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	// Goroutines started before the tests (by package initialisation) are
	// not the tests' doing.
	ignore := goleak.IgnoreCurrent()
	defer func() {
		// Also reached when m.Run panics, so shared servers do not outlive
		// the test binary.
		if err := stopShared(); err != nil {
			fmt.Fprintf(os.Stderr, "redistest: stopping shared servers: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		if code == 0 {
			if err := goleak.Find(ignore); err != nil {
				fmt.Fprintf(os.Stderr, "redistest: goroutines leaked by the tests: %v\n", err)
				code = 1
			}
		}
	}()
	// Example functions connect to REDIS_URL, as a program would: it names
	// the shared server.
	srv, err := sharedServer()
	if err != nil {
		fmt.Fprintf(os.Stderr, "redistest: %v\n", err)
		return 1
	}
	if err := os.Setenv("REDIS_URL", srv.URL()); err != nil {
		fmt.Fprintf(os.Stderr, "redistest: %v\n", err)
		return 1
	}
	return m.Run()
}
