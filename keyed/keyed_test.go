package keyed_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
)

// newMutex returns a Mutex on the shared server with a prefix unique to the
// test, closed at cleanup.
func newMutex(t testing.TB) *mutex.Mutex {
	t.Helper()
	return newMutexOn(t, redistest.Shared(t).Client(t))
}

// newMutexOn returns a Mutex on c with a prefix unique to the test, closed
// at cleanup.
func newMutexOn(t testing.TB, c redis.UniversalClient) *mutex.Mutex {
	t.Helper()
	m, err := mutex.New(c, mutex.Config{Prefix: testPrefix(t)})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func testPrefix(t testing.TB) string {
	return "t:" + strings.NewReplacer("/", ":", " ", "_", "#", "_").Replace(t.Name())
}

// recorder is a Locker that records the keys of every call before passing
// it on to the Locker it wraps.
type recorder struct {
	mutex.Locker
	mu    sync.Mutex
	calls []call
}

type call struct {
	method string
	keys   []string
}

func (r *recorder) record(method string, keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{method, append([]string(nil), keys...)})
}

func (r *recorder) Calls() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

func (r *recorder) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	r.record("Lock", keys)
	return r.Locker.Lock(ctx, keys...)
}

func (r *recorder) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	r.record("TryLock", keys)
	return r.Locker.TryLock(ctx, keys...)
}

func (r *recorder) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	r.record("Check", keys)
	return r.Locker.Check(ctx, keys...)
}

type userID int64

func (u userID) String() string { return "user #" + strconv.FormatInt(int64(u), 10) }

type email string

func (e email) String() string { return strings.ToUpper(string(e)) }

type point struct{ X, Y int }

func (p point) String() string { return fmt.Sprintf("(%d,%d)", p.X, p.Y) }

type ptrStringer struct{ name string }

func (p *ptrStringer) String() string { return p.name }

type noEncoding struct{ A int }

func key[K comparable](t *testing.T, l mutex.Locker, ns string, k K, opts ...keyed.Option[K]) string {
	t.Helper()
	s, err := keyed.New[K](l, ns, opts...).Key(k)
	require.NoError(t, err)
	return s
}

func TestDefaultEncodings(t *testing.T) {
	m := newMutex(t)
	id := uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")

	assert.Equal(t, "user:alice", key(t, m, "user", "alice"))
	assert.Equal(t, "user:a:b c", key(t, m, "user", "a:b c"))
	assert.Equal(t, "n:42", key(t, m, "n", 42))
	assert.Equal(t, "n:-7", key(t, m, "n", int8(-7)))
	assert.Equal(t, "n:-9223372036854775808", key(t, m, "n", int64(-1<<63)))
	assert.Equal(t, "n:18446744073709551615", key(t, m, "n", ^uint64(0)))
	assert.Equal(t, "n:255", key(t, m, "n", uint8(255)))
	assert.Equal(t, "n:7", key(t, m, "n", uintptr(7)))
	assert.Equal(t, "id:6ba7b810-9dad-11d1-80b4-00c04fd430c8", key(t, m, "id", id))
	assert.Equal(t, "p:(1,-2)", key(t, m, "p", point{1, -2}))
	assert.Equal(t, "p:x", key(t, m, "p", &ptrStringer{"x"}))
	assert.Equal(t, "s:y", key[fmt.Stringer](t, m, "s", &ptrStringer{"y"}))

	// The value of a string or integer type wins over its String method.
	assert.Equal(t, "user:42", key(t, m, "user", userID(42)))
	assert.Equal(t, "mail:bob@example.com", key(t, m, "mail", email("bob@example.com")))
}

func TestKeyFunc(t *testing.T) {
	m := newMutex(t)
	f := keyed.WithKeyFunc(func(u userID) string { return "u" + strconv.Itoa(int(u)) })
	assert.Equal(t, "user:u42", key(t, m, "user", userID(42), f))

	type ref struct {
		Tenant string
		ID     int
	}
	refs := keyed.New(m, "order", keyed.WithKeyFunc(func(r ref) string {
		return strconv.Itoa(r.ID) + "@" + r.Tenant
	}))
	require.NoError(t, refs.Err())
	s, err := refs.Key(ref{"acme", 7})
	require.NoError(t, err)
	assert.Equal(t, "order:7@acme", s)

	// The last WithKeyFunc wins.
	g := keyed.WithKeyFunc(func(u userID) string { return "g" })
	assert.Equal(t, "user:g", key(t, m, "user", userID(1), f, g))
}

func TestNamespaceIsEscaped(t *testing.T) {
	m := newMutex(t)
	assert.Equal(t, "a:b:c", key(t, m, "a", "b:c"))
	assert.Equal(t, "a%3Ab:c", key(t, m, "a:b", "c"))
	assert.Equal(t, "a%25:b", key(t, m, "a%", "b"))
	assert.Equal(t, "a%253A:b", key(t, m, "a%3A", "b"))
	assert.Equal(t, "a%3A:b", key(t, m, "a:", "b"))
	assert.Equal(t, "a:%3A:b", key(t, m, "a", "%3A:b"))
	assert.Equal(t, "name space{}:x", key(t, m, "name space{}", "x"))

	assert.Equal(t, "user", keyed.New[int](m, "user").Namespace())
}

func TestDistinctNamespacesAreDistinctLocks(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		m := newMutexOn(t, backend.Client(t))
		a := keyed.New[string](m, "a")
		ab := keyed.New[string](m, "a:b")

		l1, err := a.TryLock(ctx, "b:c")
		require.NoError(t, err)
		l2, err := ab.TryLock(ctx, "c")
		require.NoError(t, err, "namespace a:b, key c must not be the lock of namespace a, key b:c")

		st, err := a.Check(ctx, "b:c")
		require.NoError(t, err)
		assert.Equal(t, mutex.Locked, st)
		_, err = a.TryLock(ctx, "b:c")
		assert.ErrorIs(t, err, mutex.ErrNotObtained)

		require.NoError(t, l1.Unlock(ctx))
		st, err = a.Check(ctx, "b:c")
		require.NoError(t, err)
		assert.Equal(t, mutex.Available, st)
		st, err = ab.Check(ctx, "c")
		require.NoError(t, err)
		assert.Equal(t, mutex.Locked, st)
		require.NoError(t, l2.Unlock(ctx))

		left, err := redistest.Keys(ctx, backend.Client(t), m.Prefix()+"*")
		require.NoError(t, err)
		assert.Empty(t, left, "nothing stays in Redis after the unlocks")
	})
}

func TestInvalidConfiguration(t *testing.T) {
	m := newMutex(t)
	rec := &recorder{Locker: m}
	var nilMutex *mutex.Mutex
	tests := []struct {
		name string
		k    *keyed.Keyed[string]
		msg  string
	}{
		{"nil locker", keyed.New[string](nil, "ns"), "nil Locker"},
		{"typed nil locker", keyed.New[string](nilMutex, "ns"), "nil Locker"},
		{"empty namespace", keyed.New[string](rec, ""), "empty namespace"},
		{"long namespace", keyed.New[string](rec, strings.Repeat("n", keyed.MaxNamespaceLen+1)), "namespace of 65 bytes, longer than 64"},
		{"nil key func", keyed.New(rec, "ns", keyed.WithKeyFunc[string](nil)), "nil key function"},
		{"nil option", keyed.New[string](rec, "ns", nil), "nil Option"},
		{"zero value", &keyed.Keyed[string]{}, "Keyed not made by New"},
		{"nil pointer", nil, "Keyed not made by New"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			err := tt.k.Err()
			require.ErrorIs(t, err, mutex.ErrInvalid)
			assert.Equal(t, "mutex: invalid argument: "+tt.msg, err.Error())

			_, err = tt.k.Key("x")
			assert.ErrorIs(t, err, mutex.ErrInvalid)
			_, err = tt.k.Lock(ctx, "x")
			assert.ErrorIs(t, err, mutex.ErrInvalid)
			_, err = tt.k.TryLock(ctx, "x")
			assert.ErrorIs(t, err, mutex.ErrInvalid)
			_, err = tt.k.LockMany(ctx, "x", "y")
			assert.ErrorIs(t, err, mutex.ErrInvalid)
			_, err = tt.k.TryLockMany(ctx, "x", "y")
			assert.ErrorIs(t, err, mutex.ErrInvalid)
			st, err := tt.k.Check(ctx, "x")
			assert.ErrorIs(t, err, mutex.ErrInvalid)
			assert.Equal(t, mutex.Available, st)
			ran := false
			fn := func(context.Context) error { ran = true; return nil }
			assert.ErrorIs(t, tt.k.WithLock(ctx, "x", fn), mutex.ErrInvalid)
			assert.ErrorIs(t, tt.k.WithLockMany(ctx, []string{"x"}, fn), mutex.ErrInvalid)
			assert.False(t, ran)
		})
	}
	assert.Empty(t, rec.Calls(), "no call may reach the Locker")
}

func TestNamespaceLengthLimit(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := newMutexOn(t, backend.Client(t))
		ns := strings.Repeat("n", keyed.MaxNamespaceLen)
		k := keyed.New[string](m, ns)
		require.NoError(t, k.Err())
		l, err := k.TryLock(t.Context(), "x")
		require.NoError(t, err)
		require.NoError(t, l.Unlock(t.Context()))
	})
}

func TestNoDefaultEncoding(t *testing.T) {
	m := newMutex(t)
	k := keyed.New[noEncoding](m, "ns")
	err := k.Err()
	require.ErrorIs(t, err, mutex.ErrInvalid)
	assert.EqualError(t, err, "mutex: invalid argument: no default key encoding for keyed_test.noEncoding: use WithKeyFunc")
	_, err = k.Lock(t.Context(), noEncoding{1})
	assert.ErrorIs(t, err, mutex.ErrInvalid)

	for _, err := range []error{
		keyed.New[any](m, "ns").Err(),
		keyed.New[bool](m, "ns").Err(),
		keyed.New[float64](m, "ns").Err(),
		keyed.New[[16]byte](m, "ns").Err(),
		keyed.New[*int](m, "ns").Err(),
	} {
		assert.ErrorIs(t, err, mutex.ErrInvalid)
	}
	f := keyed.WithKeyFunc(func(n noEncoding) string { return strconv.Itoa(n.A) })
	assert.NoError(t, keyed.New(m, "ns", f).Err())
}

func TestBadKeys(t *testing.T) {
	ctx := t.Context()
	m := newMutex(t)
	rec := &recorder{Locker: m}

	strs := keyed.New[string](rec, "ns")
	_, err := strs.Key("")
	assert.ErrorIs(t, err, mutex.ErrInvalid)
	assert.ErrorContains(t, err, "mutex: invalid argument: empty key string")
	_, err = strs.LockMany(ctx, "a", "")
	assert.ErrorIs(t, err, mutex.ErrInvalid)
	_, err = strs.LockMany(ctx)
	assert.ErrorIs(t, err, mutex.ErrInvalid)
	assert.ErrorContains(t, err, "no keys")
	assert.ErrorIs(t, strs.WithLockMany(ctx, nil, func(context.Context) error { return nil }), mutex.ErrInvalid)
	assert.ErrorIs(t, strs.WithLock(ctx, "a", nil), mutex.ErrInvalid)
	assert.ErrorIs(t, strs.WithLockMany(ctx, []string{"a"}, nil), mutex.ErrInvalid)

	ptrs := keyed.New[*ptrStringer](rec, "ns")
	_, err = ptrs.Lock(ctx, nil)
	assert.ErrorIs(t, err, mutex.ErrInvalid)
	assert.ErrorContains(t, err, "nil *keyed_test.ptrStringer key")

	ifaces := keyed.New[fmt.Stringer](rec, "ns")
	_, err = ifaces.TryLock(ctx, nil)
	assert.ErrorIs(t, err, mutex.ErrInvalid)
	var nilPtr *ptrStringer
	_, err = ifaces.TryLock(ctx, nilPtr)
	assert.ErrorIs(t, err, mutex.ErrInvalid)

	empty := keyed.New(rec, "ns", keyed.WithKeyFunc(func(int) string { return "" }))
	_, err = empty.Check(ctx, 1)
	assert.ErrorIs(t, err, mutex.ErrInvalid)

	assert.Empty(t, rec.Calls(), "no call may reach the Locker")
}

func TestKeyLengthLimit(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		m := newMutexOn(t, backend.Client(t))
		rec := &recorder{Locker: m}
		k := keyed.New[string](rec, "a:b") // core prefix "a%3Ab:", 6 bytes
		longest := strings.Repeat("k", mutex.MaxKeyLen-6)

		s, err := k.Key(longest)
		require.NoError(t, err)
		assert.Len(t, s, mutex.MaxKeyLen)
		l, err := k.TryLock(ctx, longest)
		require.NoError(t, err, "the core must accept the longest key Keyed gives")
		require.NoError(t, l.Unlock(ctx))

		_, err = k.TryLock(ctx, longest+"k")
		require.ErrorIs(t, err, mutex.ErrInvalid)
		assert.ErrorContains(t, err, `key of 507 bytes in namespace "a:b" (513 bytes with the namespace), longer than 512`)
		assert.Len(t, rec.Calls(), 1)
	})
}

func TestLockManyDeduplicatesAndSorts(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		m := newMutexOn(t, backend.Client(t))
		rec := &recorder{Locker: m}
		k := keyed.New[int](rec, "acct")

		l, err := k.LockMany(ctx, 3, 1, 2, 1, 3)
		require.NoError(t, err)
		want := []string{"acct:1", "acct:2", "acct:3"}
		assert.Equal(t, want, l.Keys())
		for _, id := range []int{1, 2, 3} {
			_, err := k.TryLock(ctx, id)
			assert.ErrorIs(t, err, mutex.ErrNotObtained)
		}
		require.NoError(t, l.Unlock(ctx))

		l, err = k.TryLockMany(ctx, 2, 3, 1)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))

		calls := rec.Calls()
		require.Len(t, calls, 5)
		assert.Equal(t, call{"Lock", want}, calls[0])
		assert.Equal(t, call{"TryLock", want}, calls[4])

		// One held key makes the whole set fail, and nothing stays held.
		held, err := k.Lock(ctx, 2)
		require.NoError(t, err)
		_, err = k.TryLockMany(ctx, 1, 2, 3)
		assert.ErrorIs(t, err, mutex.ErrNotObtained)
		for _, id := range []int{1, 3} {
			st, err := k.Check(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, mutex.Available, st)
		}
		require.NoError(t, held.Unlock(ctx))

		// Keys given in opposite orders from two goroutines cannot deadlock.
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for _, ids := range [][]int{{1, 2, 3}, {3, 2, 1}} {
			wg.Go(func() {
				for range 20 {
					l, err := k.LockMany(ctx, ids...)
					if err != nil {
						errs <- err
						return
					}
					if err := l.Unlock(ctx); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func TestLockMutualExclusion(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		m := newMutexOn(t, backend.Client(t))
		rdb := backend.Client(t)
		users := keyed.New[int64](m, "user")
		counter := testPrefix(t) + ":balance:"
		del := func() {
			for _, k := range []string{counter + "0", counter + "1"} {
				rdb.Del(context.WithoutCancel(ctx), k)
			}
		}
		del()
		t.Cleanup(del)

		const workers, rounds = 4, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range rounds {
					user := int64((w + i) % 2)
					if err := increment(ctx, users, rdb, user, counter); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		total := 0
		for user := range 2 {
			n, err := rdb.Get(ctx, counter+strconv.Itoa(user)).Int()
			require.NoError(t, err)
			total += n
		}
		assert.Equal(t, workers*rounds, total, "every unsynchronised read-modify-write must count")
	})
}

// increment adds one to the counter of user with a GET and a SET, which
// loses updates unless the lock excludes the other writers.
func increment(ctx context.Context, users *keyed.Keyed[int64], rdb redis.UniversalClient, user int64, counter string) error {
	l, err := users.Lock(ctx, user)
	if err != nil {
		return err
	}
	name := counter + strconv.FormatInt(user, 10)
	n, err := rdb.Get(ctx, name).Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		return errors.Join(err, l.Unlock(ctx))
	}
	if err := rdb.Set(ctx, name, n+1, 0).Err(); err != nil {
		return errors.Join(err, l.Unlock(ctx))
	}
	return l.Unlock(ctx)
}

func TestLockWaitsForRelease(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		m := newMutexOn(t, backend.Client(t))
		ids := keyed.New[uuid.UUID](m, "order")
		id := uuid.New()

		first, err := ids.Lock(ctx, id)
		require.NoError(t, err)
		got := make(chan error, 1)
		go func() {
			l, err := ids.Lock(ctx, id)
			if err == nil {
				err = l.Unlock(ctx)
			}
			got <- err
		}()
		select {
		case err := <-got:
			t.Fatalf("second Lock returned %v while the first lease was held", err)
		default:
		}
		require.NoError(t, first.Unlock(ctx))
		require.NoError(t, <-got)

		// A Lock whose context ends while waiting reports both causes.
		first, err = ids.Lock(ctx, id)
		require.NoError(t, err)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err = ids.Lock(cctx, id)
		assert.ErrorIs(t, err, mutex.ErrNotObtained)
		assert.ErrorIs(t, err, context.Canceled)
		require.NoError(t, first.Unlock(ctx))
	})
}

func TestWithLock(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		m := newMutexOn(t, backend.Client(t))
		users := keyed.New[string](m, "user")

		errFn := errors.New("fn failed")
		err := users.WithLock(ctx, "alice", func(ctx context.Context) error {
			l := mutex.LeaseFromContext(ctx)
			require.NotNil(t, l)
			assert.Equal(t, []string{"user:alice"}, l.Keys())
			st, err := users.Check(ctx, "alice")
			require.NoError(t, err)
			assert.Equal(t, mutex.Locked, st)
			_, err = users.TryLock(context.WithoutCancel(t.Context()), "alice")
			assert.ErrorIs(t, err, mutex.ErrNotObtained)

			// Nested on the same key through the same Locker: joins the lease.
			return users.WithLock(ctx, "alice", func(ctx context.Context) error {
				assert.Equal(t, l.Token(), mutex.LeaseFromContext(ctx).Token())
				return errFn
			})
		})
		assert.ErrorIs(t, err, errFn)
		st, err := users.Check(ctx, "alice")
		require.NoError(t, err)
		assert.Equal(t, mutex.Available, st)

		err = users.WithLockMany(ctx, []string{"bob", "alice", "bob"}, func(ctx context.Context) error {
			l := mutex.LeaseFromContext(ctx)
			require.NotNil(t, l)
			assert.Equal(t, []string{"user:alice", "user:bob"}, l.Keys())
			return users.WithLock(ctx, "bob", func(ctx context.Context) error {
				assert.Equal(t, l.Token(), mutex.LeaseFromContext(ctx).Token())
				return nil
			})
		})
		require.NoError(t, err)
		for _, u := range []string{"alice", "bob"} {
			st, err := users.Check(ctx, u)
			require.NoError(t, err)
			assert.Equal(t, mutex.Available, st)
		}
	})
}

func TestConcurrentUse(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		m := newMutexOn(t, backend.Client(t))
		k := keyed.New[uint32](m, "c")
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Go(func() {
				for i := range 10 {
					id := uint32(g*100 + i)
					if _, err := k.Key(id); err != nil {
						errs <- err
						return
					}
					err := k.WithLockMany(ctx, []uint32{id, id + 1000}, func(context.Context) error { return nil })
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}
