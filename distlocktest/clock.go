package distlocktest

import (
	"slices"
	"sync"
	"time"
)

// Clock is a clock that moves only when the test advances it. The TTLs of a
// Locker's leases run on it: a lease ends when Advance moves the clock to
// or past its deadline. One Clock may drive several Lockers. It is safe for
// concurrent use.
type Clock struct {
	mu       sync.Mutex
	now      time.Time
	watchers []func()
}

// NewClock returns a Clock that reads start until it is advanced.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d. Before it returns, the leases of
// every Locker on the clock whose deadline it reached have ended (Done is
// closed), their keys are free, and the Lock calls waiting for those keys
// have been granted them. A d of zero or less changes nothing: the clock
// never goes back.
func (c *Clock) Advance(d time.Duration) {
	if d <= 0 {
		return
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	watchers := slices.Clone(c.watchers)
	c.mu.Unlock()
	for _, f := range watchers {
		f()
	}
}

// watch makes Advance call f after each move of the clock.
func (c *Clock) watch(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchers = append(c.watchers, f)
}
