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

const msec = int64(1e6)

// redisEv is an event of the key watcher at t ms.
func redisEv(typ, key, token string, t int64) chaos.Event {
	return chaos.Event{Client: chaos.WatcherClient, Op: chaos.OpRedis, Type: typ, T: t * msec, Keys: []string{key}, Token: token}
}

func watcherEv(op, typ string, t int64) chaos.Event {
	return chaos.Event{Client: chaos.WatcherClient, Op: op, Type: typ, T: t * msec}
}

func clientEv(client int, op, typ string, t int64, token string, keys ...string) chaos.Event {
	e := chaos.Event{Client: client, Op: op, Type: typ, T: t * msec, Token: token, Keys: keys}
	if op == chaos.OpLock && typ == chaos.TypeOK {
		e.Fence = t
	}
	return e
}

func TestCheckLostGrants(t *testing.T) {
	expired := redisEv(chaos.TypeExpired, "cold0", "", 300)
	setY := redisEv(chaos.TypeSet, "cold0", "y", 50)
	setY.Expires = 250 * msec // Redis noticed the expiry late
	h := history([]chaos.Event{
		watcherEv(chaos.OpWatcher, chaos.TypeStart, 0),
		clientEv(1, chaos.OpLock, chaos.TypeInvoke, 5, "", "hot"),
		redisEv(chaos.TypeSet, "hot", "a", 10),
		clientEv(1, chaos.OpLock, chaos.TypeOK, 11, "a", "hot"),
		redisEv(chaos.TypeDel, "hot", "", 20),
		redisEv(chaos.TypeSet, "hot", "x", 30), // Lock ended unknown
		redisEv(chaos.TypeDel, "hot", "", 60),
		setY,
		expired,
		redisEv(chaos.TypeSet, "cold1", "", 70), // value unknown: not counted
		watcherEv(chaos.OpWatcher, chaos.TypeStop, 400),
	})
	r := chaos.Check(h)
	if r.LostGrants != 2 || r.LostGrantsDeleted != 1 || r.LostGrantsExpired != 1 || r.LostGrantMaxHoldMS != 200 ||
		r.WatcherEvents != 7 || r.WatcherUnknownValues != 1 || r.Broken() {
		t.Fatalf("want 2 lost grants (x deleted after 30ms, y expired after 200ms): %+v", r)
	}
}

// On a Cluster, the second slot group of a two-key lease is granted under a
// token of its own, with the fence the lease reports for its key: not a
// lost grant.
func TestCheckMultiSlotGroupIsNoLostGrant(t *testing.T) {
	setHot := redisEv(chaos.TypeSet, "hot", "a", 10)
	setHot.Fence = 10
	setCold := redisEv(chaos.TypeSet, "cold0", "a2", 12)
	setCold.Fence = 12
	lock := clientEv(1, chaos.OpLock, chaos.TypeOK, 13, "a", "hot", "cold0")
	lock.Fence, lock.KeyFences = 10, []int64{10, 12}
	stray := redisEv(chaos.TypeSet, "cold1", "z", 40)
	stray.Fence = 12 // a fence of another key's grant
	h := history([]chaos.Event{
		watcherEv(chaos.OpWatcher, chaos.TypeStart, 0),
		setHot,
		setCold,
		lock,
		redisEv(chaos.TypeDel, "hot", "", 20),
		redisEv(chaos.TypeDel, "cold0", "", 21),
		stray,
		redisEv(chaos.TypeDel, "cold1", "", 50),
		watcherEv(chaos.OpWatcher, chaos.TypeStop, 400),
	})
	r := chaos.Check(h)
	if r.LostGrants != 1 || r.Broken() {
		t.Fatalf("want 1 lost grant (z on cold1), none for the lease's group on cold0: %+v", r)
	}
}

func TestCheckUnlockFailedReleased(t *testing.T) {
	h := history([]chaos.Event{
		watcherEv(chaos.OpWatcher, chaos.TypeStart, 0),
		redisEv(chaos.TypeSet, "hot", "a", 10),
		clientEv(1, chaos.OpLock, chaos.TypeOK, 11, "a", "hot"),
		clientEv(1, chaos.OpUnlock, chaos.TypeInvoke, 100, "a", "hot"),
		redisEv(chaos.TypeDel, "hot", "", 105),
		clientEv(1, chaos.OpUnlock, chaos.TypeFail, 110, "a", "hot"),
		redisEv(chaos.TypeSet, "hot", "b", 120),
		clientEv(2, chaos.OpLock, chaos.TypeOK, 121, "b", "hot"),
		clientEv(2, chaos.OpUnlock, chaos.TypeInvoke, 200, "b", "hot"),
		clientEv(2, chaos.OpUnlock, chaos.TypeUnknown, 210, "b", "hot"),
		redisEv(chaos.TypeSet, "hot", "c", 400), // FIFO handover by b's release, after b gave up
		clientEv(3, chaos.OpLock, chaos.TypeOK, 401, "c", "hot"),
		clientEv(3, chaos.OpUnlock, chaos.TypeInvoke, 500, "c", "hot"),
		clientEv(3, chaos.OpUnlock, chaos.TypeFail, 510, "c", "hot"), // its key is still there
		watcherEv(chaos.OpWatcher, chaos.TypeStop, 600),
	})
	r := chaos.Check(h)
	if r.UnlockFailedReleased != 1 || r.UnlockReleasedLate != 1 || r.UnlockFailed != 2 || r.UnlockUnknown != 1 || r.LostGrants != 0 {
		t.Fatalf("want one failed unlock that released, one released late: %+v", r)
	}
}

func TestCheckNoticeLag(t *testing.T) {
	lease := func(client int, token string, granted, deadline int64) chaos.Event {
		e := clientEv(client, chaos.OpLock, chaos.TypeOK, granted, token, "hot")
		e.Deadline = deadline * msec
		return e
	}
	done := func(client int, token string, at, deadline int64) chaos.Event {
		e := clientEv(client, chaos.OpDone, chaos.TypeOK, at, token, "hot")
		e.Deadline = deadline * msec
		return e
	}
	expiring := func(token string, at, expires int64) chaos.Event {
		e := redisEv(chaos.TypeSet, "hot", token, at)
		e.Expires = expires * msec
		return e
	}
	h := history([]chaos.Event{
		watcherEv(chaos.OpWatcher, chaos.TypeStart, 0),
		// a: paused past its expiry; Done 20ms after the key expired.
		expiring("a", 9, 110),
		lease(1, "a", 10, 100),
		redisEv(chaos.TypeExpired, "hot", "", 120),
		done(1, "a", 130, 100),
		clientEv(1, chaos.OpUnlock, chaos.TypeInvoke, 140, "a", "hot"),
		// b: key gone before its Unlock, Done never closed.
		expiring("b", 200, 250),
		lease(2, "b", 201, 290),
		redisEv(chaos.TypeExpired, "hot", "", 260),
		clientEv(2, chaos.OpUnlock, chaos.TypeInvoke, 270, "b", "hot"),
		// c: Done before the key expired (the usual case), 5ms after its
		// deadline; a check found it ended.
		expiring("c", 280, 330),
		lease(3, "c", 281, 295),
		done(3, "c", 300, 295),
		clientEv(3, chaos.OpCheck, chaos.TypeFail, 305, "c", "hot"),
		redisEv(chaos.TypeExpired, "hot", "", 331),
		clientEv(3, chaos.OpUnlock, chaos.TypeInvoke, 340, "c", "hot"),
		watcherEv(chaos.OpWatcher, chaos.TypeStop, 400),
	})
	r := chaos.Check(h)
	if r.NoticeLags != 1 || r.NoticeLagMaxMS != 20 || r.NoticeLagP50MS != 20 || r.DoneAfterDeadlineMaxMS != 30 || r.Unnoticed != 1 {
		t.Fatalf("want a lag of 20ms, Done 30ms after a deadline, one loss unnoticed: %+v", r)
	}
}

func TestCheckStall(t *testing.T) {
	h := history([]chaos.Event{
		watcherEv(chaos.OpWatcher, chaos.TypeStart, 0),
		redisEv(chaos.TypeSet, "cold0", "c", 1),
		clientEv(1, chaos.OpLock, chaos.TypeInvoke, 10, "", "hot"),
		redisEv(chaos.TypeSet, "hot", "a", 25),
		clientEv(1, chaos.OpLock, chaos.TypeOK, 26, "a", "hot"),
		clientEv(2, chaos.OpLock, chaos.TypeInvoke, 30, "", "hot", "cold0"),
		redisEv(chaos.TypeDel, "hot", "", 50),
		redisEv(chaos.TypeDel, "cold0", "", 90),
		redisEv(chaos.TypeSet, "hot", "m", 95),
		redisEv(chaos.TypeSet, "cold0", "m", 95),
		clientEv(2, chaos.OpLock, chaos.TypeOK, 96, "m", "hot", "cold0"),
		clientEv(3, chaos.OpLock, chaos.TypeInvoke, 97, "", "cold1"), // never returned
		watcherEv(chaos.OpWatcher, chaos.TypeStop, 400),
	})
	r := chaos.Check(h)
	// hot was free [10, 25) with client 1 waiting, and [50, 95) with
	// client 2 waiting for cold0 too, which was free only from 90.
	if r.MaxStallMS != 15 || r.MaxStallAnyMS != 45 || r.HeadOfLineMaxMS != 15 {
		t.Fatalf("want a stall of 15ms (45ms counting the multi-key waiter), head-of-line 15ms: %+v", r)
	}
}

func TestCheckWatcherGap(t *testing.T) {
	present := redisEv(chaos.TypePresent, "hot", "a", 40)
	h := history([]chaos.Event{
		watcherEv(chaos.OpWatcher, chaos.TypeStart, 0),
		redisEv(chaos.TypeSet, "hot", "a", 10),
		clientEv(1, chaos.OpLock, chaos.TypeOK, 11, "a", "hot"),
		redisEv(chaos.TypeSet, "cold0", "b", 12),
		clientEv(2, chaos.OpLock, chaos.TypeOK, 13, "b", "cold0"),
		watcherEv(chaos.OpWatcherGap, chaos.TypeInvoke, 20),
		clientEv(3, chaos.OpLock, chaos.TypeInvoke, 21, "", "cold1"),
		watcherEv(chaos.OpWatcherGap, chaos.TypeOK, 40),
		present, // a survived the gap, b did not
		clientEv(2, chaos.OpUnlock, chaos.TypeInvoke, 50, "b", "cold0"),
		clientEv(1, chaos.OpUnlock, chaos.TypeInvoke, 60, "a", "hot"),
		redisEv(chaos.TypeDel, "hot", "", 61),
		redisEv(chaos.TypeSet, "cold1", "c", 45),
		clientEv(3, chaos.OpLock, chaos.TypeOK, 46, "c", "cold1"),
		watcherEv(chaos.OpWatcher, chaos.TypeStop, 100),
	})
	r := chaos.Check(h)
	// cold1 was free while client 3 waited, but the watcher saw only
	// [40, 45) of it.
	if r.WatcherGaps != 1 || r.Unnoticed != 1 || r.LostGrants != 0 || r.MaxStallMS != 5 {
		t.Fatalf("want one gap, b lost in it unnoticed, a stall of 5ms: %+v", r)
	}
}

func TestCheckLateWritesAndLeftovers(t *testing.T) {
	write := func(client int, typ string, at, deadline int64) chaos.Event {
		e := clientEv(client, chaos.OpWrite, typ, at, "a", "hot")
		e.Deadline = deadline * msec
		return e
	}
	exit := func(client, goroutines int) chaos.Event {
		e := clientEv(client, chaos.OpExit, chaos.TypeOK, 500, "")
		e.Count = goroutines
		return e
	}
	leftover := func(typ, key string) chaos.Event {
		return chaos.Event{Client: chaos.WatcherClient, Op: chaos.OpLeftover, Type: typ, T: 600 * msec, Keys: []string{key}}
	}
	h := history([]chaos.Event{
		write(1, chaos.TypeInvoke, 10, 100),
		write(1, chaos.TypeOK, 11, 100),
		write(1, chaos.TypeInvoke, 120, 100),
		write(1, chaos.TypeOK, 121, 100),
		write(2, chaos.TypeInvoke, 130, 100),
		write(2, chaos.TypeFail, 131, 100),
		exit(1, 0),
		exit(2, 0),
		leftover(chaos.TypeLock, "chaos:{hot}"),
		leftover(chaos.TypeExpiring, "chaos:{hot}:q"),
	})
	r := chaos.Check(h)
	if r.LateWritesAccepted != 1 || r.LeftoverLocks != 1 || r.LeftoverExpiring != 1 || r.ClientsExited != 2 || r.Broken() {
		t.Fatalf("want one late write accepted, leftovers that expire: %+v", r)
	}
	for _, bad := range [][]chaos.Event{
		{exit(1, 2)},
		{leftover(chaos.TypeLockNoTTL, "chaos:{hot}")},
		{leftover(chaos.TypePersistent, "chaos:{hot}:q")},
	} {
		r := chaos.Check(history(h, bad))
		if !r.Broken() {
			t.Fatalf("%+v not broken: %+v", bad, r)
		}
	}
	if r := chaos.Check(history(h, []chaos.Event{exit(3, 2)})); r.LeftoverGoroutines != 2 || len(r.Examples) == 0 {
		t.Fatalf("leftover goroutines: %+v", r)
	}
}

// A lease counts as lost at a failover, once whatever number of its keys,
// when the promoted replica lacked its value while it was valid and not
// being unlocked.
func TestCheckFailoverLoss(t *testing.T) {
	loss := func(token string, at int64) chaos.Event {
		return chaos.Event{Client: -2, Op: chaos.OpFailoverLost, Type: chaos.TypeOK, T: at, Keys: []string{"hot"}, Token: token}
	}
	// A FIFO handover to "regranted" (fence 4) is lost before it was
	// confirmed; the waiter is granted the key anew on the promoted
	// replica (fence 5).
	handover := loss("regranted", 100)
	handover.Fence = 4
	h := history(
		grant(1, "hot", "valid", 1, 0, 10, 20, 200),
		grant(2, "hot", "ended", 2, 0, 5, 8, 90),
		grant(3, "hot", "unlocking", 3, 0, 15, 20, 200),
		grant(4, "hot", "regranted", 5, 0, 150, 160, 300),
		[]chaos.Event{
			handover,
			{Client: 3, Op: chaos.OpUnlock, Type: chaos.TypeInvoke, T: 50, Token: "unlocking", Keys: []string{"hot"}},
			loss("valid", 100),
			{Client: -2, Op: chaos.OpFailoverLost, Type: chaos.TypeOK, T: 100, Keys: []string{"cold0"}, Token: "valid"},
			loss("ended", 100),
			loss("unlocking", 100),
			loss("never-granted", 100),
		},
	)
	r := chaos.Check(h)
	if r.LostLeases != 1 || !r.Broken() || len(r.Examples) == 0 {
		t.Fatalf("want 1 lease lost at failover: %+v", r)
	}
}
