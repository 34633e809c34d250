package election_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/election"
	"github.com/distlock/distlock/internal/locktest"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

func prefix(t testing.TB) string {
	return "t:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
}

// newElection returns an Election on a Mutex of its own, both on client
// and closed at cleanup.
func newElection(t testing.TB, client redis.UniversalClient, p string, ttl time.Duration) *election.Election {
	t.Helper()
	m, err := mutex.New(client, mutex.Config{Prefix: p, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	e, err := election.New(m, client, election.Config{Prefix: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Close()
		_ = m.Close()
	})
	return e
}

// next returns the next leader from obs, failing t if none comes in time.
func next(t testing.TB, obs <-chan election.Leader, timeout time.Duration) election.Leader {
	t.Helper()
	select {
	case l, ok := <-obs:
		if !ok {
			t.Fatal("Observe channel closed")
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("no leader observed within %v", timeout)
	}
	return election.Leader{}
}

// quiet fails t if obs delivers within d.
func quiet(t testing.TB, obs <-chan election.Leader, d time.Duration) {
	t.Helper()
	select {
	case l := <-obs:
		t.Fatalf("unexpected leader observed: %+v", l)
	case <-time.After(d):
	}
}

func TestInvalidInput(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never reached
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var nilMutex *mutex.Mutex
	var nilClient *redis.Client
	for _, tc := range []struct {
		l      mutex.Locker
		client redis.UniversalClient
		cfg    election.Config
		want   string
	}{
		{nil, client, election.Config{}, "nil Locker"},
		{nilMutex, client, election.Config{}, "nil Locker"},
		{m, nil, election.Config{}, "nil client"},
		{m, nilClient, election.Config{}, "nil client"},
		{m, client, election.Config{Prefix: "{"}, "brace"},
		{m, client, election.Config{TTL: -time.Second}, "negative TTL"},
	} {
		e, err := election.New(tc.l, tc.client, tc.cfg)
		if !errors.Is(err, mutex.ErrInvalid) || e != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error wrapping ErrInvalid that says %q", err, tc.want)
		}
	}
	e, err := election.New(m, client, election.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := t.Context()
	long := strings.Repeat("v", election.MaxValueLen+1)
	for _, tc := range []struct{ name, value, want string }{
		{"", "v", "empty name"},
		{"n", long, "longer than"},
		{strings.Repeat("n", mutex.MaxKeyLen+1), "v", "name of"},
		{"n", "\xff", "UTF-8"},
	} {
		_, err := e.Campaign(ctx, tc.name, tc.value)
		if !errors.Is(err, mutex.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Campaign(%.10q, %.10q): %v, want ErrInvalid saying %q", tc.name, tc.value, err, tc.want)
		}
		err = election.Run(ctx, e, tc.name, tc.value, func(context.Context) error { return nil })
		if !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("Run(%.10q, %.10q): %v, want ErrInvalid", tc.name, tc.value, err)
		}
	}
	if _, err := e.Leader(ctx, ""); !errors.Is(err, mutex.ErrInvalid) {
		t.Errorf("Leader of an empty name: %v", err)
	}
	if err := election.Run(ctx, e, "n", "v", nil); !errors.Is(err, mutex.ErrInvalid) {
		t.Errorf("Run without a function: %v", err)
	}
	if err := election.Run(ctx, nil, "n", "v", func(context.Context) error { return nil }); !errors.Is(err, mutex.ErrInvalid) {
		t.Errorf("Run without an Election: %v", err)
	}
	if _, ok := <-e.Observe(ctx, ""); ok {
		t.Error("Observe of an empty name delivered a leader")
	}
}

func TestCampaignResign(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, b redistest.Backend) {
		p := prefix(t)
		a, c := newElection(t, b.Client(t), p, 5*time.Second), newElection(t, b.Client(t), p, 5*time.Second)
		watcher := newElection(t, b.Client(t), p, 5*time.Second)
		ctx := t.Context()
		obs := watcher.Observe(ctx, "job")

		if _, err := watcher.Leader(ctx, "job"); !errors.Is(err, election.ErrNoLeader) {
			t.Fatalf("Leader before any campaign: %v", err)
		}
		ta, err := a.Campaign(ctx, "job", "a")
		if err != nil {
			t.Fatal(err)
		}
		if l := next(t, obs, 5*time.Second); l.Value != "a" || l.Fence != ta.Fence() {
			t.Fatalf("observed %+v, want a with fence %d", l, ta.Fence())
		}
		l, err := watcher.Leader(ctx, "job")
		if err != nil || l.Value != "a" || l.Fence != ta.Fence() || time.Since(l.Since) > time.Minute {
			t.Fatalf("Leader: %+v, %v", l, err)
		}
		won := make(chan *election.Term, 1)
		go func() {
			tc, err := c.Campaign(ctx, "job", "c")
			if err != nil {
				t.Error(err)
			}
			won <- tc
		}()
		quiet(t, obs, 100*time.Millisecond)
		resigned := time.Now()
		if err := ta.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(ta.Err(), mutex.ErrReleased) {
			t.Errorf("Err after Resign: %v", ta.Err())
		}
		tc := <-won
		if tc == nil {
			t.FailNow()
		}
		handover := time.Since(resigned)
		t.Logf("handover %v after Resign", handover)
		if handover > time.Second {
			t.Errorf("handover took %v", handover)
		}
		if l := next(t, obs, 5*time.Second); l.Value != "c" || l.Fence != tc.Fence() || l.Fence <= ta.Fence() {
			t.Fatalf("observed %+v, want c with fence %d > %d", l, tc.Fence(), ta.Fence())
		}
		if err := tc.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := watcher.Leader(ctx, "job"); !errors.Is(err, election.ErrNoLeader) {
			t.Errorf("Leader after the last Resign: %v", err)
		}
		quiet(t, obs, 50*time.Millisecond)
	})
}

// TestTermExtended holds a term for several TTLs: it stays held, and so
// does its record.
func TestTermExtended(t *testing.T) {
	srv := redistest.Shared(t)
	e := newElection(t, srv.Client(t), prefix(t), 300*time.Millisecond)
	ctx := t.Context()
	term, err := e.Campaign(ctx, "n", "me")
	if err != nil {
		t.Fatal(err)
	}
	defer term.Resign(ctx)
	time.Sleep(time.Second)
	if err := term.Err(); err != nil {
		t.Fatalf("term ended: %v", err)
	}
	if l, err := e.Leader(ctx, "n"); err != nil || l.Fence != term.Fence() {
		t.Fatalf("Leader: %+v, %v", l, err)
	}
}

// TestRunLosesAndCampaignsAgain takes the lock away from a leader running
// fn: fn's context is cancelled with a cause wrapping ErrNotHeld, and Run
// campaigns again.
func TestRunLosesAndCampaignsAgain(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	p := prefix(t)
	e := newElection(t, c, p, 300*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var runs atomic.Int32
	causes := make(chan error, 4)
	done := make(chan error, 1)
	go func() {
		done <- election.Run(ctx, e, "cron", "me", func(ctx context.Context) error {
			if runs.Add(1) == 2 {
				cancel()
			}
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return nil
		})
	}()
	for runs.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	// Another owner takes the lock: the next renewal finds it taken.
	if err := c.Set(ctx, p+":{cron}", "intruder:1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cause := <-causes
	if !errors.Is(cause, mutex.ErrNotHeld) {
		t.Fatalf("cause of the cancellation: %v", cause)
	}
	if err := c.Del(context.Background(), p+":{cron}").Err(); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel: %v", err)
	}
	if runs.Load() != 2 {
		t.Errorf("fn ran %d times, want 2", runs.Load())
	}
}

// TestRunReturns checks that Run resigns when fn returns while leading,
// and returns fn's error.
func TestRunReturns(t *testing.T) {
	srv := redistest.Shared(t)
	e := newElection(t, srv.Client(t), prefix(t), time.Second)
	boom := errors.New("boom")
	err := election.Run(t.Context(), e, "once", "me", func(ctx context.Context) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Run: %v", err)
	}
	if _, err := e.Leader(t.Context(), "once"); !errors.Is(err, election.ErrNoLeader) {
		t.Errorf("Leader after Run returned: %v", err)
	}
}

// TestObserveReconnect loses the observer's connection while the leader
// changes: after go-redis reconnects, Observe reads the current leader
// and delivers it.
func TestObserveReconnect(t *testing.T) {
	srv := redistest.Shared(t)
	p := prefix(t)
	proxied, proxy := redistest.ProxiedClient(t, srv)
	m, err := mutex.New(proxied, mutex.Config{Prefix: p})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	watcher, err := election.New(m, proxied, election.Config{Prefix: p})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	e := newElection(t, srv.Client(t), p, 5*time.Second)
	ctx := t.Context()
	obs := watcher.Observe(ctx, "n")
	t1, err := e.Campaign(ctx, "n", "first")
	if err != nil {
		t.Fatal(err)
	}
	next(t, obs, 5*time.Second)

	proxy.Pause()
	if err := t1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	t2, err := e.Campaign(ctx, "n", "second") // announced while cut off
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Resign(ctx)
	time.Sleep(50 * time.Millisecond)
	proxy.CutAll()
	proxy.Resume()
	l := next(t, obs, 10*time.Second)
	if l.Value != "second" || l.Fence != t2.Fence() {
		t.Fatalf("observed %+v after the reconnect, want the second term", l)
	}
	quiet(t, obs, 100*time.Millisecond)
}

// TestChildCandidate campaigns in a child process and reports its term
// (see TestKilledLeaders).
func TestChildCandidate(t *testing.T) {
	if !locktest.IsChild(t.Name()) {
		return
	}
	client, err := redisurl.Open(os.Getenv("ELECT_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ttl, _ := time.ParseDuration(os.Getenv("ELECT_TTL"))
	m, err := mutex.New(client, mutex.Config{Prefix: os.Getenv("ELECT_PREFIX"), TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	e, err := election.New(m, client, election.Config{Prefix: os.Getenv("ELECT_PREFIX")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	locktest.Report("campaigning")
	term, err := e.Campaign(context.Background(), "leader", os.Getenv("ELECT_VALUE"))
	if err != nil {
		t.Fatal(err)
	}
	locktest.Report("leader %d", term.Fence())
	select {} // until killed
}

// candidates starts n child processes that campaign for "leader", each
// with its index as value, and waits until they all campaign.
func candidates(t testing.TB, url, p string, ttl time.Duration, from, n int) map[string]*locktest.Child {
	t.Helper()
	children := make(map[string]*locktest.Child)
	for i := from; i < from+n; i++ {
		v := fmt.Sprint(i)
		children[v] = locktest.StartChild(t, "TestChildCandidate", "ELECT_URL="+url, "ELECT_PREFIX="+p, "ELECT_VALUE="+v, "ELECT_TTL="+ttl.String())
	}
	for _, c := range children {
		if line := c.Line(t, 10*time.Second); line != "campaigning" {
			t.Fatalf("child reported %q", line)
		}
	}
	return children
}

// TestKilledLeaders runs five candidates in child processes and kills the
// leader, one after another: each new leader is observed once, in order,
// with a greater term, within about a TTL of the kill.
func TestKilledLeaders(t *testing.T) {
	srv := redistest.Shared(t)
	p := prefix(t)
	const ttl = 500 * time.Millisecond
	watcher := newElection(t, srv.Client(t), p, ttl)
	ctx := t.Context()
	obs := watcher.Observe(ctx, "leader")
	children := candidates(t, srv.URL(), p, ttl, 0, 5)
	var last int64
	var killed time.Time
	for round := range len(children) {
		l := next(t, obs, 10*time.Second)
		if !killed.IsZero() {
			failover := time.Since(killed)
			t.Logf("round %d: %q leads with term %d, %v after the kill (TTL %v)", round, l.Value, l.Fence, failover, ttl)
			if failover > ttl+500*time.Millisecond {
				t.Errorf("failover took %v, TTL %v", failover, ttl)
			}
		}
		if l.Fence <= last {
			t.Fatalf("term %d observed after term %d", l.Fence, last)
		}
		last = l.Fence
		child := children[l.Value]
		if child == nil {
			t.Fatalf("observed leader %q: no such candidate alive", l.Value)
		}
		if got := child.Line(t, 5*time.Second); got != fmt.Sprintf("leader %d", l.Fence) {
			t.Fatalf("candidate %s reported %q, observed term %d", l.Value, got, l.Fence)
		}
		delete(children, l.Value)
		killed = child.Kill(t)
	}
	// Nobody is left: no more leaders, and the record runs out.
	quiet(t, obs, 2*ttl)
	if _, err := watcher.Leader(ctx, "leader"); !errors.Is(err, election.ErrNoLeader) {
		t.Errorf("Leader after every candidate was killed: %v", err)
	}
}
