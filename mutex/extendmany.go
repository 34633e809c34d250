package mutex

import (
	"context"
	"reflect"
	"time"

	"github.com/redis/go-redis/v9"
)

// ExtendMany extends many leases at once and returns one error per lease, in
// order, with the meaning of Lease.Extend. Leases of Mutexes that share a
// Redis client are extended in one pipeline, one round trip for all of them;
// other leases (decorated leases are looked through with Unwrapper) are
// extended one by one.
func ExtendMany(ctx context.Context, leases ...Lease) []error {
	errs := make([]error, len(leases))
	type item struct {
		i int
		l *lease
	}
	groups := make(map[redis.UniversalClient][]item)
	for i, x := range leases {
		l := coreLease(x)
		if l == nil {
			errs[i] = x.Extend(ctx)
			continue
		}
		if err := l.Err(); err != nil {
			errs[i] = l.Extend(ctx) // reports the end without a Redis call
			continue
		}
		if !isComparable(l.m.client) || l.m.replicas > 0 || l.parts != nil {
			errs[i] = l.Extend(ctx)
			continue
		}
		groups[l.m.client] = append(groups[l.m.client], item{i, l})
	}
	for client, items := range groups {
		if len(items) == 1 {
			errs[items[0].i] = items[0].l.Extend(ctx)
			continue
		}
		for loaded := false; len(items) > 0; loaded = true {
			start := time.Now()
			pipe := client.Pipeline()
			cmds := make([]*redis.Cmd, len(items))
			for j, it := range items {
				cmds[j] = extendScript.EvalSha(ctx, pipe, it.l.rkeys, it.l.value, it.l.m.ttlMS)
			}
			_, _ = pipe.Exec(ctx)
			var again []item
			for j, it := range items {
				idx, err := cmds[j].Int64()
				if isNoScript(err) {
					again = append(again, it)
					continue
				}
				errs[it.i] = it.l.extended(start, idx, err)
			}
			if len(again) == 0 {
				break
			}
			// A server lost its script cache (a restart, a failover, a new
			// node, SCRIPT FLUSH): load the script, on every node of a
			// Cluster, and send the batch again; if that fails, extend
			// one by one, which loads it where needed.
			if loaded || extendScript.Load(ctx, client).Err() != nil {
				for _, it := range again {
					errs[it.i] = it.l.Extend(ctx)
				}
				break
			}
			items = again
		}
	}
	return errs
}

// isComparable reports whether v may be a map key: a client of a type
// that may not is extended on its own.
func isComparable(v any) bool {
	return reflect.ValueOf(v).Comparable()
}

// coreLease returns the *lease behind a lease's decorators, or nil.
func coreLease(x Lease) *lease {
	for x != nil {
		if l, ok := x.(*lease); ok {
			return l
		}
		u, ok := x.(Unwrapper)
		if !ok {
			return nil
		}
		x = u.Unwrap()
	}
	return nil
}
