package mutex

import (
	"context"
	_ "embed"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// The scripts, one per operation, each with the helpers of lib.lua in front.
var (
	//go:embed scripts/lib.lua
	libSrc string
	//go:embed scripts/acquire.lua
	acquireSrc    string
	acquireScript = newScript(libSrc + acquireSrc)
	//go:embed scripts/release.lua
	releaseSrc    string
	releaseScript = newScript(libSrc + releaseSrc)
	//go:embed scripts/release_token.lua
	releaseTokenSrc    string
	releaseTokenScript = newScript(libSrc + releaseTokenSrc)
	//go:embed scripts/extend.lua
	extendSrc    string
	extendScript = newScript(libSrc + extendSrc)
	//go:embed scripts/fifo_lock.lua
	fifoLockSrc    string
	fifoLockScript = newScript(libSrc + fifoLockSrc)
	//go:embed scripts/fifo_claim.lua
	fifoClaimSrc    string
	fifoClaimScript = newScript(libSrc + fifoClaimSrc)
	//go:embed scripts/fifo_release.lua
	fifoReleaseSrc    string
	fifoReleaseScript = newScript(libSrc + fifoReleaseSrc)
	//go:embed scripts/fifo_refresh.lua
	fifoRefreshSrc    string
	fifoRefreshScript = newScript(libSrc + fifoRefreshSrc)
	//go:embed scripts/fifo_leave.lua
	fifoLeaveSrc    string
	fifoLeaveScript = newScript(libSrc + fifoLeaveSrc)
)

// script is a Lua script, with its source and hash boxed once as command
// arguments.
type script struct {
	*redis.Script
	src, hash any
}

func newScript(src string) *script {
	s := redis.NewScript(src)
	return &script{Script: s, src: src, hash: s.Hash()}
}

// evalArgs returns the arguments of an EVALSHA of s: keys, then args.
func (s *script) evalArgs(keys []string, args []any) []any {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, "evalsha", s.hash, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	return append(a, args...)
}

// sourced turns the arguments of an EVALSHA of s into those of an EVAL.
func (s *script) sourced(a []any) {
	a[0], a[1] = "eval", s.src
}

// isNoScript reports whether err says that Redis does not have the script
// cached (after a restart or SCRIPT FLUSH).
func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// sendCounter is the last argument of a script call, and counts how often
// the client wrote the call to Redis: go-redis marshals every argument each
// time it sends a command, and it sends a command again, unchanged, when
// the reply to an earlier send was lost (redis.Options.MaxRetries). The
// script gets "1" on the first send and "2" on any later one: only a later
// one can find what an earlier one did.
type sendCounter struct{ n atomic.Int32 }

// What a sendCounter sends; the writer copies it.
var firstSend, laterSend = []byte{'1'}, []byte{'2'}

// MarshalBinary counts one send.
func (c *sendCounter) MarshalBinary() ([]byte, error) {
	if c.n.Add(1) == 1 {
		return firstSend, nil
	}
	return laterSend, nil
}

// String is what go-redis shows of the argument in logs and traces.
func (c *sendCounter) String() string { return "-" }

// runCounted runs script like redis.Script.Run, through the batcher b, and
// reports how often the call that produced the reply was written to Redis:
// never, for a request that failed before it was sent (no connection,
// say), or more than once, when go-redis sent it again after losing a
// reply (or when the caller gave up on it while a batch was sending it).
// The last of args must be a new *sendCounter, which counts the writes.
//
// On a Cluster, a call that go-redis gives up on with a MOVED, ASK or
// TRYAGAIN reply, while a slot migrates and its map of the cluster lags,
// is sent again after a reload of that map, up to maxRedirectWaits times:
// those replies say that the node did not run the script, and the scripts
// take a re-send of a request (under its token) for what it is.
func runCounted(ctx context.Context, b *batcher, s *script, keys []string, args ...any) (*redis.Cmd, int32) {
	sc := args[len(args)-1].(*sendCounter)
	a := s.evalArgs(keys, args)
	cmd, sent := b.send(ctx, s, a, func() {
		// The send answered NOSCRIPT did not run, but one before it whose
		// reply was lost may have.
		earlier := sc.n.Load() - 1
		sc = new(sendCounter)
		sc.n.Store(earlier)
		a[len(a)-1] = sc
	})
	if sent {
		// The caller gave up while the call was in a batch under way: it
		// may yet run.
		return cmd, max(sc.n.Load(), 1)
	}
	return cmd, sc.n.Load()
}

// runScript runs script like redis.Script.Run, through the Mutex's
// batcher, for a call that may be repeated: extend, a FIFO queue refresh.
func (m *Mutex) runScript(ctx context.Context, s *script, keys []string, args ...any) *redis.Cmd {
	cmd, _ := m.batch.send(ctx, s, s.evalArgs(keys, args), nil)
	return cmd
}

// send runs the script call a (see script.evalArgs) through b: after a
// NOSCRIPT reply it calls noScript, if not nil, and sends the script's
// source instead; on a Cluster, after a MOVED, ASK or TRYAGAIN reply it
// sends the call again (see runCounted). sent is run's.
func (b *batcher) send(ctx context.Context, s *script, a []any, noScript func()) (cmd *redis.Cmd, sent bool) {
	cc, _ := b.client.(*redis.ClusterClient)
	loaded := false
	for redirects := 0; ; {
		cmd, sent = b.run(ctx, a)
		if sent {
			return cmd, true
		}
		err := cmd.Err()
		if isNoScript(err) && !loaded {
			if noScript != nil {
				noScript()
			}
			s.sourced(a)
			loaded = true
			continue
		}
		if cc == nil || !isRerouted(err) || redirects >= maxRedirectWaits {
			return cmd, false
		}
		redirects++
		if !rerouted(ctx, cc, redirects) {
			return cmd, false
		}
	}
}

// isRerouted reports whether err is a Cluster's reply that the request
// belongs on another node, or on this one once a migration ends.
func isRerouted(err error) bool {
	return isRedirect(err) || redis.HasErrorPrefix(err, "TRYAGAIN")
}

// unknownOutcome reports whether a request that failed with err after
// sends writes may have run: it was written, and either its last reply
// was lost or an earlier send's was.
func unknownOutcome(sends int32, err error) bool {
	return sends > 1 || (sends == 1 && !isRedisReply(err))
}
