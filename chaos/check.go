package chaos

import (
	"fmt"
	"sort"
	"strings"
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
	// Examples describes the first violations found.
	Examples []string `json:"examples,omitempty"`
}

// Broken reports whether the result breaks a promise distlock makes for a
// safe scenario: no hard overlap, no fence regression, no stale write
// accepted.
func (r Result) Broken() bool {
	return r.HardOverlaps > 0 || r.FenceRegressions > 0 || r.StaleAccepted > 0
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
				}
			}
		case OpWrite:
			switch e.Type {
			case TypeInvoke:
				r.Ops++
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
	return r
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
