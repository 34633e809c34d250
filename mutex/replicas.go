package mutex

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// notReplicatedError reports a grant or an extension that fewer replicas
// acknowledged than the Mutex asks for. It matches ErrNotReplicated and,
// when the lease was lost for it, ErrNotHeld.
type notReplicatedError struct {
	acks, want int64
	within     time.Duration
	lost       bool
}

func (e *notReplicatedError) Error() string {
	return fmt.Sprintf("%v: %d of %d replicas acknowledged within %v", ErrNotReplicated, e.acks, e.want, e.within)
}

func (e *notReplicatedError) Is(target error) bool {
	return target == ErrNotReplicated || (e.lost && target == ErrNotHeld)
}

// primaryFor returns the client of the primary that serves rkey: the Mutex's
// own client, or on a Cluster the client of the key's primary, so that a
// pipeline sent through it runs on one connection.
func (m *Mutex) primaryFor(ctx context.Context, rkey string) (redis.UniversalClient, error) {
	if cc, ok := m.client.(*redis.ClusterClient); ok {
		return cc.MasterForKey(ctx, rkey)
	}
	return m.client, nil
}

// How often, and after how long a pause (growing with each), the
// confirmation of a grant on a Cluster tries again after a MOVED or ASK
// reply: about a second in all, well beyond go-redis's reload of its map
// of the cluster.
const (
	maxRedirectWaits = 8
	redirectPause    = 25 * time.Millisecond
)

// rerouted prepares attempt n+1 (n from 1) of a call that a Cluster
// redirected: it reloads go-redis's map of the cluster and pauses n times
// redirectPause. It reports false if ctx ended first.
func rerouted(ctx context.Context, cc *redis.ClusterClient, n int) bool {
	cc.ReloadState(ctx)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(n) * redirectPause):
		return true
	}
}

func isRedirect(err error) bool {
	return redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK")
}

// extendReplicated runs the extend script for l and WAIT in one pipeline,
// so on one connection: the replicas that acknowledge the extension, which
// the primary wrote after the grant, have the grant too. It returns the
// script's reply (0, or the index of a key no longer held), or an error:
// a *notReplicatedError if too few replicas acknowledged.
func (l *lease) extendReplicated(ctx context.Context) (int64, error) {
	m := l.m
	loaded := false
	for redirects := 0; ; {
		c, err := m.primaryFor(ctx, l.rkeys[0])
		if err != nil {
			return 0, err
		}
		pipe := c.Pipeline()
		var ext *redis.Cmd
		if loaded {
			ext = extendScript.Eval(ctx, pipe, l.rkeys, l.value, m.ttlMS)
		} else {
			ext = extendScript.EvalSha(ctx, pipe, l.rkeys, l.value, m.ttlMS)
		}
		wait := pipe.Do(ctx, "WAIT", m.replicas, m.replicaTimeout.Milliseconds())
		_, _ = pipe.Exec(ctx)
		idx, err := ext.Int64()
		if isNoScript(err) && !loaded {
			loaded = true
			continue
		}
		if cc, ok := m.client.(*redis.ClusterClient); ok && isRedirect(err) && redirects < maxRedirectWaits {
			// The key's slot moved, and go-redis's map of the cluster,
			// which primaryFor follows, is behind: reload it and try
			// again. The extension is safe to repeat.
			redirects++
			if !rerouted(ctx, cc, redirects) {
				return 0, err
			}
			continue
		}
		if err != nil || idx != 0 {
			return idx, err
		}
		acks, err := wait.Int64()
		if err != nil {
			return 0, fmt.Errorf("wait for replicas: %w", err)
		}
		if acks < int64(m.replicas) {
			return 0, &notReplicatedError{acks: acks, want: int64(m.replicas), within: m.replicaTimeout}
		}
		return 0, nil
	}
}

// replicated confirms a new grant with the replicas, when the Mutex asks
// for them: it extends the lease and waits for their acknowledgement. If
// that fails, the grant is released in the background and the lease ends;
// the error is returned, and, as after grantOrBlocked's late grants, the
// caller must not send the lease's token again.
func (m *Mutex) replicated(ctx context.Context, l *lease) error {
	if m.replicas == 0 {
		return nil
	}
	start := time.Now()
	idx, err := l.extendReplicated(ctx)
	if err == nil && idx != 0 {
		err = fmt.Errorf("%w: %q was lost before the replicas acknowledged it", ErrNotHeld, l.keys[idx-1])
	}
	if err == nil {
		err = l.extended(start, 0, nil)
	}
	if err != nil {
		l.mu.Lock()
		l.endLocked(err)
		l.mu.Unlock()
		m.releaseLate(l)
		return err
	}
	return nil
}

// lostToReplicas ends l, whose extension too few replicas acknowledged, and
// releases its keys in the background.
func (l *lease) lostToReplicas(err error) error {
	var nr *notReplicatedError
	if errors.As(err, &nr) {
		lost := *nr
		lost.lost = true
		err = &lost
	}
	l.mu.Lock()
	if l.unlocking == 0 && !l.unlocked {
		l.endLocked(err)
	}
	l.mu.Unlock()
	l.m.releaseLate(l)
	return fmt.Errorf("extend: %w", err)
}
