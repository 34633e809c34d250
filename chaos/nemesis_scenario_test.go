package chaos_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/distlock/distlock/chaos"
)

// TestNemesisFaults runs a short scenario for a sample of the faults that
// need more than signals: the proxy, a restart with AOF, CLIENT KILL of
// subscriptions, eviction, and stalled holders. Each must inject its fault
// and keep distlock's promises (eviction is documented unsafe: it must
// evict lock keys, and is only measured).
func TestNemesisFaults(t *testing.T) {
	for _, sc := range []chaos.Scenario{
		{Name: "proxy-drop/fifo", Lock: "real", FIFO: true, Fault: chaos.FaultProxyDrop, Expect: chaos.ExpectSafe},
		{Name: "proxy-reset/plain", Lock: "real", Fault: chaos.FaultProxyReset, Expect: chaos.ExpectSafe},
		{Name: "redis-restart-aof/fifo", Lock: "real", FIFO: true, Fault: chaos.FaultRedisRestartAOF, Expect: chaos.ExpectSafe},
		{Name: "client-kill-pubsub/plain", Lock: "real", Fault: chaos.FaultClientKillPubSub, Expect: chaos.ExpectSafe},
		{Name: "evict/plain", Lock: "real", Fault: chaos.FaultEvict, Expect: chaos.ExpectUnsafe},
		{Name: "stall-holder/plain", Lock: "real", Fault: chaos.FaultStallHolder, Expect: chaos.ExpectSafe},
	} {
		t.Run(sc.Name, func(t *testing.T) {
			row, err := chaos.Run(t.Context(), sc, chaos.Options{Clients: 3, Duration: 2500 * time.Millisecond,
				TTL: 300 * time.Millisecond, Seed: 1, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := chaos.WriteMarkdown(&b, []chaos.Row{row}); err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", b.String())
			if !row.Pass {
				t.Fatalf("%s: %s; examples: %q", sc.Name, row.Reason, row.Examples)
			}
			// A stalled holder is a client behaviour, not a nemesis action.
			if sc.Fault != chaos.FaultStallHolder && row.Faults == 0 {
				t.Fatalf("%s injected no fault", sc.Name)
			}
		})
	}
}
