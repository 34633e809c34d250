package lockcore

import (
	"context"
	_ "embed"
	"errors"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// The scripts, one per operation, each with the helpers of lib.lua in front.
var (
	//go:embed scripts/lib.lua
	libSrc string
	//go:embed scripts/join.lua
	joinSrc    string
	joinScript = redis.NewScript(libSrc + joinSrc)
	//go:embed scripts/claim.lua
	claimSrc    string
	claimScript = redis.NewScript(libSrc + claimSrc)
	//go:embed scripts/leave.lua
	leaveSrc    string
	leaveScript = redis.NewScript(libSrc + leaveSrc)
	//go:embed scripts/release.lua
	releaseSrc    string
	releaseScript = redis.NewScript(libSrc + releaseSrc)
	//go:embed scripts/extend.lua
	extendSrc    string
	extendScript = redis.NewScript(libSrc + extendSrc)
	//go:embed scripts/refresh.lua
	refreshSrc    string
	refreshScript = redis.NewScript(libSrc + refreshSrc)
	//go:embed scripts/check.lua
	checkSrc    string
	checkScript = redis.NewScript(libSrc + checkSrc)
)

// sendCounter is the last argument of a script call, and counts how often
// the client wrote the call to Redis: go-redis marshals every argument each
// time it sends a command, and it sends a command again, unchanged, when
// the reply to an earlier send was lost. The scripts ignore it.
type sendCounter struct{ n atomic.Int32 }

// MarshalBinary counts one send.
func (c *sendCounter) MarshalBinary() ([]byte, error) {
	c.n.Add(1)
	return []byte{'-'}, nil
}

// String is what go-redis shows of the argument in logs and traces.
func (c *sendCounter) String() string { return "-" }

// run runs script like redis.Script.Run and reports how often the call
// that produced the reply was written to Redis: never, for a request that
// failed before it was sent, or more than once, when go-redis sent it
// again after losing a reply.
func run(ctx context.Context, c redis.Scripter, s *redis.Script, keys []string, args ...any) (*redis.Cmd, int32) {
	sc := new(sendCounter)
	args = append(args, sc)
	cmd := s.EvalSha(ctx, c, keys, args...)
	if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// That send did not run, but one before it whose reply was lost
		// may have.
		earlier := sc.n.Load() - 1
		sc = new(sendCounter)
		sc.n.Store(earlier)
		args[len(args)-1] = sc
		cmd = s.Eval(ctx, c, keys, args...)
	}
	return cmd, sc.n.Load()
}

// unknownOutcome reports whether a request that failed with err after
// sends writes may have run.
func unknownOutcome(sends int32, err error) bool {
	var rerr redis.Error
	isReply := errors.As(err, &rerr) && !errors.Is(err, redis.ErrClosed)
	return sends > 1 || (sends == 1 && !isReply)
}
