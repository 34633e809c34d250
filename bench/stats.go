package bench

import (
	"cmp"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0-100) of samples, by the nearest
// rank below; 0 for no samples. It sorts samples in place.
func percentile(samples []int64, p float64) int64 {
	if len(samples) == 0 {
		return 0
	}
	if !slices.IsSorted(samples) {
		slices.Sort(samples)
	}
	return samples[int(float64(len(samples)-1)*p/100)]
}

func us(ns int64) float64 { return float64(ns) / 1e3 }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// hotSummary sums up the waits on a hot key recorded by all workers
// within the window [start, end).
type hotSummary struct {
	grants       int
	utilization  float64
	handoffs     []int64
	overlaps     int
	perWaiter    map[int]int
	overtakes    int
	maxOvertaken int
	// maxLead is the longest time by which an overtaking wait began after
	// a wait it overtook.
	maxLead int64
	pending int
}

// summarizeHot computes utilization, handoffs, fairness and overtakes
// from the events of every waiter. waiters lists every waiter's id, so
// that a waiter never granted counts with zero grants.
//
// A grant G overtakes a wait W of another waiter when W began more than
// margin before G's wait began, and W was still waiting when G was
// granted. The margin absorbs the time between taking a wait's timestamp
// and its request reaching Redis, which decides the order of a FIFO queue.
func summarizeHot(events []event, waiters []int, start, end int64, margin time.Duration) hotSummary {
	s := hotSummary{perWaiter: make(map[int]int, len(waiters))}
	for _, w := range waiters {
		s.perWaiter[w] = 0
	}
	var granted, waits []event
	var held int64
	for _, e := range events {
		if e.Wait >= end {
			continue
		}
		waits = append(waits, e)
		if e.Grant == 0 {
			s.pending++
			continue
		}
		granted = append(granted, e)
		if e.Grant < end {
			s.grants++
			s.perWaiter[e.Waiter]++
		}
		if lo, hi := max(e.Grant, start), min(e.Release, end); hi > lo {
			held += hi - lo
		}
	}
	if end > start {
		s.utilization = float64(held) / float64(end-start)
	}
	slices.SortFunc(granted, func(a, b event) int { return cmp.Compare(a.Grant, b.Grant) })
	for i := 1; i < len(granted); i++ {
		prev, cur := granted[i-1], granted[i]
		if cur.Grant >= end || cur.Waiter == prev.Waiter {
			continue
		}
		if cur.Grant < prev.Release {
			s.overlaps++
			continue
		}
		s.handoffs = append(s.handoffs, cur.Grant-prev.Release)
	}
	m := int64(margin)
	overtaken := make([]int, len(waits))
	for _, g := range granted {
		if g.Grant >= end {
			continue
		}
		over := false
		for j, w := range waits {
			if w.Waiter == g.Waiter || w.Wait+m >= g.Wait {
				continue
			}
			if w.Grant == 0 || w.Grant > g.Grant {
				over = true
				overtaken[j]++
				s.maxLead = max(s.maxLead, g.Wait-w.Wait)
			}
		}
		if over {
			s.overtakes++
		}
	}
	for _, n := range overtaken {
		s.maxOvertaken = max(s.maxOvertaken, n)
	}
	return s
}

// minMax returns the smallest and largest value of m; 0, 0 for none.
func minMax(m map[int]int) (lo, hi int) {
	first := true
	for _, v := range m {
		if first {
			lo, hi, first = v, v, false
			continue
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo, hi
}
