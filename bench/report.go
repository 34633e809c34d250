package bench

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Report is everything one run measured; results.json holds it.
type Report struct {
	Date     string            `json:"date"`
	ElapsedS float64           `json:"elapsed_s"`
	Machine  Machine           `json:"machine"`
	Config   Config            `json:"config"`
	Notes    map[string]string `json:"library_notes"`
	// PingP50Us is the median PING round trip of each round, in µs.
	PingP50Us []float64 `json:"ping_p50_us"`
	// Results has every measurement of every round.
	Results []Result `json:"results"`
	// Best has, for each scenario, case and library, the round the report
	// shows (see Config.Selection).
	Best []Result `json:"best"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	GOOS     string `json:"goos"`
	GOARCH   string `json:"goarch"`
	Go       string `json:"go"`
	Redis    string `json:"redis"`
}

// Config records the settings of the run.
type Config struct {
	DurationS     float64  `json:"duration_s"`
	HotDurationS  float64  `json:"hot_duration_s"`
	Rounds        int      `json:"rounds"`
	Selection     string   `json:"selection"`
	PollMs        float64  `json:"poll_ms"`
	PoolSize      int      `json:"pool_size"`
	SoakLeases    int      `json:"soak_leases"`
	SoakTTLS      float64  `json:"soak_ttl_s"`
	SoakHoldS     float64  `json:"soak_hold_s"`
	Scenarios     []string `json:"scenarios"`
	Libraries     []string `json:"libraries"`
	ExternalRedis bool     `json:"external_redis"`
}

const selection = "best round: highest ops/s (serial, parallel), highest utilization (hot, fifo); soak runs once"

func reportConfig(o options) Config {
	return Config{
		DurationS: o.duration.Seconds(), HotDurationS: 2 * o.duration.Seconds(), Rounds: o.rounds, Selection: selection,
		PollMs: float64(o.poll) / 1e6, PoolSize: o.poolSize, SoakLeases: o.soakLeases, SoakTTLS: o.soakTTL.Seconds(),
		SoakHoldS: o.soakHold.Seconds(), Scenarios: o.only, Libraries: o.libs, ExternalRedis: o.redisAddr != "",
	}
}

// Result is one measurement: one scenario case, one library, one round.
type Result struct {
	Scenario   string  `json:"scenario"`
	Case       string  `json:"case"`
	Lib        string  `json:"lib"`
	Round      int     `json:"round"`
	Procs      int     `json:"procs"`
	Goroutines int     `json:"goroutines"`
	WindowS    float64 `json:"window_s"`
	PingP50Us  float64 `json:"ping_p50_us"`
	Error      string  `json:"error,omitempty"`

	// Ops counts Lock+Unlock pairs (serial, parallel), grants (hot, fifo)
	// or leases released (soak) within the window.
	Ops         int64   `json:"ops"`
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	RedisCmds   int64   `json:"redis_cmds"`
	RedisCPUMs  float64 `json:"redis_cpu_ms"`
	ClientCPUMs float64 `json:"client_cpu_ms"`
	// Per operation (pair, grant); zero for soak.
	RedisCmdsPerOp   float64 `json:"redis_cmds_per_op"`
	RedisCPUPerOpUs  float64 `json:"redis_cpu_per_op_us"`
	ClientCPUPerOpUs float64 `json:"client_cpu_per_op_us"`

	Throughput *Throughput `json:"throughput,omitempty"`
	Hot        *Hot        `json:"hot,omitempty"`
	Soak       *Soak       `json:"soak,omitempty"`
}

// Throughput holds the figures of the serial and parallel scenarios.
type Throughput struct {
	OpsPerSec   float64 `json:"ops_per_s"`
	P50Us       float64 `json:"p50_us"`
	P99Us       float64 `json:"p99_us"`
	P50Ping     float64 `json:"p50_ping_ratio"`
	P99Ping     float64 `json:"p99_ping_ratio"`
	AllocsPerOp float64 `json:"allocs_per_op"`
}

// Hot holds the figures of the hot-key and FIFO scenarios.
type Hot struct {
	HoldMs         float64 `json:"hold_ms"`
	Waiters        int     `json:"waiters"`
	Grants         int     `json:"grants"`
	Utilization    float64 `json:"utilization"`
	Handoffs       int     `json:"handoffs"`
	HandoffP50Us   float64 `json:"handoff_p50_us"`
	HandoffP99Us   float64 `json:"handoff_p99_us"`
	HandoffP50Ping float64 `json:"handoff_p50_ping_ratio"`
	HandoffP99Ping float64 `json:"handoff_p99_ping_ratio"`
	GrantsMin      int     `json:"grants_per_waiter_min"`
	GrantsMax      int     `json:"grants_per_waiter_max"`
	Overtakes      int     `json:"overtakes"`
	OvertakePct    float64 `json:"overtakes_pct_of_grants"`
	MaxOvertaken   int     `json:"max_times_one_wait_was_overtaken"`
	MarginMs       float64 `json:"overtake_margin_ms"`
	// MaxLeadMs is the longest time by which an overtaking wait began
	// after a wait it overtook.
	MaxLeadMs float64 `json:"overtake_max_lead_ms"`
	Pending   int     `json:"waits_pending_at_end"`
	// Overlaps counts grants made before the previous holder began to
	// unlock: a broken mutual exclusion if ever above zero.
	Overlaps int `json:"overlaps"`
}

// Soak holds the figures of the auto-extension scenario.
type Soak struct {
	Leases          int     `json:"leases"`
	Held            int     `json:"held"`
	Lost            int     `json:"lost"`
	TTLS            float64 `json:"ttl_s"`
	HoldS           float64 `json:"hold_s"`
	AcquireS        float64 `json:"acquire_s"`
	RedisCPUPct     float64 `json:"redis_cpu_pct_of_core"`
	ClientCPUPct    float64 `json:"client_cpu_pct_of_core"`
	RedisCmdsPerSec float64 `json:"redis_cmds_per_s"`
}

// aggregate fills res from the workers' reports and the Redis samples of
// the window.
func aggregate(res *Result, s spec, reps []workerReport, w startMsg, cmds int64, redisCPU time.Duration) {
	var cpu int64
	var mallocs uint64
	var lat []int64
	var events []event
	for _, r := range reps {
		res.Ops += r.Ops
		res.Errors += r.Errors
		if res.FirstError == "" {
			res.FirstError = r.FirstError
		}
		cpu += r.CPUNs
		mallocs += r.Mallocs
		lat = append(lat, r.LatNs...)
		events = append(events, r.Events...)
	}
	res.RedisCmds = cmds
	res.RedisCPUMs = float64(redisCPU) / 1e6
	res.ClientCPUMs = float64(cpu) / 1e6
	window := float64(w.End-w.Start) / 1e9
	if s.scenario != scSoak && res.Ops > 0 {
		n := float64(res.Ops)
		res.RedisCmdsPerOp = float64(cmds) / n
		res.RedisCPUPerOpUs = float64(redisCPU) / 1e3 / n
		res.ClientCPUPerOpUs = float64(cpu) / 1e3 / n
	}
	switch s.scenario {
	case scSerial, scParallel:
		t := &Throughput{OpsPerSec: float64(res.Ops) / window}
		t.P50Us, t.P99Us = us(percentile(lat, 50)), us(percentile(lat, 99))
		t.P50Ping, t.P99Ping = ratio(t.P50Us, res.PingP50Us), ratio(t.P99Us, res.PingP50Us)
		if res.Ops > 0 {
			t.AllocsPerOp = float64(mallocs) / float64(res.Ops)
		}
		res.Throughput = t
	case scHot, scFIFO:
		var waiters []int
		for p := range s.procs {
			for g := range s.perProc {
				waiters = append(waiters, p*100000+g)
			}
		}
		sum := summarizeHot(events, waiters, w.Start, w.End, s.margin)
		h := &Hot{
			HoldMs: float64(s.hold) / 1e6, Waiters: s.goroutines(), Grants: sum.grants, Utilization: sum.utilization,
			Handoffs: len(sum.handoffs), Overtakes: sum.overtakes, MaxOvertaken: sum.maxOvertaken,
			MarginMs: float64(s.margin) / 1e6, MaxLeadMs: float64(sum.maxLead) / 1e6, Pending: sum.pending, Overlaps: sum.overlaps,
		}
		h.HandoffP50Us, h.HandoffP99Us = us(percentile(sum.handoffs, 50)), us(percentile(sum.handoffs, 99))
		h.HandoffP50Ping, h.HandoffP99Ping = ratio(h.HandoffP50Us, res.PingP50Us), ratio(h.HandoffP99Us, res.PingP50Us)
		h.GrantsMin, h.GrantsMax = minMax(sum.perWaiter)
		if sum.grants > 0 {
			h.OvertakePct = 100 * float64(sum.overtakes) / float64(sum.grants)
		}
		res.Hot = h
	case scSoak:
		k := &Soak{Leases: s.leases, TTLS: s.ttl.Seconds(), HoldS: window}
		for _, r := range reps {
			k.Held += r.Held
			k.Lost += r.Lost
			k.AcquireS += float64(r.AcquireNs) / 1e9
		}
		k.RedisCPUPct = 100 * redisCPU.Seconds() / window
		k.ClientCPUPct = 100 * float64(cpu) / 1e9 / window
		k.RedisCmdsPerSec = float64(cmds) / window
		res.Soak = k
	}
}

// primary is the figure by which the best round of a case is chosen.
func (r Result) primary() float64 {
	if r.Error != "" {
		return -1
	}
	switch {
	case r.Throughput != nil:
		return r.Throughput.OpsPerSec
	case r.Hot != nil:
		return r.Hot.Utilization
	}
	return 0
}

// bestRounds keeps, for each scenario, case and library, the result with
// the highest primary figure, in run order of the first round.
func bestRounds(all []Result) []Result {
	type key struct{ sc, c, lib string }
	idx := map[key]int{}
	var out []Result
	for _, r := range all {
		k := key{r.Scenario, r.Case, r.Lib}
		i, ok := idx[k]
		if !ok {
			idx[k] = len(out)
			out = append(out, r)
			continue
		}
		if r.primary() > out[i].primary() {
			out[i] = r
		}
	}
	return out
}

func (r Result) progress() string {
	head := fmt.Sprintf("%-8s %-28s %-13s", r.Scenario, r.Case, r.Lib)
	if r.Error != "" {
		return head + " FAILED: " + r.Error
	}
	var b strings.Builder
	b.WriteString(head)
	switch {
	case r.Throughput != nil:
		fmt.Fprintf(&b, " %9.0f ops/s  p50 %7.1fµs  p99 %8.1fµs", r.Throughput.OpsPerSec, r.Throughput.P50Us, r.Throughput.P99Us)
	case r.Hot != nil:
		fmt.Fprintf(&b, " util %.2f  handoff p50 %7.1fµs (%d handoffs)  grants %d  overtakes %d", r.Hot.Utilization, r.Hot.HandoffP50Us, r.Hot.Handoffs, r.Hot.Grants, r.Hot.Overtakes)
	case r.Soak != nil:
		fmt.Fprintf(&b, " lost %d/%d  redis CPU %.1f%%  client CPU %.1f%%", r.Soak.Lost, r.Soak.Held, r.Soak.RedisCPUPct, r.Soak.ClientCPUPct)
	}
	if r.Errors > 0 {
		fmt.Fprintf(&b, "  (%d errors, first: %s)", r.Errors, r.FirstError)
	}
	return b.String()
}

func (rep *Report) json() ([]byte, error) {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	return append(b, '\n'), nil
}

// byScenario returns the best results of scenario, in report order.
func (rep *Report) byScenario(scenario string) []Result {
	var out []Result
	for _, r := range rep.Best {
		if r.Scenario == scenario {
			out = append(out, r)
		}
	}
	return out
}

func num(f float64, prec int) string {
	if f == 0 {
		return "0"
	}
	return fmt.Sprintf("%.*f", prec, f)
}

func thousands(f float64) string {
	s := fmt.Sprintf("%.0f", f)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// failedRow renders a failed measurement across cols columns after the
// leading cells.
func failedRow(lead []string, cols int, r Result) string {
	cells := append(slices.Clone(lead), "failed: "+strings.ReplaceAll(r.Error, "|", "/"))
	for len(cells) < cols {
		cells = append(cells, "")
	}
	return "| " + strings.Join(cells, " | ") + " |\n"
}

func row(cells ...string) string { return "| " + strings.Join(cells, " | ") + " |\n" }

func header(cells ...string) string {
	seps := make([]string, len(cells))
	for i := range seps {
		seps[i] = "---"
		if i > 0 {
			seps[i] = "---:"
		}
	}
	return row(cells...) + row(seps...)
}

func errNote(r Result) string {
	if r.Errors == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d errors)", r.Errors)
}

// markdown renders the report as markdown tables.
func (rep *Report) markdown() string {
	var b strings.Builder
	m := rep.Machine
	b.WriteString("# distlock and its peers: benchmark results\n\n")
	fmt.Fprintf(&b, "%s. Machine: %d CPUs, %s, %s/%s; %s; redis-server %s on the same host (loopback, no persistence). ",
		rep.Date, m.CPUs, m.CPUModel, m.GOOS, m.GOARCH, m.Go, m.Redis)
	c := rep.Config
	pings := make([]string, len(rep.PingP50Us))
	for i, p := range rep.PingP50Us {
		pings[i] = num(p, 1) + "µs"
	}
	fmt.Fprintf(&b, "Windows: %gs (serial, parallel), %gs (hot, fifo), %gs holding %d leases (soak); %d round(s), %s. PING p50 per round: %s. Run time %.0fs.\n\n",
		c.DurationS, c.HotDurationS, c.SoakHoldS, c.SoakLeases, c.Rounds, c.Selection, strings.Join(pings, ", "), rep.ElapsedS)
	b.WriteString("Libraries:\n\n")
	for _, l := range c.Libraries {
		fmt.Fprintf(&b, "- **%s**: %s\n", l, rep.Notes[l])
	}
	fmt.Fprintf(&b, "\nThe polling libraries retry every %gms while they wait (-poll). Redis commands include those called from scripts; CPU is user+system time, Redis's from INFO cpu, the clients' from getrusage in every worker process. Ratios are to the PING p50 of the same round.\n",
		c.PollMs)

	if rs := rep.byScenario(scSerial); len(rs) > 0 {
		b.WriteString("\n## 1. Serial: one goroutine, Lock+Unlock of one key\n\n")
		b.WriteString(header("library", "ops/s", "p50 µs", "p99 µs", "p50/PING", "p99/PING", "Redis cmds/op", "Redis CPU µs/op", "client CPU µs/op", "allocs/op"))
		for _, r := range rs {
			if r.Error != "" {
				b.WriteString(failedRow([]string{r.Lib}, 10, r))
				continue
			}
			t := r.Throughput
			b.WriteString(row(r.Lib+errNote(r), thousands(t.OpsPerSec), num(t.P50Us, 1), num(t.P99Us, 1), num(t.P50Ping, 2), num(t.P99Ping, 2),
				num(r.RedisCmdsPerOp, 2), num(r.RedisCPUPerOpUs, 1), num(r.ClientCPUPerOpUs, 1), num(t.AllocsPerOp, 0)))
		}
	}
	if rs := rep.byScenario(scParallel); len(rs) > 0 {
		b.WriteString("\n## 2. Parallel: each goroutine Lock+Unlock of its own key, one locker per process\n\n")
		b.WriteString(header("case", "library", "ops/s", "p50 µs", "p99 µs", "p50/PING", "Redis cmds/op", "Redis CPU µs/op", "client CPU µs/op", "allocs/op"))
		for _, r := range rs {
			if r.Error != "" {
				b.WriteString(failedRow([]string{r.Case, r.Lib}, 10, r))
				continue
			}
			t := r.Throughput
			b.WriteString(row(r.Case, r.Lib+errNote(r), thousands(t.OpsPerSec), num(t.P50Us, 1), num(t.P99Us, 1), num(t.P50Ping, 2),
				num(r.RedisCmdsPerOp, 2), num(r.RedisCPUPerOpUs, 1), num(r.ClientCPUPerOpUs, 1), num(t.AllocsPerOp, 0)))
		}
	}
	if rs := rep.byScenario(scHot); len(rs) > 0 {
		fmt.Fprintf(&b, "\n## 3. Hot key: one key held %gms per grant, waiters spread over up to 4 processes\n\n", firstHot(rs).HoldMs)
		fmt.Fprintf(&b, "Utilization is the time the key was held over the window; a handoff runs from the holder's Unlock call to the next grant to another waiter (a waiter that takes the key again at once makes no handoff). Overtakes as in section 4 (margin %gms).\n\n", firstHot(rs).MarginMs)
		b.WriteString(header("waiters", "library", "grants", "handoffs", "utilization", "handoff p50 µs", "handoff p99 µs", "p50/PING", "p99/PING", "grants/waiter min–max", "overtakes", "Redis cmds/grant", "Redis CPU µs/grant", "client CPU µs/grant"))
		for _, r := range rs {
			if r.Error != "" {
				b.WriteString(failedRow([]string{r.Case, r.Lib}, 14, r))
				continue
			}
			h := r.Hot
			p50, p99, p50r, p99r := num(h.HandoffP50Us, 1), num(h.HandoffP99Us, 1), num(h.HandoffP50Ping, 1), num(h.HandoffP99Ping, 1)
			if h.Handoffs == 0 {
				p50, p99, p50r, p99r = "no handoff", "–", "–", "–"
			}
			b.WriteString(row(r.Case, r.Lib+errNote(r)+overlapNote(h), fmt.Sprint(h.Grants), fmt.Sprint(h.Handoffs), num(h.Utilization, 3), p50, p99,
				p50r, p99r, fmt.Sprintf("%d–%d", h.GrantsMin, h.GrantsMax), fmt.Sprint(h.Overtakes),
				num(r.RedisCmdsPerOp, 1), num(r.RedisCPUPerOpUs, 1), num(r.ClientCPUPerOpUs, 1)))
		}
	}
	if rs := rep.byScenario(scFIFO); len(rs) > 0 {
		h0 := firstHot(rs)
		fmt.Fprintf(&b, "\n## 4. FIFO fairness: %s over 4 processes, hold %gms\n\n", rs[0].Case, h0.HoldMs)
		fmt.Fprintf(&b, "An overtake is a grant to a waiter that began waiting more than %gms after another waiter that was still waiting. Only distlock-fifo promises arrival order; the others have no FIFO mode and run as they are.\n\n", h0.MarginMs)
		b.WriteString(header("library", "grants", "overtakes", "% of grants", "most overtakes of one wait", "longest lead ms", "grants/waiter min–max", "pending at end", "handoff p50 µs", "utilization", "Redis cmds/grant"))
		for _, r := range rs {
			if r.Error != "" {
				b.WriteString(failedRow([]string{r.Lib}, 11, r))
				continue
			}
			h := r.Hot
			b.WriteString(row(r.Lib+errNote(r)+overlapNote(h), fmt.Sprint(h.Grants), fmt.Sprint(h.Overtakes), num(h.OvertakePct, 1), fmt.Sprint(h.MaxOvertaken), num(h.MaxLeadMs, 1),
				fmt.Sprintf("%d–%d", h.GrantsMin, h.GrantsMax), fmt.Sprint(h.Pending), handoffP50(h), num(h.Utilization, 3), num(r.RedisCmdsPerOp, 1)))
		}
	}
	if rs := rep.byScenario(scSoak); len(rs) > 0 {
		k0 := rs[0].Soak
		if k0 == nil {
			k0 = &Soak{Leases: c.SoakLeases, TTLS: c.SoakTTLS, HoldS: c.SoakHoldS}
		}
		fmt.Fprintf(&b, "\n## 5. Auto-extension: %d leases on distinct keys, TTL %gs, held %gs\n\n", k0.Leases, k0.TTLS, k0.HoldS)
		b.WriteString("distlock: middleware.AutoExtend (renewal every TTL/3, pipelined); redsync and redislock: Extend / Refresh of every lease every TTL/3 from 16 goroutines; rueidislock: its own extension (every TTL/2, a goroutine per lock). CPU is per second of holding, in % of one core.\n\n")
		b.WriteString(header("library", "held", "lost", "Redis CPU %", "Redis cmds/s", "client CPU %", "acquire s"))
		for _, r := range rs {
			if r.Error != "" {
				b.WriteString(failedRow([]string{r.Lib}, 7, r))
				continue
			}
			k := r.Soak
			b.WriteString(row(r.Lib+errNote(r), fmt.Sprint(k.Held), fmt.Sprint(k.Lost), num(k.RedisCPUPct, 1), thousands(k.RedisCmdsPerSec),
				num(k.ClientCPUPct, 1), num(k.AcquireS, 2)))
		}
	}
	if errs := collectErrors(rep.Best); len(errs) > 0 {
		b.WriteString("\nErrors during measurements (first of each):\n\n")
		for _, e := range errs {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	return b.String()
}

// firstHot returns the hot-key figures of the first result that has them,
// for the settings they share.
func firstHot(rs []Result) *Hot {
	for _, r := range rs {
		if r.Hot != nil {
			return r.Hot
		}
	}
	return &Hot{}
}

func handoffP50(h *Hot) string {
	if h.Handoffs == 0 {
		return "no handoff"
	}
	return num(h.HandoffP50Us, 1)
}

func overlapNote(h *Hot) string {
	if h.Overlaps == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d OVERLAPPING GRANTS)", h.Overlaps)
}

func collectErrors(rs []Result) []string {
	var out []string
	for _, r := range rs {
		if r.Errors > 0 {
			out = append(out, fmt.Sprintf("%s %s %s: %d errors, first: %s", r.Scenario, r.Case, r.Lib, r.Errors, r.FirstError))
		}
	}
	sort.Strings(out)
	return out
}
