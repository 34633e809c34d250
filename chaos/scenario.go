package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// Faults a scenario can inject.
const (
	FaultNone        = "none"
	FaultPauseHolder = "pause-holder" // SIGSTOP a holder of the hot key right after its write, past the TTL, then SIGCONT
	FaultKillClient  = "kill-client"  // SIGKILL a random client and start a new one
	FaultPauseRedis  = "pause-redis"  // SIGSTOP redis-server past the TTL, then SIGCONT
)

// Expectations of a scenario.
const (
	// ExpectSafe: distlock promises no hard overlap, no fence regression
	// and no stale write accepted.
	ExpectSafe = "safe"
	// ExpectUnsafe: distlock documents that the fault can break mutual
	// exclusion; the scenario is measured and reported, never failed.
	ExpectUnsafe = "unsafe"
	// ExpectFlagged: the checkers must report overlaps, fence regressions
	// and stale writes (the self-test).
	ExpectFlagged = "flagged"
)

// Scenario is one run of the clients under one fault.
type Scenario struct {
	Name   string `json:"name"`
	Lock   string `json:"lock"` // "real" (mutex.Mutex) or "broken" (BrokenLocker)
	FIFO   bool   `json:"fifo"`
	Fault  string `json:"fault"`
	Expect string `json:"expect"`
	// PauseHolders makes every client sleep past the TTL inside one
	// critical section in five (the self-test's holders).
	PauseHolders bool `json:"pause_holders,omitempty"`
	// AutoExtend wraps the clients' Mutex in middleware.AutoExtend.
	AutoExtend bool `json:"auto_extend,omitempty"`
	// NoRetries sets the clients' go-redis MaxRetries to -1 (the run's
	// Options.NoRetries sets it for every scenario).
	NoRetries bool `json:"no_retries,omitempty"`
}

// Scenarios returns every scenario, the self-test last.
func Scenarios() []Scenario {
	var s []Scenario
	for _, f := range []string{FaultNone, FaultPauseHolder, FaultKillClient, FaultPauseRedis} {
		for _, fifo := range []bool{false, true} {
			mode := "plain"
			if fifo {
				mode = "fifo"
			}
			s = append(s, Scenario{Name: f + "/" + mode, Lock: "real", FIFO: fifo, Fault: f, Expect: ExpectSafe})
		}
	}
	return append(s, Scenario{Name: "selftest/broken", Lock: "broken", Fault: FaultPauseHolder, Expect: ExpectFlagged, PauseHolders: true})
}

// Options configure a run.
type Options struct {
	Clients  int           // client processes (default 5)
	Duration time.Duration // per scenario (default 5s)
	TTL      time.Duration // lock TTL (default 500ms)
	Seed     uint64
	Dir      string // work directory; one subdirectory per scenario
	// Exe is the binary re-executed as a client (default os.Args[0]); it
	// must call ClientMain when IsClient reports true.
	Exe       string
	NoRetries bool      // go-redis MaxRetries -1 instead of its default options
	Log       io.Writer // progress (nil: discarded)
}

func (o *Options) defaults() {
	if o.Clients <= 0 {
		o.Clients = 5
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.TTL <= 0 {
		o.TTL = 500 * time.Millisecond
	}
	if o.Exe == "" {
		o.Exe = os.Args[0]
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Row is the outcome of one scenario.
type Row struct {
	Scenario
	Result
	Store  StoreStats `json:"store"`
	Faults int        `json:"faults"`
	Pass   bool       `json:"pass"`
	Reason string     `json:"reason,omitempty"`
}

func (r *Row) judge() {
	switch r.Expect {
	case ExpectSafe:
		r.Pass = !r.Broken()
		if !r.Pass {
			r.Reason = "broke a promise: hard overlaps, fence regressions or stale writes accepted"
		}
	case ExpectUnsafe:
		r.Pass = true
	case ExpectFlagged:
		r.Pass = r.Overlaps > 0 && r.FenceRegressions > 0 && r.StaleRejected+r.StaleAccepted > 0
		if !r.Pass {
			r.Reason = "self-test not flagged: the checkers missed overlaps, fence regressions or stale writes"
		}
	}
	if r.Granted == 0 {
		r.Pass, r.Reason = false, "no lock was granted"
	}
}

// Run runs one scenario.
func Run(ctx context.Context, sc Scenario, opts Options) (Row, error) {
	opts.defaults()
	row := Row{Scenario: sc}
	dir := filepath.Join(opts.Dir, sanitize(sc.Name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return row, err
	}
	srv, err := StartRedis(dir)
	if err != nil {
		return row, err
	}
	defer srv.Stop()
	storeRec, err := NewRecorder(filepath.Join(dir, "store.jsonl"), StoreClient)
	if err != nil {
		return row, err
	}
	defer storeRec.Close()
	store := NewStore(storeRec)
	ss, err := ServeStore(store)
	if err != nil {
		return row, err
	}
	defer ss.Close()
	nemRec, err := NewRecorder(filepath.Join(dir, "nemesis.jsonl"), -2)
	if err != nil {
		return row, err
	}
	defer nemRec.Close()

	end := time.Now().Add(opts.Duration)
	cl := &clients{exe: opts.Exe, dir: dir, base: ClientConfig{Redis: srv.Addr, Store: ss.URL, Lock: sc.Lock,
		FIFO: sc.FIFO, TTL: opts.TTL, End: end, Seed: opts.Seed, NoRetries: opts.NoRetries || sc.NoRetries,
		AutoExtend: sc.AutoExtend, PauseHolders: sc.PauseHolders}, procs: map[int]*proc{}}
	for range opts.Clients {
		if err := cl.start(); err != nil {
			cl.killAll()
			return row, err
		}
	}
	fmt.Fprintf(opts.Log, "scenario %s: %d clients for %v, redis %s\n", sc.Name, opts.Clients, opts.Duration, srv.Addr)
	nctx, ncancel := context.WithDeadline(ctx, end)
	n := &nemesis{fault: sc.Fault, ttl: opts.TTL, rec: nemRec, clients: cl, redis: srv, store: store,
		rng: rand.New(rand.NewPCG(opts.Seed, 0x9e3779b9))}
	row.Faults = n.run(nctx)
	ncancel()
	cl.wait(end.Add(4*opts.TTL + 10*time.Second))

	events, err := ReadHistory(dir)
	if err != nil {
		return row, err
	}
	row.Result = Check(events)
	row.Store = store.Stats()
	row.judge()
	return row, nil
}

func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if c == '/' || c == ' ' {
			b[i] = '_'
		}
	}
	return string(b)
}
