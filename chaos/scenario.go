package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Expectations of a scenario.
const (
	// ExpectSafe: distlock promises no hard overlap, no fence regression
	// and no stale write accepted.
	ExpectSafe = "safe"
	// ExpectUnsafe: distlock documents that the fault can break mutual
	// exclusion; overlaps are measured and reported, not failed, while
	// the promises that hold whatever Redis loses (fences, no stale write
	// accepted, nothing left behind) are still checked.
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
	// Deployment is where Redis runs: DeployStandalone, DeployCluster or
	// DeploySentinel (DeploymentFor of the fault).
	Deployment string `json:"deployment,omitempty"`
	// Replicas is the clients' mutex.Config.Replicas.
	Replicas int `json:"replicas,omitempty"`
	// CI marks the scenarios of the subset every CI run covers.
	CI bool `json:"ci,omitempty"`
}

// Scenarios returns every scenario, the self-test last. Each fault runs in
// both modes; a few run again with AutoExtend or without go-redis retries,
// where those change what the fault does. Scenarios marked CI form the
// subset that every CI run covers.
func Scenarios() []Scenario {
	type variant struct {
		fault      string
		expect     string
		autoExtend bool
		noRetries  bool
		ci         [2]bool // plain, fifo
	}
	vs := []variant{
		{fault: FaultNone, ci: [2]bool{true, true}},
		{fault: FaultStallHolder, ci: [2]bool{false, true}},
		{fault: FaultPauseHolder, ci: [2]bool{true, false}},
		{fault: FaultKillHolder, ci: [2]bool{false, true}},
		{fault: FaultKillWaiter, ci: [2]bool{true, false}},
		{fault: FaultPauseRedis, ci: [2]bool{false, true}},
		{fault: FaultProxyLatency},
		{fault: FaultProxyReset, ci: [2]bool{false, true}},
		{fault: FaultProxyDrop, ci: [2]bool{true, false}},
		{fault: FaultRedisRestartAOF, ci: [2]bool{true, false}},
		{fault: FaultScriptFlush, ci: [2]bool{false, true}},
		{fault: FaultClientPauseWrite, ci: [2]bool{true, false}},
		{fault: FaultClientKill},
		{fault: FaultClientKillPubSub, ci: [2]bool{false, true}},
		{fault: FaultRedisRestart, expect: ExpectUnsafe},
		{fault: FaultEvict, expect: ExpectUnsafe, ci: [2]bool{true, false}},
		{fault: FaultNone, autoExtend: true},
		{fault: FaultStallHolder, autoExtend: true, ci: [2]bool{true, false}},
		{fault: FaultPauseHolder, autoExtend: true},
		{fault: FaultPauseRedis, autoExtend: true, ci: [2]bool{true, false}},
		{fault: FaultProxyLatency, autoExtend: true},
		{fault: FaultClientPauseWrite, autoExtend: true},
		{fault: FaultProxyDrop, noRetries: true, ci: [2]bool{false, true}},
		{fault: FaultProxyReset, noRetries: true},
		{fault: FaultClientKill, noRetries: true, ci: [2]bool{true, false}},
		{fault: FaultRedisRestartAOF, noRetries: true},
	}
	var s []Scenario
	for _, v := range vs {
		for i, mode := range []string{"plain", "fifo"} {
			name := v.fault + "/" + mode
			if v.autoExtend {
				name += "+autoextend"
			}
			if v.noRetries {
				name += "+noretries"
			}
			expect := v.expect
			if expect == "" {
				expect = ExpectSafe
			}
			s = append(s, Scenario{Name: name, Lock: "real", FIFO: i == 1, Fault: v.fault, Expect: expect,
				AutoExtend: v.autoExtend, NoRetries: v.noRetries, CI: v.ci[i]})
		}
	}
	// The replicated deployments, each without and with Config.Replicas.
	// A failover that kills the primary loses the grants its replica had
	// not received: unsafe unless the grants wait for the replica.
	for _, v := range []struct {
		fault string
		ci    [2][2]bool // [plain, fifo][without, with Replicas]
	}{
		{fault: FaultClusterFailover, ci: [2][2]bool{{false, false}, {true, false}}},
		{fault: FaultClusterKillPrimary, ci: [2][2]bool{{false, true}, {false, false}}},
		{fault: FaultSlotMigration, ci: [2][2]bool{{true, false}, {false, false}}},
		{fault: FaultSentinelFailover, ci: [2][2]bool{{false, false}, {false, true}}},
	} {
		for i, mode := range []string{"plain", "fifo"} {
			for replicas := range 2 {
				name := v.fault + "/" + mode
				expect := ExpectSafe
				if replicas > 0 {
					name += "+replicas"
				} else if KillsPrimary(v.fault) {
					expect = ExpectUnsafe
				}
				s = append(s, Scenario{Name: name, Lock: "real", FIFO: i == 1, Fault: v.fault, Expect: expect,
					Deployment: DeploymentFor(v.fault), Replicas: replicas, CI: v.ci[i][replicas]})
			}
		}
	}
	return append(s, Scenario{Name: "selftest/broken", Lock: "broken", Fault: FaultPauseHolder, Expect: ExpectFlagged,
		PauseHolders: true, CI: true})
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
	// ClusterSingleKey makes the clients of a Cluster lock one key at a
	// time, rather than also the hot key and a cold key together (which
	// lie in different slots) as everywhere else.
	ClusterSingleKey bool
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
	// FaultErrors counts the injections that failed (the nemesis history
	// says why).
	FaultErrors int    `json:"fault_errors,omitempty"`
	Pass        bool   `json:"pass"`
	Reason      string `json:"reason,omitempty"`
}

func (r *Row) judge() {
	// Promises of every scenario with a real lock: fences increase, the
	// fenced store accepts no stale write, and nothing stays behind. A
	// safe scenario promises mutual exclusion too, and that no failover
	// loses a valid lease; an unsafe one measures how often they broke.
	var broken []string
	add := func(n int, what string) {
		if n > 0 {
			broken = append(broken, fmt.Sprintf("%d %s", n, what))
		}
	}
	if r.Expect == ExpectSafe {
		add(r.HardOverlaps, "hard overlaps")
		add(r.LostLeases, "leases lost at failover")
	}
	add(r.FenceRegressions, "fence regressions")
	add(r.StaleAccepted, "stale writes accepted")
	add(r.LeftoverLocksNoTTL+r.LeftoverPersistent, "keys left without a TTL")
	add(r.LeftoverGoroutines, "goroutines left after Close")
	switch r.Expect {
	case ExpectSafe, ExpectUnsafe:
		r.Pass = len(broken) == 0
		if !r.Pass {
			r.Reason = "broke a promise: " + strings.Join(broken, ", ")
		}
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
	n := &nemesis{fault: sc.Fault, ttl: opts.TTL, rng: rand.New(rand.NewPCG(opts.Seed, 0x9e3779b9))}
	var (
		clientURL string
		topo      Topology
	)
	if sc.Deployment == DeployStandalone {
		srv, err := StartRedis(dir, RedisConfigFor(sc.Fault))
		if err != nil {
			return row, err
		}
		defer srv.Stop()
		n.redis = srv
		// The proxy faults put a Proxy between the clients and Redis; the
		// runner's own connections go to Redis directly.
		clientAddr := srv.Addr
		if UsesProxy(sc.Fault) {
			if n.proxy, err = StartProxy(srv.Addr); err != nil {
				return row, err
			}
			defer n.proxy.Close()
			clientAddr = n.proxy.Addr
		}
		clientURL, topo = "redis://"+clientAddr+"/0", StandaloneTopology(srv.Addr)
	} else {
		d, err := startDeployment(ctx, dir, sc.Deployment)
		if err != nil {
			return row, err
		}
		defer func() {
			if err := d.Close(); err != nil {
				fmt.Fprintf(opts.Log, "scenario %s: stop %s: %v\n", sc.Name, sc.Deployment, err)
			}
		}()
		n.deploy = d
		clientURL, topo = d.ClientURL(), d.Topology()
	}
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
	watchRec, err := NewRecorder(filepath.Join(dir, "watcher.jsonl"), WatcherClient)
	if err != nil {
		return row, err
	}
	defer watchRec.Close()
	watcher, err := WatchTopology(ctx, topo, watchRec)
	if err != nil {
		return row, err
	}
	defer watcher.Stop()

	end := time.Now().Add(opts.Duration)
	cl := &clients{exe: opts.Exe, dir: dir, base: ClientConfig{Redis: clientURL, Store: ss.URL, Lock: sc.Lock,
		FIFO: sc.FIFO, TTL: opts.TTL, End: end, Seed: opts.Seed, NoRetries: opts.NoRetries || sc.NoRetries,
		AutoExtend: sc.AutoExtend, PauseHolders: sc.PauseHolders || sc.Fault == FaultStallHolder,
		LongHold: LongHold(sc.Fault), Replicas: sc.Replicas,
		MultiKey: sc.Deployment != DeployCluster || !opts.ClusterSingleKey}, procs: map[int]*proc{}}
	for range opts.Clients {
		if err := cl.start(); err != nil {
			cl.killAll()
			return row, err
		}
	}
	fmt.Fprintf(opts.Log, "scenario %s: %d clients for %v, redis %s\n", sc.Name, opts.Clients, opts.Duration, clientURL)
	nctx, ncancel := context.WithDeadline(ctx, end)
	n.rec, n.clients, n.store, n.watcher = nemRec, cl, store, watcher
	row.Faults = n.run(nctx)
	row.FaultErrors = n.failures
	ncancel()
	cl.wait(end.Add(4*opts.TTL + 10*time.Second))
	_ = watcher.Leftovers(ctx)
	if err := watcher.Stop(); err != nil {
		fmt.Fprintf(opts.Log, "scenario %s: stop watcher: %v\n", sc.Name, err)
	}

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
