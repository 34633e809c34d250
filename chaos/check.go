package chaos

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Result is what the checkers found in one history.
type Result struct {
	// Ops counts invoked locks, writes and unlocks.
	Ops           int `json:"ops"`
	Granted       int `json:"granted"`
	LockFailed    int `json:"lock_failed"`
	LockUnknown   int `json:"lock_unknown"`
	WriteUnknown  int `json:"write_unknown"`
	UnlockFailed  int `json:"unlock_failed"`
	UnlockUnknown int `json:"unlock_unknown"`
	// Overlaps counts pairs of leases of one key whose believed-valid
	// intervals overlap: from the return of Lock to the start of the last
	// check that found the lease valid.
	Overlaps int `json:"overlaps"`
	// HardOverlaps counts the overlapping pairs that still overlap when each
	// interval is cut at its own lease's mutex.Deadline: a real breach of
	// mutual exclusion.
	HardOverlaps int `json:"hard_overlaps"`
	// FenceRegressions counts grants whose fence is not greater than that of
	// a grant of the same key that completed before this one's Lock began.
	FenceRegressions int `json:"fence_regressions"`
	// StaleRejected and StaleAccepted count the fenced store's decisions on
	// stale writes (fence lower than the highest accepted; fence equal to
	// that of another lease).
	StaleRejected int `json:"stale_rejected"`
	StaleAccepted int `json:"stale_accepted"`
	// LateWritesAccepted counts writes the store accepted that were
	// invoked after their lease's own mutex.Deadline (read when the write
	// was invoked).
	LateWritesAccepted int `json:"late_writes_accepted"`

	// The figures below come from the key watcher's history (OpRedis):
	// what Redis did to the lock keys, as seen through keyspace
	// notifications. WatcherEvents counts its events, WatcherGaps the
	// holes in its view (a broken connection until it was subscribed
	// again), WatcherUnknownValues the sets whose value it could not tell.
	WatcherEvents        int `json:"watcher_events"`
	WatcherGaps          int `json:"watcher_gaps"`
	WatcherUnknownValues int `json:"watcher_unknown_values"`
	// LostGrants counts tokens stored under a lock key that no Lock
	// returned (a Lock that failed or ended unknown may leave one, which
	// the library releases in the background); of those,
	// LostGrantsDeleted were removed by a del (or handed over by a FIFO
	// release) and LostGrantsExpired expired or were evicted.
	// LostGrantMaxHoldMS is the longest time Redis kept one.
	LostGrants         int     `json:"lost_grants"`
	LostGrantsDeleted  int     `json:"lost_grants_deleted"`
	LostGrantsExpired  int     `json:"lost_grants_expired"`
	LostGrantMaxHoldMS float64 `json:"lost_grant_max_hold_ms"`
	// UnlockFailedReleased counts Unlocks that returned fail or unknown
	// although the watcher saw a key holding their token removed (del, or
	// handed over by a FIFO release) between their invocation and their
	// return (with 5ms for the notification to arrive);
	// UnlockReleasedLate those whose key was removed later (a release that
	// Redis ran after the client gave up on it). Only a lease's own
	// release removes a key holding its token.
	UnlockFailedReleased int `json:"unlock_failed_released"`
	UnlockReleasedLate   int `json:"unlock_released_late"`
	// Notice lag: for each lease lost while held (Done closed before
	// Unlock was invoked, or a check found it ended), the time from the
	// moment the watcher saw its key stop holding its token (expired,
	// deleted, evicted or overwritten) to the closing of Done; only lags
	// >= 0 count (NoticeLags of them). DoneAfterDeadlineMaxMS is the
	// largest time from the lease's mutex.Deadline to the closing of Done
	// (negative when Done always closed first). Unnoticed counts leases
	// whose key the watcher saw lost before Unlock was invoked while
	// neither Done nor a check told the client.
	NoticeLags             int     `json:"notice_lags"`
	NoticeLagMaxMS         float64 `json:"notice_lag_max_ms"`
	NoticeLagP50MS         float64 `json:"notice_lag_p50_ms"`
	DoneAfterDeadlineMaxMS float64 `json:"done_after_deadline_max_ms"`
	Unnoticed              int     `json:"unnoticed"`
	// MaxStallMS is the longest time a key was free (per the watcher)
	// while at least one Lock on it was pending whose other keys were
	// free too; MaxStallAnyMS the same counting every pending Lock on the
	// key (a multi-key Lock waiting for another key included);
	// HeadOfLineMaxMS the longest time all keys of one pending Lock were
	// free together before it returned. Locks that never returned
	// (killed clients) do not count.
	MaxStallMS      float64 `json:"max_stall_ms"`
	MaxStallAnyMS   float64 `json:"max_stall_any_ms"`
	HeadOfLineMaxMS float64 `json:"head_of_line_max_ms"`
	// Leftovers after the run, found by a SCAN of the prefix once every
	// client exited: lock keys (LeftoverLocksNoTTL of them without a
	// TTL), other keys with a TTL (revocation markers, queues) and other
	// keys without one. LeftoverGoroutines is the largest number of
	// goroutines a client had left above its starting set after closing
	// its Mutex and Redis client, over the ClientsExited clients that
	// reported it.
	LeftoverLocks      int `json:"leftover_locks"`
	LeftoverLocksNoTTL int `json:"leftover_locks_no_ttl"`
	LeftoverExpiring   int `json:"leftover_expiring"`
	LeftoverPersistent int `json:"leftover_persistent"`
	LeftoverGoroutines int `json:"leftover_goroutines"`
	ClientsExited      int `json:"clients_exited"`
	// LostLeases counts the leases a failover lost: their lock value (of
	// one of their keys, or more) was on the killed primary but not on the
	// replica promoted in its place (OpFailoverLost), while the lease was
	// valid (its mutex.Deadline after the replica was read) and not being
	// unlocked.
	LostLeases int `json:"lost_leases"`

	// Examples describes the first violations found.
	Examples []string `json:"examples,omitempty"`
	// Notes say where the longest stall, head-of-line wait, notice lag
	// and lost grant were.
	Notes []string `json:"notes,omitempty"`
}

// Broken reports whether the result breaks a promise distlock makes for a
// safe scenario: no hard overlap, no lease lost at a failover, no fence
// regression, no stale write accepted; every key it stores expires by
// itself (no lock key or other key left without a TTL); Close leaves no
// goroutine behind.
func (r Result) Broken() bool {
	return r.HardOverlaps > 0 || r.LostLeases > 0 || r.FenceRegressions > 0 || r.StaleAccepted > 0 ||
		r.LeftoverLocksNoTTL > 0 || r.LeftoverPersistent > 0 || r.LeftoverGoroutines > 0
}

// leaseInterval is what the history says about one granted lease on one key.
type leaseInterval struct {
	client   int
	token    string
	fence    int64
	invoke   int64 // Lock invoked
	start    int64 // Lock returned
	end      int64 // start of the last check that found it valid (>= start)
	deadline int64
}

func (l leaseInterval) String() string {
	return fmt.Sprintf("client %d token %s fence %d [%d, %d] deadline %d", l.client, l.token, l.fence, l.start, l.end, l.deadline)
}

const maxExamples = 5

func (r *Result) example(format string, args ...any) {
	if len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// Check runs every checker over events (sorted by time, as ReadHistory
// returns them).
func Check(events []Event) Result {
	var r Result
	lastInvoke := map[int]int64{}
	lateWrite := map[int]bool{}
	leases := map[string]map[string]*leaseInterval{} // key -> token -> lease
	for _, e := range events {
		switch e.Op {
		case OpStore:
			switch {
			case e.Stale && e.Type == TypeFail:
				r.StaleRejected++
			case e.Stale && e.Type == TypeOK:
				r.StaleAccepted++
				r.example("stale write accepted: key %s fence %d token %s: %s", strings.Join(e.Keys, ","), e.Fence, e.Token, e.Err)
			}
		case OpLock:
			switch e.Type {
			case TypeInvoke:
				r.Ops++
				lastInvoke[e.Client] = e.T
			case TypeFail:
				r.LockFailed++
			case TypeUnknown:
				r.LockUnknown++
			case TypeOK:
				r.Granted++
				for _, k := range e.Keys {
					if leases[k] == nil {
						leases[k] = map[string]*leaseInterval{}
					}
					leases[k][e.Token] = &leaseInterval{client: e.Client, token: e.Token, fence: e.Fence,
						invoke: lastInvoke[e.Client], start: e.T, end: e.T, deadline: e.Deadline}
				}
			}
		case OpCheck:
			if e.Type != TypeOK {
				continue
			}
			for _, k := range e.Keys {
				if l := leases[k][e.Token]; l != nil && e.T > l.end {
					l.end = e.T
					if e.Deadline != 0 {
						l.deadline = e.Deadline
					}
				}
			}
		case OpWrite:
			switch e.Type {
			case TypeInvoke:
				r.Ops++
				lateWrite[e.Client] = e.Deadline != 0 && e.T > e.Deadline
			case TypeOK:
				if lateWrite[e.Client] {
					r.LateWritesAccepted++
					r.example("late write accepted: client %d key %s fence %d token %s at %d, deadline %d",
						e.Client, strings.Join(e.Keys, ","), e.Fence, e.Token, e.T, e.Deadline)
				}
			case TypeUnknown:
				r.WriteUnknown++
			}
		case OpUnlock:
			switch e.Type {
			case TypeInvoke:
				r.Ops++
			case TypeFail:
				r.UnlockFailed++
			case TypeUnknown:
				r.UnlockUnknown++
			}
		}
	}
	keys := make([]string, 0, len(leases))
	for k := range leases {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ls := make([]leaseInterval, 0, len(leases[k]))
		for _, l := range leases[k] {
			ls = append(ls, *l)
		}
		r.checkOverlaps(k, ls)
		r.checkFences(k, ls)
	}
	r.checkLeftovers(events)
	r.checkFailoverLoss(events)
	r.checkWatched(events)
	return r
}

// checkFailoverLoss counts the leases whose lock value a failover lost
// (see LostLeases).
func (r *Result) checkFailoverLoss(events []Event) {
	type deadlineAt struct{ t, deadline int64 }
	type life struct {
		client    int
		granted   int64
		fences    map[string]int64 // per key
		deadlines []deadlineAt     // as recorded, in time order
		unlock    int64            // Unlock invoked (0: never)
	}
	leases := map[string]*life{}
	var losses []Event
	for _, e := range events {
		switch e.Op {
		case OpLock:
			if e.Type == TypeOK {
				l := &life{client: e.Client, granted: e.T, fences: map[string]int64{}, deadlines: []deadlineAt{{e.T, e.Deadline}}}
				for i, k := range e.Keys {
					l.fences[k] = e.Fence
					if i < len(e.KeyFences) {
						l.fences[k] = e.KeyFences[i]
					}
				}
				leases[e.Token] = l
			}
		case OpCheck, OpWrite, OpDone:
			if l := leases[e.Token]; l != nil && e.Deadline != 0 {
				l.deadlines = append(l.deadlines, deadlineAt{e.T, e.Deadline})
			}
		case OpUnlock:
			if l := leases[e.Token]; l != nil && e.Type == TypeInvoke && l.unlock == 0 {
				l.unlock = e.T
			}
		case OpFailoverLost:
			losses = append(losses, e)
		}
	}
	counted := map[string]bool{} // a multi-key lease loses a value per key
	for _, e := range losses {
		l := leases[e.Token]
		if l == nil || counted[e.Token] || (l.unlock != 0 && l.unlock <= e.T) {
			continue
		}
		if f, ok := l.fences[e.Keys[0]]; ok && e.Fence != 0 && f != 0 && f != e.Fence {
			// Another grant to the same token: a FIFO handover that the
			// failover lost before it was confirmed, after which the
			// waiter, still at the head of the queue the replica had,
			// was granted the key anew.
			continue
		}
		var deadline int64
		for _, d := range l.deadlines {
			if d.t <= e.T || d.t == l.granted {
				deadline = d.deadline
			}
		}
		if deadline <= e.T {
			continue
		}
		counted[e.Token] = true
		r.LostLeases++
		r.example("lease lost at failover: client %d token %s fence %d on %s, granted at %d, deadline %d, not on the promoted replica at %d",
			l.client, e.Token, e.Fence, strings.Join(e.Keys, ","), l.granted, deadline, e.T)
	}
}

func (r *Result) checkOverlaps(key string, ls []leaseInterval) {
	sort.Slice(ls, func(i, j int) bool { return ls[i].start < ls[j].start })
	for i, a := range ls {
		for _, b := range ls[i+1:] {
			if b.start > a.end {
				break
			}
			if a.token == b.token {
				continue
			}
			r.Overlaps++
			// Cut each interval at its own deadline; unknown deadlines
			// cannot make a hard overlap.
			if a.deadline == 0 || b.deadline == 0 {
				continue
			}
			aEnd, bEnd := min(a.end, a.deadline), min(b.end, b.deadline)
			if b.start <= aEnd && a.start <= bEnd {
				r.HardOverlaps++
				r.example("hard overlap on %s: %v and %v", key, a, b)
			}
		}
	}
}

func (r *Result) checkFences(key string, ls []leaseInterval) {
	byStart := append([]leaseInterval(nil), ls...)
	sort.Slice(byStart, func(i, j int) bool { return byStart[i].start < byStart[j].start })
	byInvoke := append([]leaseInterval(nil), ls...)
	sort.Slice(byInvoke, func(i, j int) bool { return byInvoke[i].invoke < byInvoke[j].invoke })
	var (
		i    int
		hi   int64
		hiOf leaseInterval
		seen bool
	)
	for _, b := range byInvoke {
		for ; i < len(byStart) && byStart[i].start < b.invoke; i++ {
			if !seen || byStart[i].fence > hi {
				hi, hiOf, seen = byStart[i].fence, byStart[i], true
			}
		}
		if seen && b.fence <= hi {
			r.FenceRegressions++
			r.example("fence regression on %s: %v granted after %v", key, b, hiOf)
		}
	}
}

func (r *Result) checkLeftovers(events []Event) {
	for _, e := range events {
		switch e.Op {
		case OpLeftover:
			switch e.Type {
			case TypeLock:
				r.LeftoverLocks++
			case TypeLockNoTTL:
				r.LeftoverLocks++
				r.LeftoverLocksNoTTL++
				r.example("lock key without a TTL left: %s holding %s:%d", strings.Join(e.Keys, ","), e.Token, e.Fence)
			case TypeExpiring:
				r.LeftoverExpiring++
			case TypePersistent:
				r.LeftoverPersistent++
				r.example("key without a TTL left: %s", strings.Join(e.Keys, ","))
			case TypeFail:
				r.example("leftovers unknown: %s", e.Err)
			}
		case OpExit:
			r.ClientsExited++
			if e.Count > 0 {
				if e.Count > r.LeftoverGoroutines {
					r.LeftoverGoroutines = e.Count
				}
				r.example("client %d left %d goroutines: %s", e.Client, e.Count, truncate(e.Note, 600))
			}
		}
	}
}

// span is the stretch of time [a, b).
type span struct{ a, b int64 }

// unionSpans returns the union of s as sorted, disjoint spans.
func unionSpans(s []span) []span {
	s = append([]span(nil), s...)
	sort.Slice(s, func(i, j int) bool { return s[i].a < s[j].a })
	var out []span
	for _, x := range s {
		if x.b <= x.a {
			continue
		}
		if n := len(out); n > 0 && x.a <= out[n-1].b {
			out[n-1].b = max(out[n-1].b, x.b)
			continue
		}
		out = append(out, x)
	}
	return out
}

// intersectSpans intersects two sorted, disjoint lists.
func intersectSpans(x, y []span) []span {
	var out []span
	for i, j := 0, 0; i < len(x) && j < len(y); {
		a, b := max(x[i].a, y[j].a), min(x[i].b, y[j].b)
		if a < b {
			out = append(out, span{a, b})
		}
		if x[i].b < y[j].b {
			i++
		} else {
			j++
		}
	}
	return out
}

// subtractSpans returns x without y; both sorted and disjoint.
func subtractSpans(x, y []span) []span {
	var out []span
	j := 0
	for _, s := range x {
		a := s.a
		for j < len(y) && y[j].b <= a {
			j++
		}
		for k := j; k < len(y) && y[k].a < s.b; k++ {
			if y[k].a > a {
				out = append(out, span{a, y[k].a})
			}
			a = max(a, y[k].b)
		}
		if a < s.b {
			out = append(out, span{a, s.b})
		}
	}
	return out
}

// How a hold of a lock key ended, besides TypeDel, TypeExpired and
// TypeEvicted.
const (
	endOverwrite = "overwrite"   // set to another value (a FIFO release's handover)
	endGapLost   = "lost-in-gap" // held when a gap began, gone when it ended
	endOpen      = "open"        // still held when the view ended
)

// hold is a stretch of time during which the watcher saw a lock key hold
// one value.
type hold struct {
	key     string
	token   string // empty when the value is unknown
	fence   int64
	start   int64
	end     int64
	endKind string
	expires int64
}

// removed reports whether the hold ended by a removal whose time is known.
func (h hold) removed() bool {
	switch h.endKind {
	case TypeDel, TypeExpired, TypeEvicted, endOverwrite:
		return true
	}
	return false
}

// keyView is the watcher's history of the lock keys.
type keyView struct {
	holds   []hold
	known   []span // when the watcher's view was whole
	events  int
	gaps    int
	unknown int
}

func buildKeyView(events []Event) keyView {
	var v keyView
	cur := map[string]*hold{}
	gapped := map[string]*hold{} // open when a gap began
	knownSince, gapStart, gapEnd, last := int64(-1), int64(0), int64(0), int64(0)
	resolving := false // a gap ended: the present events at its end follow
	closeHold := func(k string, t int64, kind string) {
		h := cur[k]
		if h == nil {
			return
		}
		h.end, h.endKind = t, kind
		if kind == TypeExpired && h.expires > h.start && h.expires < t {
			// Redis notifies an expiry when it removes the key, on
			// access or in its expire cycle: the key was free from
			// its expiry time.
			h.end = h.expires
		}
		v.holds = append(v.holds, *h)
		delete(cur, k)
	}
	open := func(k string, e Event) {
		start := e.T
		if f := e.Fence * 1000; e.Type == TypeSet && e.Fence > 0 && f < start && f > start-int64(time.Second) {
			// The fence is the server's clock at the grant: the
			// notification arrives a little later.
			start = f
		}
		cur[k] = &hold{key: k, token: e.Token, fence: e.Fence, start: start, expires: e.Expires}
	}
	endKnown := func(t int64) {
		if knownSince >= 0 {
			v.known = append(v.known, span{knownSince, t})
		}
		knownSince = -1
	}
	finishGap := func(end int64, kind string) {
		for k, h := range gapped {
			h.end, h.endKind = end, kind
			v.holds = append(v.holds, *h)
			delete(gapped, k)
		}
		resolving = false
	}
	for _, e := range events {
		switch e.Op {
		case OpRedis, OpWatcher, OpWatcherGap:
		default:
			continue
		}
		if resolving && (e.T > gapEnd || e.Op != OpRedis || e.Type != TypePresent) {
			finishGap(gapEnd, endGapLost)
		}
		last = max(last, e.T)
		var k string
		if len(e.Keys) > 0 {
			k = e.Keys[0]
		}
		switch e.Op {
		case OpWatcher:
			switch e.Type {
			case TypeStart:
				knownSince = e.T
			case TypeStop:
				endKnown(e.T)
				for k := range cur {
					closeHold(k, e.T, endOpen)
				}
			}
		case OpWatcherGap:
			switch e.Type {
			case TypeInvoke:
				v.gaps++
				endKnown(e.T)
				gapStart = e.T
				for k, h := range cur {
					gapped[k] = h
					delete(cur, k)
				}
			case TypeOK:
				knownSince, gapEnd, resolving = e.T, e.T, true
			}
		case OpRedis:
			v.events++
			switch e.Type {
			case TypePresent:
				if g := gapped[k]; g != nil && e.Token != "" && g.token == e.Token {
					g.expires = e.Expires
					cur[k] = g
					delete(gapped, k)
				} else {
					open(k, e)
				}
			case TypeSet:
				if e.Token == "" {
					v.unknown++
				}
				if h := cur[k]; h != nil {
					if e.Token != "" && h.token == e.Token {
						h.expires = e.Expires
						continue
					}
					closeHold(k, e.T, endOverwrite)
				}
				open(k, e)
			case TypeExpire:
				if h := cur[k]; h != nil && e.Token != "" && h.token == e.Token {
					h.expires = e.Expires
				}
			case TypeDel, TypeExpired, TypeEvicted:
				closeHold(k, e.T, e.Type)
			}
		}
	}
	if resolving {
		finishGap(gapEnd, endGapLost)
	}
	finishGap(gapStart, endOpen)
	endKnown(last)
	for k := range cur {
		closeHold(k, last, endOpen)
	}
	sort.Slice(v.holds, func(i, j int) bool { return v.holds[i].start < v.holds[j].start })
	return v
}

func ms(ns int64) float64 { return math.Round(float64(ns)/1e5) / 10 }

// lockCall is one Lock call that returned.
type lockCall struct {
	client       int
	keys         []string
	invoke, done int64
}

// leaseLife is what the clients' histories say about one granted lease.
type leaseLife struct {
	client      int
	keys        []string
	granted     int64
	deadline    int64
	unlock      int64 // Unlock invoked (0: never)
	done        int64 // Done closed other than by Unlock (0: never seen)
	doneDL      int64 // the deadline when Done closed
	failedCheck int64 // first check that found it ended (0: none)
}

// checkWatched runs the checkers that need the key watcher's history.
func (r *Result) checkWatched(events []Event) {
	v := buildKeyView(events)
	r.WatcherEvents, r.WatcherGaps, r.WatcherUnknownValues = v.events, v.gaps, v.unknown
	if len(v.known) == 0 {
		return
	}
	// The clients' side.
	leases := map[string]*leaseLife{}
	var calls []lockCall
	lockInvoke := map[int]Event{}
	unlockInvoke := map[int]int64{}
	type unlockEnd struct {
		client       int
		token        string
		typ          string
		invoke, done int64
	}
	var failedUnlocks []unlockEnd
	for _, e := range events {
		switch e.Op {
		case OpLock:
			switch e.Type {
			case TypeInvoke:
				lockInvoke[e.Client] = e
			default:
				if inv, ok := lockInvoke[e.Client]; ok {
					calls = append(calls, lockCall{client: e.Client, keys: inv.Keys, invoke: inv.T, done: e.T})
					delete(lockInvoke, e.Client)
				}
				if e.Type == TypeOK {
					leases[e.Token] = &leaseLife{client: e.Client, keys: e.Keys, granted: e.T, deadline: e.Deadline}
				}
			}
		case OpCheck:
			if l := leases[e.Token]; l != nil && e.Type == TypeFail && l.failedCheck == 0 {
				l.failedCheck = e.T
			}
		case OpDone:
			if l := leases[e.Token]; l != nil && l.done == 0 {
				l.done, l.doneDL = e.T, e.Deadline
			}
		case OpUnlock:
			switch e.Type {
			case TypeInvoke:
				unlockInvoke[e.Client] = e.T
				if l := leases[e.Token]; l != nil && l.unlock == 0 {
					l.unlock = e.T
				}
			case TypeFail, TypeUnknown:
				failedUnlocks = append(failedUnlocks, unlockEnd{client: e.Client, token: e.Token, typ: e.Type,
					invoke: unlockInvoke[e.Client], done: e.T})
			}
		}
	}
	holdsOf := map[string][]hold{}
	holdSpans := map[string][]span{}
	for _, h := range v.holds {
		if h.token != "" {
			holdsOf[h.token] = append(holdsOf[h.token], h)
		}
		holdSpans[h.key] = append(holdSpans[h.key], span{h.start, h.end})
	}

	// Lost grants. A grant of a slot group of a multi-slot lease has a
	// token of its own, which the client did not record, and the fence the
	// lease reported for the group's keys.
	granted := map[string]bool{} // key and fence of every key of a lease
	for _, e := range events {
		if e.Op == OpLock && e.Type == TypeOK {
			for i, f := range e.KeyFences {
				if i < len(e.Keys) {
					granted[e.Keys[i]+"\x00"+strconv.FormatInt(f, 10)] = true
				}
			}
		}
	}
	lost := map[string]hold{} // token -> its longest hold
	for _, h := range v.holds {
		if h.token == "" || leases[h.token] != nil || granted[h.key+"\x00"+strconv.FormatInt(h.fence, 10)] {
			continue
		}
		if l, ok := lost[h.token]; !ok || h.end-h.start > l.end-l.start {
			lost[h.token] = h
		}
	}
	tokens := make([]string, 0, len(lost))
	for t := range lost {
		tokens = append(tokens, t)
	}
	sort.Slice(tokens, func(i, j int) bool { return lost[tokens[i]].start < lost[tokens[j]].start })
	var longestLost int64
	var longestNote string
	for _, t := range tokens {
		h := lost[t]
		r.LostGrants++
		switch h.endKind {
		case TypeDel, endOverwrite:
			r.LostGrantsDeleted++
		case TypeExpired, TypeEvicted:
			r.LostGrantsExpired++
		}
		if h.end-h.start > longestLost {
			longestLost = h.end - h.start
			longestNote = fmt.Sprintf("longest lost grant: token %s on %s from %d for %.1fms, ended by %s", t, h.key, h.start, ms(h.end-h.start), h.endKind)
		}
		r.example("lost grant: token %s held %s from %d for %.1fms, ended by %s", t, h.key, h.start, ms(h.end-h.start), h.endKind)
	}
	r.LostGrantMaxHoldMS = ms(longestLost)
	if longestNote != "" {
		r.Notes = append(r.Notes, longestNote)
	}

	// Unlocks that failed although their release removed a key.
	const slack = int64(5 * 1e6)
	for _, u := range failedUnlocks {
		var when int64
		for _, h := range holdsOf[u.token] {
			if (h.endKind == TypeDel || h.endKind == endOverwrite) && h.end >= u.invoke {
				when = h.end
				break
			}
		}
		switch {
		case when == 0:
		case when <= u.done+slack:
			r.UnlockFailedReleased++
			r.example("unlock %s by client %d at %d-%d, but its key was released at %d", u.typ, u.client, u.invoke, u.done, when)
		default:
			r.UnlockReleasedLate++
		}
	}

	// Notice lag.
	var lags []int64
	var maxLag int64
	var lagNote string
	doneAfter, doneAfterSeen := int64(0), false
	for _, tok := range sortedKeys(leases) {
		l := leases[tok]
		unlock := l.unlock
		if unlock == 0 {
			unlock = math.MaxInt64
		}
		var lostAt, gapLostAt int64
		for _, h := range holdsOf[tok] {
			switch {
			case h.removed() && (lostAt == 0 || h.end < lostAt):
				lostAt = h.end
			case h.endKind == endGapLost && (gapLostAt == 0 || h.end < gapLostAt):
				gapLostAt = h.end
			}
		}
		noticed := (l.done != 0 && l.done < unlock) || (l.failedCheck != 0 && l.failedCheck < unlock)
		if noticed && l.done != 0 {
			if lostAt != 0 && l.done >= lostAt {
				lags = append(lags, l.done-lostAt)
				if l.done-lostAt > maxLag {
					maxLag = l.done - lostAt
					lagNote = fmt.Sprintf("longest notice lag: client %d token %s on %s: key lost at %d, Done at %d (%.1fms), deadline %d",
						l.client, tok, strings.Join(l.keys, ","), lostAt, l.done, ms(l.done-lostAt), l.doneDL)
				}
			}
			dl := l.doneDL
			if dl == 0 {
				dl = l.deadline
			}
			if dl != 0 && (!doneAfterSeen || l.done-dl > doneAfter) {
				doneAfter, doneAfterSeen = l.done-dl, true
			}
		}
		if !noticed && l.unlock != 0 && ((lostAt != 0 && lostAt < l.unlock) || (gapLostAt != 0 && gapLostAt < l.unlock)) {
			r.Unnoticed++
			r.example("unnoticed loss: client %d token %s on %s lost at %d (or by %d), Unlock invoked at %d, deadline %d",
				l.client, tok, strings.Join(l.keys, ","), lostAt, gapLostAt, l.unlock, l.deadline)
		}
	}
	if len(lags) > 0 {
		sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
		r.NoticeLags = len(lags)
		r.NoticeLagMaxMS = ms(lags[len(lags)-1])
		r.NoticeLagP50MS = ms(lags[(len(lags)-1)/2])
	}
	r.DoneAfterDeadlineMaxMS = ms(doneAfter)
	if lagNote != "" {
		r.Notes = append(r.Notes, lagNote)
	}

	// Stalls and head-of-line waits.
	free := map[string][]span{}
	freeOf := func(k string) []span {
		f, ok := free[k]
		if !ok {
			f = subtractSpans(v.known, unionSpans(holdSpans[k]))
			free[k] = f
		}
		return f
	}
	// A waiter counts for the stall of a key while all its keys are
	// free: a multi-key waiter blocked by another key has no claim on a
	// free one. MaxStallAnyMS counts every waiter.
	eligible := map[string][]span{}
	pending := map[string][]span{}
	var stall, hol span
	var holCall lockCall
	for _, c := range calls {
		var all []span
		for i, k := range c.keys {
			pending[k] = append(pending[k], span{c.invoke, c.done})
			f := intersectSpans(freeOf(k), []span{{c.invoke, c.done}})
			if i == 0 {
				all = f
			} else {
				all = intersectSpans(all, f)
			}
		}
		for _, k := range c.keys {
			eligible[k] = append(eligible[k], all...)
		}
		if l := longest(all); l.b-l.a > hol.b-hol.a {
			hol, holCall = l, c
		}
	}
	stallKey := ""
	for _, k := range sortedKeys(eligible) {
		if l := longest(unionSpans(eligible[k])); l.b-l.a > stall.b-stall.a {
			stall, stallKey = l, k
		}
	}
	var stallAny int64
	for _, k := range sortedKeys(pending) {
		l := longest(intersectSpans(freeOf(k), unionSpans(pending[k])))
		stallAny = max(stallAny, l.b-l.a)
	}
	r.MaxStallMS, r.MaxStallAnyMS, r.HeadOfLineMaxMS = ms(stall.b-stall.a), ms(stallAny), ms(hol.b-hol.a)
	if stallKey != "" {
		var waiters []string
		for _, c := range calls {
			if c.invoke < stall.b && c.done > stall.a && slices.Contains(c.keys, stallKey) {
				waiters = append(waiters, fmt.Sprintf("client %d on %s [%d, %d]", c.client, strings.Join(c.keys, "+"), c.invoke, c.done))
			}
		}
		r.Notes = append(r.Notes, fmt.Sprintf("longest stall: %s free [%d, %d] (%.1fms) while pending: %s",
			stallKey, stall.a, stall.b, ms(stall.b-stall.a), strings.Join(waiters, "; ")))
	}
	if hol.b > hol.a {
		r.Notes = append(r.Notes, fmt.Sprintf("longest head-of-line wait: client %d on %s invoked at %d, returned at %d, all free [%d, %d] (%.1fms)",
			holCall.client, strings.Join(holCall.keys, "+"), holCall.invoke, holCall.done, hol.a, hol.b, ms(hol.b-hol.a)))
	}
}

// longest returns the longest span of s.
func longest(s []span) span {
	var l span
	for _, x := range s {
		if x.b-x.a > l.b-l.a {
			l = x
		}
	}
	return l
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
