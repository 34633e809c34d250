package mutex

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// keySlot returns the Redis Cluster hash slot of the escaped key ek, the
// hash tag of its Redis keys: CRC16 (XMODEM) of it, modulo 16384.
func keySlot(ek string) int {
	var crc uint16
	for i := 0; i < len(ek); i++ {
		crc ^= uint16(ek[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
}

// slotGroup is the keys of one call that share a Cluster hash slot, sorted,
// with their Redis keys.
type slotGroup struct {
	slot  int
	keys  []string
	rkeys []string // with room for the revocation marker, as checkKeys
}

// slotGroups splits the keys of a call on a Redis Cluster by hash slot,
// in the global order in which groups are taken: by slot, then by key. It
// returns nil when one script can take all the keys: a client other than a
// *redis.ClusterClient, or keys of one slot.
func (m *Mutex) slotGroups(keys, rkeys []string) []slotGroup {
	if _, ok := m.client.(*redis.ClusterClient); !ok || len(keys) < 2 {
		return nil
	}
	type entry struct {
		slot      int
		key, rkey string
	}
	es := make([]entry, len(keys))
	for i, k := range keys {
		es[i] = entry{keySlot(escapeKey(k)), k, rkeys[i]}
	}
	slices.SortFunc(es, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.slot, b.slot), cmp.Compare(a.key, b.key))
	})
	if es[0].slot == es[len(es)-1].slot {
		return nil
	}
	var groups []slotGroup
	for i := 0; i < len(es); {
		j := i
		for j < len(es) && es[j].slot == es[i].slot {
			j++
		}
		g := slotGroup{slot: es[i].slot, keys: make([]string, 0, j-i), rkeys: make([]string, 0, j-i+1)}
		for _, e := range es[i:j] {
			g.keys = append(g.keys, e.key)
			g.rkeys = append(g.rkeys, e.rkey)
		}
		groups = append(groups, g)
		i = j
	}
	return groups
}

// errPartLost cancels the wait for a slot group when a group held already
// was lost meanwhile.
var errPartLost = errors.New("a slot group held while waiting for the next was lost")

// lockGroups takes the slot groups of a call one after the other, each
// while holding the groups before it, and returns one lease over all of
// them. With try, each group gets one attempt, and a group found held ends
// the call. A failure releases the groups held already. A Lock that loses
// a group it holds while it waits for a later one (its keys expired, say,
// while Redis could not be reached) releases the others and starts again.
func (m *Mutex) lockGroups(ctx context.Context, keys []string, groups []slotGroup, try bool) (Lease, error) {
	for {
		l, err := m.lockGroupsOnce(ctx, keys, groups, try)
		if !errors.Is(err, errPartLost) {
			return l, err
		}
		if err := ctx.Err(); err != nil {
			return nil, &NotObtainedError{Cause: err}
		}
	}
}

func (m *Mutex) lockGroupsOnce(ctx context.Context, keys []string, groups []slotGroup, try bool) (Lease, error) {
	k := &groupKeeper{m: m, stop: make(chan struct{})}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if !try {
		k.wg.Add(1)
		go k.run(wctx, cancel)
	}
	for _, g := range groups {
		x, err := Lease(nil), m.checkOpen()
		switch {
		case err != nil:
		case try:
			x, err = m.mode.tryLock(ctx, g.keys, g.rkeys)
		default:
			x, err = m.mode.lock(wctx, g.keys, g.rkeys)
		}
		if err == nil {
			k.add(x.(*lease))
			continue
		}
		parts := k.end()
		m.releaseParts(parts)
		if ctx.Err() == nil && errors.Is(context.Cause(wctx), errPartLost) {
			return nil, errPartLost
		}
		return nil, err
	}
	parts := k.end()
	for _, p := range parts {
		if p.Err() != nil {
			m.releaseParts(parts)
			if try {
				return nil, fmt.Errorf("acquire: %w", p.Err())
			}
			return nil, errPartLost
		}
	}
	return m.joinParts(keys, parts), nil
}

// groupKeeper extends the slot groups that a multi-slot Lock holds while it
// waits for the next one, a third of the TTL after each extension.
type groupKeeper struct {
	m    *Mutex
	mu   sync.Mutex
	held []*lease
	stop chan struct{}
	wg   sync.WaitGroup
}

func (k *groupKeeper) add(l *lease) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.held = append(k.held, l)
}

// end stops the extensions and returns the groups held.
func (k *groupKeeper) end() []*lease {
	close(k.stop)
	k.wg.Wait()
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.held
}

func (k *groupKeeper) run(ctx context.Context, cancel context.CancelCauseFunc) {
	defer k.wg.Done()
	t := time.NewTicker(k.m.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		held := slices.Clone(k.held)
		k.mu.Unlock()
		for _, l := range held {
			// A Redis error leaves the lease to its deadline, which the
			// next tick comes before.
			if err := l.Extend(ctx); errors.Is(err, ErrNotHeld) {
				cancel(errPartLost)
				return
			}
		}
	}
}

// releaseParts releases the slot groups of a call that failed, each in its
// own request, and leaves those that fail to a background release.
func (m *Mutex) releaseParts(parts []*lease) {
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), closedAttemptTimeout)
			defer cancel()
			if err := p.Unlock(ctx); err != nil && !errors.Is(err, ErrNotHeld) && !errors.Is(err, ErrReleased) {
				m.releaseLate(p)
			}
		}()
	}
	wg.Wait()
}

// joinParts returns the lease over the slot groups of one call. Its
// validity ends with the first of theirs; its token and fence are those of
// the group of keys[0].
func (m *Mutex) joinParts(keys []string, parts []*lease) *lease {
	first := partOf(parts, keys[0])
	l := &lease{
		m:     m,
		keys:  keys,
		parts: parts,
		token: first.token,
		fence: first.fence,
		value: first.value,
		seen:  first.seen,
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range parts {
		p.mu.Lock()
		p.parent = l
		p.mu.Unlock()
	}
	l.deadline = partsDeadline(parts)
	l.expireLocked()
	return l
}

// partOf returns the part that holds key, or nil.
func partOf(parts []*lease, key string) *lease {
	for _, p := range parts {
		if slices.Contains(p.keys, key) {
			return p
		}
	}
	return nil
}

func partsDeadline(parts []*lease) time.Time {
	d := parts[0].Deadline()
	for _, p := range parts[1:] {
		if pd := p.Deadline(); pd.Before(d) {
			d = pd
		}
	}
	return d
}

// eachPart runs f on every part at once and returns their errors.
func eachPart(parts []*lease, f func(p *lease) error) []error {
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(p)
		}()
	}
	wg.Wait()
	return errs
}

// extendParts implements Extend for a lease over several slot groups.
func (l *lease) extendParts(ctx context.Context) error {
	errs := eachPart(l.parts, func(p *lease) error { return p.Extend(ctx) })
	l.mu.Lock()
	defer l.mu.Unlock()
	// Each part's deadline moved only if its extension succeeded.
	l.deadline = partsDeadline(l.parts)
	l.rearmLocked()
	for _, err := range errs {
		if errors.Is(err, ErrNotHeld) {
			if l.unlocking == 0 && !l.unlocked {
				l.endLocked(errors.Unwrap(err))
			}
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	l.expireLocked()
	if l.err != nil {
		return fmt.Errorf("extend: %w", l.err)
	}
	return nil
}

// unlockParts implements Unlock for a lease over several slot groups. A
// part released by an earlier call that failed on another part reports
// ErrReleased, which counts as released.
func (l *lease) unlockParts(ctx context.Context) error {
	l.mu.Lock()
	if l.unlocked {
		l.mu.Unlock()
		return fmt.Errorf("unlock: %w", ErrReleased)
	}
	l.unlocking++
	l.mu.Unlock()
	errs := eachPart(l.parts, func(p *lease) error { return p.Unlock(ctx) })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unlocking--
	var failed error
	released := false
	for _, err := range errs {
		switch {
		case err == nil, errors.Is(err, ErrReleased):
			released = true
		case errors.Is(err, ErrNotHeld):
			if l.partLost == nil {
				l.partLost = errors.Unwrap(err)
			}
		default:
			failed = err
		}
	}
	if failed != nil {
		// Some groups may be gone already: the lease no longer holds all
		// its keys, though Unlock may be called again for the rest.
		switch {
		case l.err != nil:
		case l.partLost != nil:
			l.endLocked(l.partLost)
		case released:
			l.partial = true
			l.endLocked(ErrReleased)
		}
		return failed
	}
	if l.unlocked {
		return fmt.Errorf("unlock: %w", ErrReleased)
	}
	l.unlocked = true
	if l.partLost != nil {
		l.endLocked(l.partLost)
		return fmt.Errorf("unlock: %w", l.partLost)
	}
	if l.partial {
		// An earlier Unlock released the other groups.
		return nil
	}
	l.expireLocked()
	if l.err != nil {
		return fmt.Errorf("unlock: %w", l.err)
	}
	l.endLocked(ErrReleased)
	return nil
}

// checkGroups counts the held keys of rkeys on a Cluster, one EXISTS per
// slot group, in one pipeline.
func (m *Mutex) checkGroups(ctx context.Context, groups []slotGroup) (int64, error) {
	pipe := m.client.Pipeline()
	cmds := make([]*redis.IntCmd, len(groups))
	for i, g := range groups {
		cmds[i] = pipe.Exists(ctx, g.rkeys...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}
