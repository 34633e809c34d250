package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// options are the runner's flags.
type options struct {
	duration   time.Duration
	rounds     int
	out        string
	only       []string
	libs       []string
	redisAddr  string
	json       bool
	poll       time.Duration
	poolSize   int
	soakLeases int
	soakTTL    time.Duration
	soakHold   time.Duration
	noCharts   bool
}

// spec is one measurement, run once per library and round.
type spec struct {
	scenario string
	label    string // the case within the scenario, as the report shows it
	procs    int
	perProc  int // goroutines (waiters) per process
	hold     time.Duration
	window   time.Duration
	ttl      time.Duration
	leases   int
	margin   time.Duration // overtaking margin of hot-key scenarios
}

func (s spec) goroutines() int { return s.procs * s.perProc }

// Main runs the benchmark with the command-line arguments args (without
// the program name), writes the report to stdout and progress to stderr,
// and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, stdout, stderr); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "benchpeers: interrupted; the workers and redis-server were stopped")
			return 130
		}
		fmt.Fprintln(stderr, "benchpeers:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("benchpeers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", 500*time.Millisecond, "measurement window of the serial and parallel scenarios; the hot-key and FIFO scenarios measure twice as long")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds over every library; the report shows each case's best round")
	fs.StringVar(&o.out, "out", "", "directory for results.md, results.json and the charts (default: docs/bench of the repository)")
	only := fs.String("only", "", "comma-separated scenarios to run: "+strings.Join(allScenarios, ","))
	libs := fs.String("libs", "", "comma-separated libraries to run: "+strings.Join(allLibs, ","))
	fs.StringVar(&o.redisAddr, "redis", "", "host:port of a running Redis to use instead of starting redis-server (it is sent CONFIG RESETSTAT and FLUSHALL is not used; give it a dedicated server)")
	fs.BoolVar(&o.json, "json", false, "also print the JSON of all numbers on stdout")
	fs.DurationVar(&o.poll, "poll", 5*time.Millisecond, "retry interval of the polling libraries (redsync, redislock) while they wait")
	fs.IntVar(&o.poolSize, "pool", 0, "go-redis PoolSize of each worker's client (0: the go-redis default, 10 per CPU)")
	fs.IntVar(&o.soakLeases, "soak-leases", 10000, "leases held in the auto-extension scenario")
	fs.DurationVar(&o.soakTTL, "soak-ttl", 2*time.Second, "lease TTL in the auto-extension scenario")
	fs.DurationVar(&o.soakHold, "soak-hold", 3*time.Second, "how long the auto-extension scenario holds its leases")
	fs.BoolVar(&o.noCharts, "no-charts", false, "write no PNG charts")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "benchpeers: unexpected arguments %q\n", fs.Args())
		return o, errors.New("bad arguments")
	}
	var err error
	if o.only, err = pickList(*only, allScenarios, "scenario"); err != nil {
		fmt.Fprintln(stderr, "benchpeers:", err)
		return o, err
	}
	if o.libs, err = pickList(*libs, allLibs, "library"); err != nil {
		fmt.Fprintln(stderr, "benchpeers:", err)
		return o, err
	}
	switch {
	case o.duration <= 0:
		err = errors.New("-duration must be > 0")
	case o.rounds < 1:
		err = errors.New("-rounds must be >= 1")
	case o.poll <= 0:
		err = errors.New("-poll must be > 0")
	case o.soakLeases < 1:
		err = errors.New("-soak-leases must be >= 1")
	case o.soakTTL < 100*time.Millisecond:
		err = errors.New("-soak-ttl must be >= 100ms")
	case o.soakHold <= 0:
		err = errors.New("-soak-hold must be > 0")
	}
	if err != nil {
		fmt.Fprintln(stderr, "benchpeers:", err)
		return o, err
	}
	return o, nil
}

// pickList parses a comma-separated subset of known, in known's order;
// empty means all of them.
func pickList(s string, known []string, what string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return slices.Clone(known), nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("unknown %s %q (known: %s)", what, n, strings.Join(known, ", "))
		}
		want[n] = true
	}
	var out []string
	for _, n := range known {
		if want[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

const (
	// hotHold is how long a waiter of the hot-key and FIFO scenarios
	// holds the key.
	hotHold = 5 * time.Millisecond
	// overtakeMargin is how much later a wait must begin than another
	// for its earlier grant to count as an overtake. It absorbs the delay
	// between a wait's timestamp and its request reaching Redis (which
	// orders a FIFO queue) on a busy host, and stays below the spacing of
	// waits that begin one handoff apart (hotHold plus a handoff).
	overtakeMargin = 4 * time.Millisecond
)

// specs returns the measurements of the chosen scenarios, in run order.
func specs(o options) []spec {
	var out []spec
	has := func(s string) bool { return slices.Contains(o.only, s) }
	long := 2 * o.duration
	if has(scSerial) {
		out = append(out, spec{scenario: scSerial, label: "1 goroutine", procs: 1, perProc: 1, window: o.duration, ttl: 10 * time.Second})
	}
	if has(scParallel) {
		for _, g := range []int{8, 64, 256} {
			out = append(out, spec{scenario: scParallel, label: fmt.Sprintf("%d goroutines", g), procs: 1, perProc: g, window: o.duration, ttl: 10 * time.Second})
		}
		out = append(out, spec{scenario: scParallel, label: "64 goroutines in 4 processes", procs: 4, perProc: 16, window: o.duration, ttl: 10 * time.Second})
	}
	if has(scHot) {
		for _, w := range []int{2, 16, 64} {
			procs := min(w, 4)
			out = append(out, spec{scenario: scHot, label: fmt.Sprintf("%d waiters", w), procs: procs, perProc: w / procs,
				hold: hotHold, window: long, ttl: 10 * time.Second, margin: overtakeMargin})
		}
	}
	if has(scFIFO) {
		out = append(out, spec{scenario: scFIFO, label: "8 waiters", procs: 4, perProc: 2,
			hold: hotHold, window: long, ttl: 10 * time.Second, margin: overtakeMargin})
	}
	if has(scSoak) {
		out = append(out, spec{scenario: scSoak, label: fmt.Sprintf("%d leases", o.soakLeases), procs: 1, perProc: 1,
			window: o.soakHold, ttl: o.soakTTL, leases: o.soakLeases})
	}
	return out
}

// runner holds what the measurements share.
type runner struct {
	opts    options
	exe     string
	addr    string
	owned   bool // the runner started the server, so it may FLUSHALL it
	client  *redis.Client
	procs   *procSet
	seq     int
	stderr  io.Writer
	started time.Time
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	r := &runner{opts: o, procs: newProcSet(), stderr: stderr, started: time.Now()}
	defer r.procs.killAll()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable for the worker processes: %w", err)
	}
	r.exe = exe
	out, err := resolveOut(o.out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}

	if o.redisAddr != "" {
		r.addr = o.redisAddr
	} else {
		srv, err := startRedis()
		if err != nil {
			return err
		}
		defer srv.stop()
		// A signal stops the server and the workers at once, even while a
		// measurement still waits on them.
		go func() {
			<-ctx.Done()
			r.procs.killAll()
			srv.stop()
		}()
		r.addr, r.owned = srv.addr, true
	}
	r.client = redis.NewClient(&redis.Options{Addr: r.addr})
	defer r.client.Close()
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", r.addr, err)
	}

	rep := &Report{
		Date:   time.Now().UTC().Format(time.RFC3339),
		Config: reportConfig(o),
		Notes:  map[string]string{},
	}
	for _, l := range o.libs {
		rep.Notes[l] = libNotes[l]
	}
	rep.Machine, err = machineInfo(ctx, r.client)
	if err != nil {
		return err
	}
	all := specs(o)
	var main, soak []spec
	for _, s := range all {
		if s.scenario == scSoak {
			soak = append(soak, s)
		} else {
			main = append(main, s)
		}
	}
	total := o.rounds*len(main)*len(o.libs) + len(soak)*len(o.libs)
	fmt.Fprintf(stderr, "benchpeers: %d measurements, redis %s at %s, results to %s\n", total, rep.Machine.Redis, r.addr, out)
	done := 0
	failed := 0
	for round := range o.rounds {
		if len(main) == 0 {
			break
		}
		ping, err := r.pingP50(ctx)
		if err != nil {
			return err
		}
		rep.PingP50Us = append(rep.PingP50Us, us(int64(ping)))
		fmt.Fprintf(stderr, "round %d: PING p50 %.1fµs\n", round+1, us(int64(ping)))
		for _, s := range main {
			for i := range o.libs {
				lib := o.libs[(i+round)%len(o.libs)]
				res := r.measure(ctx, s, lib, round, ping)
				done++
				if err := ctx.Err(); err != nil {
					return err
				}
				if res.Error != "" {
					failed++
				}
				fmt.Fprintf(stderr, "[%3d/%d %5.1fs] %s\n", done, total, time.Since(r.started).Seconds(), res.progress())
				rep.Results = append(rep.Results, res)
			}
		}
	}
	for _, s := range soak {
		ping, err := r.pingP50(ctx)
		if err != nil {
			return err
		}
		for _, lib := range o.libs {
			res := r.measure(ctx, s, lib, 0, ping)
			done++
			if err := ctx.Err(); err != nil {
				return err
			}
			if res.Error != "" {
				failed++
			}
			fmt.Fprintf(stderr, "[%3d/%d %5.1fs] %s\n", done, total, time.Since(r.started).Seconds(), res.progress())
			rep.Results = append(rep.Results, res)
		}
	}
	rep.Best = bestRounds(rep.Results)
	rep.ElapsedS = time.Since(r.started).Seconds()

	md := rep.markdown()
	if _, err := io.WriteString(stdout, md); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "results.md"), []byte(md), 0o644); err != nil {
		return fmt.Errorf("write results.md: %w", err)
	}
	js, err := rep.json()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "results.json"), js, 0o644); err != nil {
		return fmt.Errorf("write results.json: %w", err)
	}
	if o.json {
		if _, err := stdout.Write(js); err != nil {
			return err
		}
	}
	if !o.noCharts {
		files, err := writeCharts(rep, out)
		if err != nil {
			return fmt.Errorf("charts: %w", err)
		}
		for _, f := range files {
			fmt.Fprintln(stderr, "chart:", f)
		}
	}
	fmt.Fprintf(stderr, "benchpeers: done in %.1fs\n", time.Since(r.started).Seconds())
	if failed > 0 {
		return fmt.Errorf("%d of %d measurements failed (see the report)", failed, total)
	}
	return nil
}

// resolveOut returns dir, or docs/bench of the distlock repository that
// contains the working directory (so that the default is the same from the
// repository root and from bench/).
func resolveOut(dir string) (string, error) {
	if dir != "" {
		return filepath.Abs(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if isRepoRoot(d) {
			return filepath.Join(d, "docs", "bench"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no distlock repository (go.mod of github.com/distlock/distlock) above %s: pass -out", wd)
		}
	}
}

func isRepoRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == "github.com/distlock/distlock"
		}
	}
	return false
}

// pingP50 measures the median PING round trip from the runner.
func (r *runner) pingP50(ctx context.Context) (time.Duration, error) {
	d := make([]int64, 2000)
	for i := -200; i < len(d); i++ {
		start := time.Now()
		if err := r.client.Ping(ctx).Err(); err != nil {
			return 0, fmt.Errorf("PING: %w", err)
		}
		if i >= 0 {
			d[i] = int64(time.Since(start))
		}
	}
	return time.Duration(percentile(d, 50)), nil
}

// measure runs s for lib once and returns its result; a failure is
// recorded in the result's Error.
func (r *runner) measure(ctx context.Context, s spec, lib string, round int, ping time.Duration) Result {
	res := Result{Scenario: s.scenario, Case: s.label, Lib: lib, Round: round + 1, Procs: s.procs,
		Goroutines: s.goroutines(), WindowS: s.window.Seconds(), PingP50Us: us(int64(ping))}
	if err := r.measureInto(ctx, s, lib, &res); err != nil {
		res.Error = err.Error()
	}
	return res
}

func (r *runner) measureInto(ctx context.Context, s spec, lib string, res *Result) error {
	if r.owned {
		if err := r.client.FlushAll(ctx).Err(); err != nil {
			return fmt.Errorf("FLUSHALL: %w", err)
		}
	}
	r.seq++
	prefix := fmt.Sprintf("bp%d", r.seq)
	ws := make([]*workerProc, 0, s.procs)
	defer func() {
		for _, w := range ws {
			w.kill()
		}
	}()
	for i := range s.procs {
		w, err := r.procs.start(r.exe, task{
			Lib: lib, Scenario: s.scenario, Addr: r.addr, Worker: i, Goroutines: s.perProc,
			Prefix: prefix, Hold: s.hold, TTL: s.ttl, Poll: r.opts.poll, Leases: s.leases, PoolSize: r.opts.poolSize,
		})
		if err != nil {
			return err
		}
		ws = append(ws, w)
	}
	readyTimeout := 30 * time.Second
	if s.scenario == scSoak {
		readyTimeout = 120 * time.Second
	}
	for _, w := range ws {
		rep, err := w.next(readyTimeout)
		if err != nil {
			return err
		}
		if !rep.Ready {
			return errors.New("worker: expected a ready line")
		}
	}
	if err := r.client.ConfigResetStat(ctx).Err(); err != nil {
		return fmt.Errorf("CONFIG RESETSTAT: %w", err)
	}
	s0, err := sample(ctx, r.client)
	if err != nil {
		return err
	}
	start := time.Now().Add(20*time.Millisecond + time.Duration(len(ws))*time.Millisecond)
	end := start.Add(s.window)
	msg := startMsg{Start: start.UnixNano(), End: end.UnixNano()}
	for _, w := range ws {
		if err := w.enc.Encode(msg); err != nil {
			return fmt.Errorf("send start to worker: %w%s", err, w.stderrTail())
		}
	}
	select {
	case <-time.After(time.Until(end)):
	case <-ctx.Done():
		return ctx.Err()
	}
	s1, err := sample(ctx, r.client)
	if err != nil {
		return err
	}
	reps := make([]workerReport, 0, len(ws))
	for _, w := range ws {
		rep, err := w.next(s.window + callGrace + 10*time.Second)
		if err != nil {
			return err
		}
		reps = append(reps, rep)
	}
	for _, w := range ws {
		w.finish(5 * time.Second)
	}
	aggregate(res, s, reps, msg, s1.commands-s0.commands, s1.cpu-s0.cpu)
	return nil
}

func machineInfo(ctx context.Context, c *redis.Client) (Machine, error) {
	m := Machine{CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Go: runtime.Version(), CPUModel: cpuModel()}
	srv, err := info(ctx, c, "server")
	if err != nil {
		return m, err
	}
	m.Redis = srv["redis_version"]
	return m, nil
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "unknown".
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
