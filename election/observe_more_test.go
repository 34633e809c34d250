package election_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/election"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// A second Observe of a name that the same Election already observes
// shares its channel subscription, and still gets the current leader
// first.
func TestSecondObserveGetsCurrentLeader(t *testing.T) {
	srv := redistest.Shared(t)
	p := prefix(t)
	e := newElection(t, srv.Client(t), p, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	term, err := e.Campaign(ctx, "n", "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer term.Resign(context.Background())
	first := e.Observe(ctx, "n")
	if l := next(t, first, 2*time.Second); l.Value != "alice" {
		t.Fatalf("first observer: %+v", l)
	}
	second := e.Observe(ctx, "n")
	if l := next(t, second, 2*time.Second); l.Value != "alice" {
		t.Fatalf("second observer: %+v", l)
	}
}

// hookLocker runs after after each Lock that succeeds.
type hookLocker struct {
	*mutex.Mutex
	after func()
}

func (h hookLocker) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	l, err := h.Mutex.Lock(ctx, keys...)
	if err == nil && keys[0] == "n" {
		h.after()
	}
	return l, err
}

// A Campaign whose record write reaches Redis after the Campaign gave up
// (and released its lease) leaves a record, and an announcement, of a
// term that holds nothing: Leader does not report it, and Observe does not
// deliver it.
func TestFailedCampaignLeavesNoLeader(t *testing.T) {
	srv := redistest.Shared(t)
	p := prefix(t)
	direct := srv.Client(t)
	admin := srv.Client(t)
	slow := srv.Client(t, func(o *redis.Options) {
		o.ReadTimeout = 200 * time.Millisecond
		o.MaxRetries = -1
	})
	m, err := mutex.New(direct, mutex.Config{Prefix: p, TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	stall := func() {
		// Redis stalls: the record write waits in its socket.
		go admin.Eval(context.Background(), `local s = redis.call('TIME')[1]
while redis.call('TIME')[1] - s < 2 do end
return 0`, nil)
		time.Sleep(50 * time.Millisecond)
	}
	e, err := election.New(hookLocker{m, stall}, slow, election.Config{Prefix: p})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	watcher := newElection(t, direct, p, 5*time.Second)
	obs := watcher.Observe(context.Background(), "n")
	time.Sleep(100 * time.Millisecond)

	// Load the scripts.
	warm, err := e.Campaign(context.Background(), "warm", "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := warm.Resign(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = e.Campaign(context.Background(), "n", "ghost")
	if err == nil {
		t.Fatal("Campaign succeeded while Redis stalled")
	}
	t.Logf("Campaign: %v", err)
	time.Sleep(200 * time.Millisecond)
	t.Logf("keys: %v", direct.Keys(context.Background(), p+"*").Val())
	if st, err := m.Check(context.Background(), "n"); err != nil || st != mutex.Available {
		t.Fatalf("name is %v, %v; want it free", st, err)
	}
	if l, err := watcher.Leader(context.Background(), "n"); err == nil {
		t.Errorf("Leader reports %+v although nobody holds the name", l)
	}
	select {
	case l := <-obs:
		t.Errorf("Observe delivered %+v although nobody holds the name", l)
	case <-time.After(200 * time.Millisecond):
	}
}
