package keyed_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
)

// tricky draws strings over an alphabet made of the separator, the escape
// character and the letters of its escapes, so that near-collisions such as
// "a:" / "a%3A" come up often.
func tricky(minLen, maxLen int) *rapid.Generator[string] {
	return rapid.StringOfN(rapid.SampledFrom([]rune{'a', ':', '%', '3', 'A', '2', '5', '{', '}', 'é', 0}), minLen, maxLen, -1)
}

// anyBytes draws strings of arbitrary bytes, valid UTF-8 or not.
func anyBytes(minLen, maxLen int) *rapid.Generator[string] {
	return rapid.Map(rapid.SliceOfN(rapid.Byte(), minLen, maxLen), func(b []byte) string { return string(b) })
}

func namespaces() *rapid.Generator[string] {
	return rapid.OneOf(tricky(1, 8), anyBytes(1, keyed.MaxNamespaceLen))
}

func keyStrings() *rapid.Generator[string] {
	return rapid.OneOf(tricky(1, 8), anyBytes(1, 64))
}

// TestKeyIsInjective checks that distinct (namespace, key) pairs never map
// to the same core key.
func TestKeyIsInjective(t *testing.T) {
	m := newMutex(t)
	rapid.Check(t, func(t *rapid.T) {
		ns1, k1 := namespaces().Draw(t, "ns1"), keyStrings().Draw(t, "k1")
		var ns2, k2 string
		// Derive the second pair from the first in the ways that collide
		// under a careless encoding, or draw it independently.
		switch rapid.IntRange(0, 2).Draw(t, "how") {
		case 0:
			// Move the boundary between namespace and key.
			joined := ns1 + ":" + k1
			i := rapid.SampledFrom(separators(joined)).Draw(t, "split")
			ns2, k2 = joined[:i], joined[i+1:]
			if len(ns2) > keyed.MaxNamespaceLen {
				t.Skip("namespace too long")
			}
		case 1:
			// Write one character of the namespace as its escape, or the
			// reverse.
			subs := [][2]string{{":", "%3A"}, {"%3A", ":"}, {"%", "%25"}, {"%25", "%"}}
			sub := rapid.SampledFrom(subs).Draw(t, "sub")
			if !strings.Contains(ns1, sub[0]) {
				ns1 = sub[0] + ns1
			}
			ns2, k2 = strings.Replace(ns1, sub[0], sub[1], 1), k1
			if len(ns1) > keyed.MaxNamespaceLen || len(ns2) > keyed.MaxNamespaceLen {
				t.Skip("namespace too long")
			}
		default:
			ns2, k2 = namespaces().Draw(t, "ns2"), keyStrings().Draw(t, "k2")
		}
		s1, err := keyed.New[string](m, ns1).Key(k1)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := keyed.New[string](m, ns2).Key(k2)
		if err != nil {
			t.Fatal(err)
		}
		if (ns1 == ns2 && k1 == k2) != (s1 == s2) {
			t.Fatalf("(%q, %q) -> %q and (%q, %q) -> %q", ns1, k1, s1, ns2, k2, s2)
		}
		// The core key starts with the namespace and has no ':' before the
		// separator, so it can be split back.
		i := strings.IndexByte(s1, ':')
		if s1[i+1:] != k1 {
			t.Fatalf("key string of %q is %q, want %q", s1, s1[i+1:], k1)
		}
	})
}

// separators returns the positions of ':' in s that leave a non-empty
// string on both sides.
func separators(s string) []int {
	var at []int
	for i := 1; i < len(s)-1; i++ {
		if s[i] == ':' {
			at = append(at, i)
		}
	}
	return at
}

// TestTypedKeysAreInjective checks the default encodings: distinct values
// of one type have distinct keys.
func TestTypedKeysAreInjective(t *testing.T) {
	m := newMutex(t)
	ints := keyed.New[int64](m, "i")
	uints := keyed.New[uint16](m, "u")
	ids := keyed.New[uuid.UUID](m, "id")
	rapid.Check(t, func(t *rapid.T) {
		a, b := rapid.Int64().Draw(t, "a"), rapid.Int64().Draw(t, "b")
		checkInjective(t, ints, a, b)
		c, d := rapid.Uint16().Draw(t, "c"), rapid.Uint16().Draw(t, "d")
		checkInjective(t, uints, c, d)
		var e, f uuid.UUID
		copy(e[:], rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "e"))
		copy(f[:], rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "f"))
		if rapid.Bool().Draw(t, "same") {
			f = e
		}
		checkInjective(t, ids, e, f)
	})
}

func checkInjective[K comparable](t *rapid.T, k *keyed.Keyed[K], a, b K) {
	sa, err := k.Key(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := k.Key(b)
	if err != nil {
		t.Fatal(err)
	}
	if (a == b) != (sa == sb) {
		t.Fatalf("%v -> %q, %v -> %q", a, sa, b, sb)
	}
}

// TestDistinctPairsLockIndependently holds the locks of two distinct
// (namespace, key) pairs at once on a real server, and checks that the
// same pair excludes itself.
func TestDistinctPairsLockIndependently(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := newMutexOn(t, backend.Client(t))
		ctx := t.Context()
		rapid.Check(t, func(t *rapid.T) {
			ns1, k1 := tricky(1, 6).Draw(t, "ns1"), tricky(1, 6).Draw(t, "k1")
			joined := ns1 + ":" + k1
			i := rapid.SampledFrom(separators(joined)).Draw(t, "split")
			ns2, k2 := joined[:i], joined[i+1:]
			l1, err := keyed.New[string](m, ns1).TryLock(ctx, k1)
			if err != nil {
				t.Fatal(err)
			}
			defer l1.Unlock(ctx)
			l2, err := keyed.New[string](m, ns2).TryLock(ctx, k2)
			same := ns1 == ns2 && k1 == k2
			switch {
			case same && err == nil:
				l2.Unlock(ctx)
				t.Fatalf("(%q, %q) locked twice", ns1, k1)
			case same && !isNotObtained(err):
				t.Fatal(err)
			case !same && err != nil:
				t.Fatalf("(%q, %q) blocks (%q, %q): %v", ns1, k1, ns2, k2, err)
			case !same:
				if err := l2.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
			}
		})
	})
}

// TestLockManyIsOrderIndependent checks that every permutation of a
// multiset of keys reaches the Locker as the same sorted set.
func TestLockManyIsOrderIndependent(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := newMutexOn(t, backend.Client(t))
		ctx := t.Context()
		rapid.Check(t, func(t *rapid.T) {
			rec := &recorder{Locker: m}
			k := keyed.New[string](rec, "p")
			keys := rapid.SliceOfN(tricky(1, 3), 1, 8).Draw(t, "keys")
			perm := rapid.Permutation(append(keys, keys[0])).Draw(t, "perm")

			l, err := k.TryLockMany(ctx, keys...)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			l, err = k.TryLockMany(ctx, perm...)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}

			calls := rec.Calls()
			if len(calls) != 2 {
				t.Fatalf("%d calls, want 2", len(calls))
			}
			got := calls[0].keys
			if !slices.Equal(got, calls[1].keys) {
				t.Fatalf("%q and %q lock %q and %q", keys, perm, got, calls[1].keys)
			}
			if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
				t.Fatalf("keys %q are not sorted and unique", got)
			}
			want := map[string]bool{}
			for _, s := range keys {
				want["p:"+s] = true
			}
			if len(want) != len(got) {
				t.Fatalf("%q locked as %q", keys, got)
			}
			for _, s := range got {
				if !want[s] {
					t.Fatalf("%q locked as %q", keys, got)
				}
			}
		})
	})
}

func isNotObtained(err error) bool { return errors.Is(err, mutex.ErrNotObtained) }
