package distlocktest

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
	"github.com/redis/go-redis/v9"
)

// NewMiniredis starts a miniredis server and returns it with a client of it
// (with ContextTimeoutEnabled set), both closed when the test ends. Hand
// the client to mutex.New to run the real Mutex on it; close the Mutex
// before the test ends (t.Cleanup(m.Close) after NewMiniredis does).
//
// The server's clock, which its TIME command reads and which the Mutex
// takes its fences from, is the wall clock until the test sets it with
// mr.SetTime; its keys expire only when the test fast-forwards them, with
// Advance or mr.FastForward.
func NewMiniredis(t testing.TB) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	return mr, client
}

// Advance moves the time of mr forward by d, for the Mutexes that use it:
//
//   - it fast-forwards the keys' TTLs by d (mr.FastForward), so that the
//     locks whose TTL runs out expire;
//   - if the test fixed the server's clock with mr.SetTime, it moves that
//     clock on by d too (mr.SetTime), so that a grant after the expiry gets
//     a greater fence than the expired lease; a clock that follows the wall
//     clock moves by itself and is left alone;
//   - it announces each lock key of a Mutex that expired on the key's
//     release channel, as an Unlock does, so that a Lock waiting for it
//     (without FIFO) tries again at once. A FIFO waiter finds the key free
//     at its next renewal, within mutex.FIFOLiveness/3.
//
// A fixed clock stands still between calls of Advance or mr.SetTime. The
// release of a lease granted since the clock last moved then fails with an
// error wrapping mutex.ErrClockStalled, and keeps the keys, since a grant
// after it would repeat the fence: move the clock before an Unlock.
//
// The leases of a Mutex measure their validity on the local clock, which
// Advance does not move: a lease whose keys expired still reports itself
// held until its own deadline, and its next Extend or Unlock finds the
// keys gone and fails with an error wrapping mutex.ErrNotHeld. To test
// what code does when a lease's validity runs out, use a Locker.
//
// Advance reads the server's clock with two TIME commands, which count in
// mr.CommandCount; on a server that requires a password, or that
// mr.SetError makes fail, it cannot read the clock and leaves it alone. Do
// not combine it with mr.ClockTTL(true), under which moving the clock
// expires keys already: move the clock with mr.SetTime alone there. A nil
// mr, or a d of zero or less, changes nothing.
func Advance(mr *miniredis.Miniredis, d time.Duration) {
	if mr == nil || d <= 0 {
		return
	}
	if now, fixed := fixedTime(mr); fixed {
		mr.SetTime(now.Add(d))
	}
	before := mr.Keys()
	mr.FastForward(d)
	for _, k := range before {
		if isLockKey(k) && !mr.Exists(k) {
			mr.Publish(k, "")
		}
	}
}

// isLockKey reports whether k is named like the lock key of a Mutex,
// "<prefix>:{<key>}".
func isLockKey(k string) bool {
	return strings.HasSuffix(k, "}") && strings.Contains(k, ":{")
}

// fixedTime returns the time of mr's clock and whether it is fixed (set
// with mr.SetTime): two readings a couple of microseconds apart that agree.
func fixedTime(mr *miniredis.Miniredis) (time.Time, bool) {
	first, ok := serverTime(mr)
	if !ok {
		return time.Time{}, false
	}
	time.Sleep(2 * time.Microsecond)
	second, ok := serverTime(mr)
	if !ok || !second.Equal(first) {
		return time.Time{}, false
	}
	return first, true
}

// serverTime runs TIME on mr in-process, without a connection, and returns
// its reply; ok is false if mr refused the command.
func serverTime(mr *miniredis.Miniredis) (t time.Time, ok bool) {
	srv := mr.Server()
	if srv == nil {
		return time.Time{}, false
	}
	var buf bytes.Buffer
	peer := server.NewPeer(bufio.NewWriter(&buf))
	srv.Dispatch(peer, []string{"TIME"})
	peer.Flush()
	// A reply of two bulk strings: *2, $n, seconds, $n, microseconds.
	lines := strings.Split(buf.String(), "\r\n")
	if len(lines) < 5 || lines[0] != "*2" {
		return time.Time{}, false
	}
	sec, err1 := strconv.ParseInt(lines[2], 10, 64)
	usec, err2 := strconv.ParseInt(lines[4], 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, false
	}
	return time.Unix(sec, usec*1000).UTC(), true
}
