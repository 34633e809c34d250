package chaos_test

import (
	"testing"

	"github.com/distlock/distlock/chaos"
)

// grant returns the events of one lease of key by client: Lock invoked at
// invoke, returned at start, last found valid at end.
func grant(client int, key, token string, fence, invoke, start, end, deadline int64) []chaos.Event {
	base := chaos.Event{Client: client, Keys: []string{key}, Token: token, Fence: fence, Deadline: deadline}
	inv := chaos.Event{Client: client, Op: chaos.OpLock, Type: chaos.TypeInvoke, T: invoke, Keys: []string{key}}
	ok := base
	ok.Op, ok.Type, ok.T = chaos.OpLock, chaos.TypeOK, start
	chk := base
	chk.Op, chk.Type, chk.T = chaos.OpCheck, chaos.TypeOK, end
	return []chaos.Event{inv, ok, chk}
}

func history(parts ...[]chaos.Event) []chaos.Event {
	var h []chaos.Event
	for _, p := range parts {
		h = append(h, p...)
	}
	// Check wants events in time order.
	for i := 1; i < len(h); i++ {
		for j := i; j > 0 && h[j].T < h[j-1].T; j-- {
			h[j], h[j-1] = h[j-1], h[j]
		}
	}
	return h
}

func TestCheckClean(t *testing.T) {
	h := history(
		grant(1, "k", "a", 10, 0, 5, 20, 30),
		grant(2, "k", "b", 40, 1, 35, 50, 60),
		grant(3, "other", "c", 5, 2, 10, 45, 60), // another key may overlap
	)
	r := chaos.Check(h)
	if r.Granted != 3 || r.Overlaps != 0 || r.HardOverlaps != 0 || r.FenceRegressions != 0 || r.Broken() {
		t.Fatalf("clean history flagged: %+v", r)
	}
}

func TestCheckSoftOverlap(t *testing.T) {
	// b starts after a's deadline but while a still believed itself valid.
	h := history(
		grant(1, "k", "a", 10, 0, 5, 40, 30),
		grant(2, "k", "b", 40, 1, 35, 50, 60),
	)
	r := chaos.Check(h)
	if r.Overlaps != 1 || r.HardOverlaps != 0 || r.Broken() {
		t.Fatalf("want one soft overlap only: %+v", r)
	}
}

func TestCheckHardOverlap(t *testing.T) {
	h := history(
		grant(1, "k", "a", 10, 0, 5, 40, 50),
		grant(2, "k", "b", 40, 1, 35, 50, 60),
	)
	r := chaos.Check(h)
	if r.Overlaps != 1 || r.HardOverlaps != 1 || !r.Broken() {
		t.Fatalf("want a hard overlap: %+v", r)
	}
}

func TestCheckFenceRegression(t *testing.T) {
	h := history(
		grant(1, "k", "a", 50, 0, 5, 20, 30),
		grant(2, "k", "b", 40, 25, 35, 50, 60), // invoked after a returned: must be above 50
	)
	r := chaos.Check(h)
	if r.FenceRegressions != 1 || !r.Broken() {
		t.Fatalf("want a fence regression: %+v", r)
	}
	// Concurrent Locks may be granted in either order.
	h = history(
		grant(1, "k", "a", 50, 0, 5, 20, 30),
		grant(2, "k", "b", 40, 1, 35, 50, 60), // invoked before a returned
	)
	if r := chaos.Check(h); r.FenceRegressions != 0 {
		t.Fatalf("concurrent grants flagged: %+v", r)
	}
}

func TestStore(t *testing.T) {
	s := chaos.NewStore(nil)
	steps := []struct {
		fence int64
		token string
		want  bool
	}{
		{10, "a", true},
		{10, "a", true}, // the same lease again
		{9, "b", false}, // lower: rejected
		{10, "c", true}, // equal from another lease: accepted, but stale
		{11, "d", true},
	}
	for i, st := range steps {
		if got := s.Write("k", st.fence, st.token, 1); got != st.want {
			t.Fatalf("step %d: Write(%d, %s) = %v, want %v", i, st.fence, st.token, got, st.want)
		}
	}
	if got, want := s.Stats(), (chaos.StoreStats{Accepted: 4, Rejected: 1, StaleAccepted: 1}); got != want {
		t.Fatalf("Stats() = %+v, want %+v", got, want)
	}
}
