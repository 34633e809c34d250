package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the worker processes that the
// runner starts by re-executing itself.
func TestMain(m *testing.M) {
	if IsWorker() {
		os.Exit(WorkerMain())
	}
	os.Exit(m.Run())
}

func needRedis(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not on PATH; install it with: apt-get install redis-server:", err)
	}
}

// runMain runs the whole benchmark with args into a temporary directory
// and returns it with the decoded results.json.
func runMain(t *testing.T, args ...string) (string, Report) {
	t.Helper()
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := Main(append(args, "-out", out), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	js, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), string(md)) {
		t.Error("stdout does not hold the markdown of results.md")
	}
	return out, rep
}

// TestSmokeSerial runs the serial scenario of every library end to end:
// a redis-server of its own, a worker process per measurement, the report,
// the JSON and the chart.
func TestSmokeSerial(t *testing.T) {
	needRedis(t)
	out, rep := runMain(t, "-only", "serial", "-duration", "150ms", "-rounds", "1")
	if len(rep.Best) != len(allLibs) {
		t.Fatalf("got %d results, want one per library (%d)", len(rep.Best), len(allLibs))
	}
	for _, r := range rep.Best {
		if r.Error != "" || r.Errors > 0 {
			t.Errorf("%s: error %q, %d errors (%s)", r.Lib, r.Error, r.Errors, r.FirstError)
			continue
		}
		if r.Throughput == nil || r.Ops == 0 || r.Throughput.P50Us <= 0 || r.Throughput.P50Ping <= 0 {
			t.Errorf("%s: no throughput figures: %+v", r.Lib, r)
			continue
		}
		if r.RedisCmdsPerOp < 1 {
			t.Errorf("%s: %.2f Redis commands per Lock+Unlock, want >= 1", r.Lib, r.RedisCmdsPerOp)
		}
		if r.Throughput.AllocsPerOp <= 0 {
			t.Errorf("%s: %.1f allocations per Lock+Unlock, want > 0", r.Lib, r.Throughput.AllocsPerOp)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "serial_p50.png")); err != nil || fi.Size() == 0 {
		t.Errorf("serial_p50.png not written: %v", err)
	}
}

// TestSmokeFIFO runs the FIFO scenario for distlock's FIFO mode and checks
// that the key was handed over in arrival order, and never to two holders.
func TestSmokeFIFO(t *testing.T) {
	needRedis(t)
	_, rep := runMain(t, "-only", "fifo", "-libs", "distlock-fifo", "-duration", "200ms", "-rounds", "1", "-no-charts")
	if len(rep.Best) != 1 || rep.Best[0].Hot == nil {
		t.Fatalf("want one FIFO result, got %+v", rep.Best)
	}
	r := rep.Best[0]
	if r.Error != "" || r.Errors > 0 {
		t.Fatalf("error %q, %d errors (%s)", r.Error, r.Errors, r.FirstError)
	}
	if r.Hot.Grants == 0 || r.Hot.Overlaps != 0 {
		t.Errorf("grants %d, overlapping grants %d", r.Hot.Grants, r.Hot.Overlaps)
	}
	// The margin absorbs scheduling delays; a loaded host can still exceed
	// it now and then, so only a clear breach of the order fails.
	if r.Hot.Overtakes > 1 {
		t.Errorf("%d overtakes in FIFO mode (longest lead %.1fms)", r.Hot.Overtakes, r.Hot.MaxLeadMs)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-only", "nosuch"},
		{"-libs", "nosuch"},
		{"-duration", "0s"},
		{"-rounds", "0"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := Main(args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit code %d, want 2 (stderr %q)", args, code, stderr.String())
		}
	}
}

// ms returns a timestamp n milliseconds into a window that starts at 1s
// (0 marks a pending wait in events, so no real time is 0).
func ms(n int64) int64 { return (1000 + n) * int64(time.Millisecond) }

func TestSummarizeHot(t *testing.T) {
	start, end := ms(0), ms(100)
	margin := 4 * time.Millisecond
	t.Run("arrival order", func(t *testing.T) {
		// Waiters 1, 2, 1 again and 3 wait from 0, 10, 11 and 20 and are
		// granted in that order.
		events := []event{
			{Waiter: 1, Wait: ms(0), Grant: ms(1), Release: ms(11)},
			{Waiter: 2, Wait: ms(10), Grant: ms(12), Release: ms(22)},
			{Waiter: 1, Wait: ms(11), Grant: ms(23), Release: ms(33)},
			{Waiter: 3, Wait: ms(20), Grant: ms(34), Release: ms(44)},
		}
		s := summarizeHot(events, []int{1, 2, 3, 4}, start, end, margin)
		if s.grants != 4 || s.overtakes != 0 || s.overlaps != 0 {
			t.Errorf("grants %d overtakes %d overlaps %d, want 4 0 0", s.grants, s.overtakes, s.overlaps)
		}
		if lo, hi := minMax(s.perWaiter); lo != 0 || hi != 2 {
			t.Errorf("grants per waiter %d–%d, want 0–2 (waiter 4 never granted)", lo, hi)
		}
		if len(s.handoffs) != 3 || s.handoffs[0] != int64(time.Millisecond) {
			t.Errorf("handoffs %v, want 3 of 1ms each", s.handoffs)
		}
		if want := 0.40; s.utilization < want-1e-9 || s.utilization > want+1e-9 {
			t.Errorf("utilization %v, want %v", s.utilization, want)
		}
	})
	t.Run("barging", func(t *testing.T) {
		// Waiter 2 waits from 5; waiter 1 unlocks at 10 and takes the key
		// again at once, then a third waiter starting at 30 is served
		// before 2 too, and 2 is still waiting at the end.
		events := []event{
			{Waiter: 1, Wait: ms(0), Grant: ms(0), Release: ms(10)},
			{Waiter: 2, Wait: ms(5)},
			{Waiter: 1, Wait: ms(10), Grant: ms(10), Release: ms(20)},
			{Waiter: 3, Wait: ms(30), Grant: ms(31), Release: ms(41)},
		}
		s := summarizeHot(events, []int{1, 2, 3}, start, end, margin)
		if s.overtakes != 2 || s.maxOvertaken != 2 || s.pending != 1 {
			t.Errorf("overtakes %d, max overtaken %d, pending %d; want 2 2 1", s.overtakes, s.maxOvertaken, s.pending)
		}
		if s.maxLead != int64(25*time.Millisecond) {
			t.Errorf("longest lead %v, want 25ms", time.Duration(s.maxLead))
		}
		// Waiter 1 regranted itself: not a handoff.
		if len(s.handoffs) != 1 || s.handoffs[0] != int64(11*time.Millisecond) {
			t.Errorf("handoffs %v, want one of 11ms", s.handoffs)
		}
	})
	t.Run("within margin", func(t *testing.T) {
		events := []event{
			{Waiter: 1, Wait: ms(0), Grant: ms(3), Release: ms(13)},
			{Waiter: 2, Wait: ms(1), Grant: ms(2), Release: ms(2)},
		}
		if s := summarizeHot(events, []int{1, 2}, start, end, margin); s.overtakes != 0 {
			t.Errorf("overtakes %d, want 0 within the margin", s.overtakes)
		}
	})
	t.Run("overlap", func(t *testing.T) {
		events := []event{
			{Waiter: 1, Wait: ms(0), Grant: ms(0), Release: ms(10)},
			{Waiter: 2, Wait: ms(0), Grant: ms(5), Release: ms(15)},
		}
		if s := summarizeHot(events, []int{1, 2}, start, end, margin); s.overlaps != 1 {
			t.Errorf("overlaps %d, want 1", s.overlaps)
		}
	})
}

func TestCountCommands(t *testing.T) {
	stats := map[string]string{
		"cmdstat_evalsha":          "calls=10,usec=100,usec_per_call=10.00,rejected_calls=0,failed_calls=0",
		"cmdstat_set":              "calls=10,usec=20,usec_per_call=2.00,rejected_calls=0,failed_calls=0",
		"cmdstat_info":             "calls=3,usec=20,usec_per_call=6.00,rejected_calls=0,failed_calls=0",
		"cmdstat_config|resetstat": "calls=1,usec=5,usec_per_call=5.00,rejected_calls=0,failed_calls=0",
		"cmdstat_ping":             "calls=7,usec=5,usec_per_call=1.00,rejected_calls=0,failed_calls=0",
		"cmdstat_client|tracking":  "calls=1,usec=5,usec_per_call=5.00,rejected_calls=0,failed_calls=0",
	}
	n, err := countCommands(stats)
	if err != nil || n != 21 {
		t.Errorf("countCommands = %d, %v; want 21", n, err)
	}
	if _, err := countCommands(map[string]string{"cmdstat_get": "nonsense"}); err == nil {
		t.Error("countCommands accepted a malformed field")
	}
}

func TestPercentile(t *testing.T) {
	s := []int64{5, 1, 4, 2, 3}
	if p := percentile(s, 50); p != 3 {
		t.Errorf("p50 = %d, want 3", p)
	}
	if p := percentile(s, 99); p != 4 {
		t.Errorf("p99 of 5 samples = %d, want 4 (nearest rank below)", p)
	}
	if p := percentile(nil, 50); p != 0 {
		t.Errorf("p50 of none = %d, want 0", p)
	}
}

func TestResolveOut(t *testing.T) {
	dir, err := resolveOut("")
	if err != nil {
		t.Fatal(err)
	}
	// The tests run in bench/, whose parent is the repository root.
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "docs", "bench"); dir != want {
		t.Errorf("default -out %s, want %s", dir, want)
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}
