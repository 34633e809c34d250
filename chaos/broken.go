package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/distlock/distlock/mutex"
	"github.com/redis/go-redis/v9"
)

// BrokenLocker is a deliberately unsafe lock for the self-test: it takes a
// key with a plain SET NX PX, releases it with DEL without checking the
// owner, never notices that a lease ran out (Err stays nil until Unlock),
// and draws fences from a counter local to the process. The checkers must
// flag it.
type BrokenLocker struct {
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
	fence  atomic.Int64
}

var _ mutex.Locker = (*BrokenLocker)(nil)

// NewBrokenLocker returns a BrokenLocker on client.
func NewBrokenLocker(client redis.UniversalClient, prefix string, ttl time.Duration) *BrokenLocker {
	return &BrokenLocker{client: client, prefix: prefix, ttl: ttl}
}

func (b *BrokenLocker) rkey(k string) string { return b.prefix + ":broken:" + k }

// TryLock makes one attempt: SET NX each key in turn, and DEL those it set
// if one is taken.
func (b *BrokenLocker) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	start := time.Now()
	for i, k := range keys {
		ok, err := b.client.SetNX(ctx, b.rkey(k), token, b.ttl).Result()
		if err != nil || !ok {
			for _, held := range keys[:i] {
				b.client.Del(context.WithoutCancel(ctx), b.rkey(held))
			}
			if err != nil {
				return nil, err
			}
			return nil, mutex.ErrNotObtained
		}
	}
	return &brokenLease{b: b, keys: append([]string(nil), keys...), token: token,
		fence: b.fence.Add(1), deadline: start.Add(b.ttl), done: make(chan struct{})}, nil
}

// Lock polls TryLock every 5ms until it succeeds or ctx ends.
func (b *BrokenLocker) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	for {
		l, err := b.TryLock(ctx, keys...)
		if !errors.Is(err, mutex.ErrNotObtained) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(mutex.ErrNotObtained, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Check counts the keys that exist.
func (b *BrokenLocker) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	n := 0
	for _, k := range keys {
		c, err := b.client.Exists(ctx, b.rkey(k)).Result()
		if err != nil {
			return mutex.Available, err
		}
		n += int(c)
	}
	switch {
	case n == 0:
		return mutex.Available, nil
	case n == len(keys):
		return mutex.Locked, nil
	}
	return mutex.PartiallyLocked, nil
}

type brokenLease struct {
	b        *BrokenLocker
	keys     []string
	token    string
	fence    int64
	deadline time.Time
	released atomic.Bool
	done     chan struct{}
}

func (l *brokenLease) Keys() []string { return append([]string(nil), l.keys...) }
func (l *brokenLease) Token() string  { return l.token }
func (l *brokenLease) Fence() int64   { return l.fence }
func (l *brokenLease) FenceOf(key string) int64 {
	if slices.Contains(l.keys, key) {
		return l.fence
	}
	return 0
}
func (l *brokenLease) Done() <-chan struct{} { return l.done }

// Deadline is the naive validity: attempt start plus TTL, with no drift
// allowance.
func (l *brokenLease) Deadline() time.Time { return l.deadline }

// Err is nil until Unlock: the broken lease never notices expiry.
func (l *brokenLease) Err() error {
	if l.released.Load() {
		return mutex.ErrReleased
	}
	return nil
}

// Extend sets the TTL again without an owner check.
func (l *brokenLease) Extend(ctx context.Context) error {
	for _, k := range l.keys {
		if err := l.b.client.PExpire(ctx, l.b.rkey(k), l.b.ttl).Err(); err != nil {
			return err
		}
	}
	return nil
}

// Unlock deletes the keys whoever holds them.
func (l *brokenLease) Unlock(ctx context.Context) error {
	if l.released.Swap(true) {
		return mutex.ErrReleased
	}
	close(l.done)
	rkeys := make([]string, len(l.keys))
	for i, k := range l.keys {
		rkeys[i] = l.b.rkey(k)
	}
	return l.b.client.Del(ctx, rkeys...).Err()
}
