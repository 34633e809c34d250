package fencing_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/examples/fencing"
	"github.com/distlock/distlock/mutex"
)

// openDB opens a SQLite database in a temporary file, in WAL mode and with
// a busy timeout so that concurrent writers wait for each other.
func openDB(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fencing.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newSQLStore(t *testing.T) (*fencing.SQLStore, *sql.DB) {
	t.Helper()
	db := openDB(t)
	s, err := fencing.NewSQLStore(db, "fenced_values")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTable(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, db
}

func newRedisStore(t *testing.T) (*fencing.RedisStore, *redis.Client) {
	t.Helper()
	c := redisClient(t)
	s, err := fencing.NewRedisStore(c, uniquePrefix(t))
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

var prefixSeq atomic.Int64

// uniquePrefix returns a key prefix of the test's own, also when tests run
// again (-count) on the same server.
func uniquePrefix(t *testing.T) string {
	return fmt.Sprintf("test:%s:%d", t.Name(), prefixSeq.Add(1))
}

// stores returns a constructor of each Store implementation, on real
// storage.
func stores() map[string]func(t *testing.T) fencing.Store {
	return map[string]func(t *testing.T) fencing.Store{
		"sql": func(t *testing.T) fencing.Store {
			s, _ := newSQLStore(t)
			return s
		},
		"redis": func(t *testing.T) fencing.Store {
			s, _ := newRedisStore(t)
			return s
		},
	}
}

// expect fails the test unless Read of id returns value and fence.
func expect(t *testing.T, s fencing.Store, id, value string, fence int64) {
	t.Helper()
	v, f, err := s.Read(t.Context(), id)
	if err != nil {
		t.Fatalf("read %q: %v", id, err)
	}
	if string(v) != value || f != fence {
		t.Fatalf("read %q = %q, fence %d; want %q, fence %d", id, v, f, value, fence)
	}
}

func TestWrite(t *testing.T) {
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			if _, _, err := s.Read(ctx, "k"); !errors.Is(err, fencing.ErrNotFound) {
				t.Fatalf("read before any write: %v, want ErrNotFound", err)
			}
			steps := []struct {
				value string
				fence int64
				stale bool
			}{
				{"first", 100, false},
				{"newer", 200, false},
				{"same grant again", 200, false},
				{"older", 150, true},
				{"oldest", 1, true},
				{"", 300, false},
				{"after empty", 300, false},
			}
			want, wantFence := "", int64(0)
			for _, st := range steps {
				err := s.Write(ctx, "k", []byte(st.value), st.fence)
				switch {
				case st.stale && !errors.Is(err, fencing.ErrStaleFence):
					t.Fatalf("write %q with fence %d: %v, want ErrStaleFence", st.value, st.fence, err)
				case !st.stale && err != nil:
					t.Fatalf("write %q with fence %d: %v", st.value, st.fence, err)
				case !st.stale:
					want, wantFence = st.value, st.fence
				}
				expect(t, s, "k", want, wantFence)
			}
			// Fences are kept per id.
			if err := s.Write(ctx, "other", []byte("x"), 1); err != nil {
				t.Fatal(err)
			}
			expect(t, s, "other", "x", 1)
			expect(t, s, "k", want, wantFence)
		})
	}
}

func TestStaleMessage(t *testing.T) {
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			if err := s.Write(t.Context(), "k", nil, 20); err != nil {
				t.Fatal(err)
			}
			err := s.Write(t.Context(), "k", nil, 10)
			if !errors.Is(err, fencing.ErrStaleFence) || !strings.Contains(err.Error(), `"k" with fence 10`) {
				t.Fatalf("got %v", err)
			}
			if name == "redis" && !strings.Contains(err.Error(), "stored fence is 20") {
				t.Fatalf("got %v", err)
			}
		})
	}
}

// Fences compare as integers over the whole int64 range, including where
// their decimal strings compare differently ("999" > "1000") and where
// float64 cannot tell them apart (above 2^53).
func TestWriteLargeFences(t *testing.T) {
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			if err := s.Write(ctx, "a", []byte("1000"), 1000); err != nil {
				t.Fatal(err)
			}
			if err := s.Write(ctx, "a", []byte("999"), 999); !errors.Is(err, fencing.ErrStaleFence) {
				t.Fatalf("999 after 1000: %v", err)
			}
			expect(t, s, "a", "1000", 1000)

			big := int64(1<<53 + 1)
			if err := s.Write(ctx, "b", []byte("big"), big); err != nil {
				t.Fatal(err)
			}
			if err := s.Write(ctx, "b", []byte("big-1"), big-1); !errors.Is(err, fencing.ErrStaleFence) {
				t.Fatalf("2^53 after 2^53+1: %v", err)
			}
			if err := s.Write(ctx, "b", []byte("max"), math.MaxInt64); err != nil {
				t.Fatal(err)
			}
			if err := s.Write(ctx, "b", []byte("max-1"), math.MaxInt64-1); !errors.Is(err, fencing.ErrStaleFence) {
				t.Fatalf("MaxInt64-1 after MaxInt64: %v", err)
			}
			expect(t, s, "b", "max", math.MaxInt64)
		})
	}
}

// Bad input is refused before any call: the stores below sit on a closed
// database and on an address where no Redis listens, so any call would
// fail with another error.
func TestInvalid(t *testing.T) {
	db := openDB(t)
	_ = db.Close()
	sqlStore, err := fencing.NewSQLStore(db, "t")
	if err != nil {
		t.Fatal(err)
	}
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
	defer dead.Close()
	redisStore, err := fencing.NewRedisStore(dead, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for name, s := range map[string]fencing.Store{"sql": sqlStore, "redis": redisStore} {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				id    string
				fence int64
			}{{"", 1}, {"k", 0}, {"k", -1}, {"k", math.MinInt64}, {"", 0}} {
				if err := s.Write(ctx, tc.id, []byte("v"), tc.fence); !errors.Is(err, fencing.ErrInvalid) {
					t.Errorf("Write(%q, %d) = %v, want ErrInvalid", tc.id, tc.fence, err)
				}
			}
			if _, _, err := s.Read(ctx, ""); !errors.Is(err, fencing.ErrInvalid) {
				t.Errorf("Read(\"\") = %v, want ErrInvalid", err)
			}
			// A valid write does reach the dead backend.
			if err := s.Write(ctx, "k", []byte("v"), 1); err == nil || errors.Is(err, fencing.ErrInvalid) {
				t.Errorf("valid write on a dead backend = %v", err)
			}
		})
	}
	if err := sqlStore.WriteTx(ctx, nil, "k", nil, 1); !errors.Is(err, fencing.ErrInvalid) {
		t.Errorf("WriteTx with nil tx = %v", err)
	}

	if _, err := fencing.NewSQLStore(nil, "t"); !errors.Is(err, fencing.ErrInvalid) {
		t.Errorf("NewSQLStore(nil) = %v", err)
	}
	for _, name := range []string{"", "1t", "a-b", `a"b`, "a b", "t;DROP", "é", strings.Repeat("t", fencing.MaxTableNameLen+1)} {
		if _, err := fencing.NewSQLStore(db, name); !errors.Is(err, fencing.ErrInvalid) {
			t.Errorf("NewSQLStore(%q) = %v, want ErrInvalid", name, err)
		}
	}
	for _, name := range []string{"t", "_", "T_1", strings.Repeat("t", fencing.MaxTableNameLen)} {
		if _, err := fencing.NewSQLStore(db, name); err != nil {
			t.Errorf("NewSQLStore(%q) = %v", name, err)
		}
	}
	if _, err := fencing.NewRedisStore(nil, ""); !errors.Is(err, fencing.ErrInvalid) {
		t.Errorf("NewRedisStore(nil) = %v", err)
	}
	if _, err := fencing.NewRedisStore((*redis.Client)(nil), ""); !errors.Is(err, fencing.ErrInvalid) {
		t.Errorf("NewRedisStore((*redis.Client)(nil)) = %v", err)
	}
}

// Writers with random fences race on one id. The stored fence never goes
// down, the value always belongs to the stored fence, a write is never
// lost to an older one, and the highest fence wins.
func TestConcurrentWrites(t *testing.T) {
	const writers, writes = 8, 40
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			value := func(fence int64, w int) []byte { return fmt.Appendf(nil, "%d/%d", fence, w) }
			check := func(v []byte, f int64) {
				if !bytes.HasPrefix(v, []byte(strconv.FormatInt(f, 10)+"/")) {
					t.Errorf("value %q stored with fence %d", v, f)
				}
			}

			stop := make(chan struct{})
			var watch sync.WaitGroup
			watch.Go(func() {
				var last int64
				for {
					select {
					case <-stop:
						return
					default:
					}
					v, f, err := s.Read(ctx, "k")
					if errors.Is(err, fencing.ErrNotFound) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					check(v, f)
					if f < last {
						t.Errorf("stored fence went down from %d to %d", last, f)
					}
					last = f
				}
			})

			var wg sync.WaitGroup
			maxes := make([]int64, writers)
			for w := range writers {
				wg.Go(func() {
					for range writes {
						f := 1 + rand.Int64N(1000)
						maxes[w] = max(maxes[w], f)
						werr := s.Write(ctx, "k", value(f, w), f)
						if werr != nil && !errors.Is(werr, fencing.ErrStaleFence) {
							t.Error(werr)
							return
						}
						_, got, err := s.Read(ctx, "k")
						if err != nil {
							t.Error(err)
							return
						}
						// Accepted: no older fence may overwrite it. Refused:
						// a higher fence was stored.
						if got < f || (werr != nil && got == f) {
							t.Errorf("wrote fence %d (%v), then read fence %d", f, werr, got)
						}
					}
				})
			}
			wg.Wait()
			close(stop)
			watch.Wait()

			v, f, err := s.Read(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			check(v, f)
			if want := slices.Max(maxes); f != want {
				t.Errorf("final fence %d, want the highest written, %d", f, want)
			}
		})
	}
}

func TestWriteTx(t *testing.T) {
	s, db := newSQLStore(t)
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, "CREATE TABLE log (entry TEXT)"); err != nil {
		t.Fatal(err)
	}
	write := func(value string, fence int64) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := s.WriteTx(ctx, tx, "k", []byte(value), fence); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO log VALUES (?)", value); err != nil {
			return err
		}
		return tx.Commit()
	}
	if err := write("a", 10); err != nil {
		t.Fatal(err)
	}
	if err := write("b", 10); err != nil {
		t.Fatal(err)
	}
	if err := write("c", 9); !errors.Is(err, fencing.ErrStaleFence) {
		t.Fatalf("older fence in a transaction: %v", err)
	}
	expect(t, s, "k", "b", 10)
	var entries []string
	rows, err := db.QueryContext(ctx, "SELECT entry FROM log ORDER BY rowid")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(entries, ","); got != "a,b" {
		t.Fatalf("log %q, want the entries of the accepted writes only, a,b", got)
	}
}

// The store keeps one hash per key, with nothing else in Redis.
func TestRedisLayout(t *testing.T) {
	s, c := newRedisStore(t)
	ctx := t.Context()
	if err := s.Write(ctx, "k", []byte("v"), 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, "k", []byte("old"), 41); !errors.Is(err, fencing.ErrStaleFence) {
		t.Fatal(err)
	}
	prefix, ok := strings.CutSuffix(s.Key("k"), ":k")
	if !ok || !strings.HasPrefix(prefix, "test:") {
		t.Fatalf("key %q", s.Key("k"))
	}
	keys, err := c.Keys(ctx, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != s.Key("k") {
		t.Fatalf("keys %q", keys)
	}
	h, err := c.HGetAll(ctx, s.Key("k")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h["value"] != "v" || h["fence"] != "42" {
		t.Fatalf("hash %v", h)
	}
	def, err := fencing.NewRedisStore(c, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := def.Key("k"); got != fencing.DefaultRedisPrefix+":k" {
		t.Fatalf("default key %q", got)
	}
}

// A flushed script cache (or a restarted server) costs nothing but a
// resend of the script.
func TestRedisScriptFlushed(t *testing.T) {
	s, c := newRedisStore(t)
	ctx := t.Context()
	if err := s.Write(ctx, "k", []byte("a"), 1); err != nil {
		t.Fatal(err)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, "k", []byte("b"), 2); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "k", "b", 2)
}

// A lease that ran out while its holder stalled cannot write after the
// next holder did, in either store.
func TestExpiredLease(t *testing.T) {
	c := redisClient(t)
	m, err := mutex.New(c, mutex.Config{Prefix: uniquePrefix(t), TTL: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sqlStore, _ := newSQLStore(t)
	redisStore, _ := newRedisStore(t)
	ctx := t.Context()

	a, err := m.Lock(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("lease A did not run out")
	}
	if !errors.Is(a.Err(), mutex.ErrNotHeld) {
		t.Fatalf("lease A: %v", a.Err())
	}
	b, err := m.Lock(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Unlock(ctx)
	if a.Fence() >= b.Fence() {
		t.Fatalf("fence of A %d, of B %d", a.Fence(), b.Fence())
	}
	for name, s := range map[string]fencing.Store{"sql": sqlStore, "redis": redisStore} {
		if err := s.Write(ctx, "job", []byte("B"), b.Fence()); err != nil {
			t.Fatalf("%s: B: %v", name, err)
		}
		if err := s.Write(ctx, "job", []byte("A"), a.Fence()); !errors.Is(err, fencing.ErrStaleFence) {
			t.Fatalf("%s: A after B: %v", name, err)
		}
		expect(t, s, "job", "B", b.Fence())
	}
}
