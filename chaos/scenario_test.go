package chaos_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distlock/distlock/chaos"
)

func runScenario(t *testing.T, name string) chaos.Row {
	t.Helper()
	if _, err := chaos.RedisBinary(); err != nil {
		t.Skip(err)
	}
	for _, sc := range chaos.Scenarios() {
		if sc.Name != name {
			continue
		}
		row, err := chaos.Run(t.Context(), sc, chaos.Options{Clients: 4, Duration: 3 * time.Second,
			TTL: 400 * time.Millisecond, Seed: 1, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := chaos.WriteMarkdown(&b, []chaos.Row{row}); err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s", b.String())
		return row
	}
	t.Fatalf("no scenario %q", name)
	return chaos.Row{}
}

func TestScenarioNone(t *testing.T) {
	row := runScenario(t, "none/plain")
	if !row.Pass || row.Overlaps != 0 {
		t.Fatalf("none/plain: %+v", row)
	}
}

func TestScenarioPauseHolderFIFO(t *testing.T) {
	row := runScenario(t, "pause-holder/fifo")
	if !row.Pass {
		t.Fatalf("pause-holder/fifo: %+v", row)
	}
}

// TestSelfTest proves that the checkers can fail: the broken lock must be
// flagged with overlaps, hard overlaps, fence regressions and stale writes.
func TestSelfTest(t *testing.T) {
	row := runScenario(t, "selftest/broken")
	if !row.Pass || row.HardOverlaps == 0 || row.FenceRegressions == 0 || row.StaleRejected == 0 {
		t.Fatalf("self-test not flagged: %+v", row)
	}
}

// TestCommandExitCode builds cmd/chaos and checks that it re-executes
// itself as clients and exits 0 on a passing run.
func TestCommandExitCode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	if _, err := chaos.RedisBinary(); err != nil {
		t.Skip(err)
	}
	bin := t.TempDir() + "/chaos"
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/chaos").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-duration", "2s", "-clients", "3", "-dir", t.TempDir(), "-scenarios", "none/plain")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chaos: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "| none/plain | safe |") {
		t.Fatalf("no row for none/plain:\n%s", out)
	}
}

// TestReplicatedDeployments runs a short scenario on a Cluster whose
// primary is killed (unsafe without Config.Replicas: the nemesis must find
// grants the promoted replica lacks) and on a Sentinel deployment with
// Config.Replicas (safe). Each must inject its fault without error and end
// every gap in the key watcher's view.
func TestReplicatedDeployments(t *testing.T) {
	for _, name := range []string{"cluster-kill-primary/plain", "sentinel-failover/fifo+replicas"} {
		t.Run(name, func(t *testing.T) {
			var sc chaos.Scenario
			for _, s := range chaos.Scenarios() {
				if s.Name == name {
					sc = s
				}
			}
			dir := t.TempDir()
			row, err := chaos.Run(t.Context(), sc, chaos.Options{Clients: 4, Duration: 3 * time.Second,
				TTL: 400 * time.Millisecond, Seed: 1, Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := chaos.WriteMarkdown(&b, []chaos.Row{row}); err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", b.String())
			if !row.Pass || row.Faults == 0 || row.FaultErrors > 0 {
				t.Fatalf("%s: %s; examples %q", name, row.Reason, row.Examples)
			}
			events, err := chaos.ReadHistory(filepath.Join(dir, strings.ReplaceAll(name, "/", "_")))
			if err != nil {
				t.Fatal(err)
			}
			var gaps, ends, lost int
			for _, e := range events {
				switch {
				case e.Op == chaos.OpWatcherGap && e.Type == chaos.TypeInvoke:
					gaps++
				case e.Op == chaos.OpWatcherGap && e.Type == chaos.TypeOK:
					ends++
				case e.Op == chaos.OpFailoverLost:
					lost++
				}
			}
			if gaps == 0 || ends != gaps {
				t.Fatalf("%d gaps in the watcher's view, %d ended", gaps, ends)
			}
			if sc.Replicas == 0 && lost == 0 {
				t.Fatal("the promoted replicas had every grant of the killed primaries")
			}
		})
	}
}
