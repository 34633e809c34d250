package redistest_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/redisurl"
)

func backendNames(bs []redistest.Backend) string {
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = b.Name
	}
	return strings.Join(names, ",")
}

func TestBackendsEnv(t *testing.T) {
	for _, tt := range []struct{ env, want string }{
		{"", "standalone,cluster,sentinel"},
		{"cluster", "cluster"},
		{" Sentinel , standalone,", "standalone,sentinel"},
		{"cluster,cluster", "cluster"},
	} {
		t.Setenv(redistest.BackendsEnv, tt.env)
		if got := backendNames(redistest.Backends(t)); got != tt.want {
			t.Errorf("%s=%q: backends %s, want %s", redistest.BackendsEnv, tt.env, got, tt.want)
		}
	}
}

// Each backend gives clients of its kind that see one another's keys,
// and Keys finds the keys of every primary.
func TestBackends(t *testing.T) {
	t.Setenv(redistest.BackendsEnv, "")
	kinds := map[string]string{
		"standalone": "*redis.Client",
		"cluster":    "*redis.ClusterClient",
		"sentinel":   "*redis.Client",
	}
	redistest.RunBackends(t, func(t *testing.T, b redistest.Backend) {
		ctx := t.Context()
		c := b.Client(t, func(o *redis.UniversalOptions) { o.ClientName = "TestBackends" })
		if kind := fmt.Sprintf("%T", c); kind != kinds[b.Name] {
			t.Fatalf("client of type %s, want %s", kind, kinds[b.Name])
		}
		const n = 30
		var want []string
		for i := range n {
			k := fmt.Sprintf("%s:{%d}", t.Name(), i)
			want = append(want, k)
			if err := c.Set(ctx, k, i, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		slices.Sort(want)
		if b.Name == "cluster" {
			slots := map[int]bool{}
			for _, k := range want {
				slots[redistest.Slot(k)] = true
			}
			if len(slots) < 2 {
				t.Fatalf("the keys fall in %d slot", len(slots))
			}
		}

		u, err := redisurl.Open(b.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		for _, other := range []redis.UniversalClient{b.Client(t), u} {
			got, err := redistest.Keys(ctx, other, t.Name()+":*")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("Keys = %q, want %q", got, want)
			}
		}
		if err := c.Del(ctx, want[0]).Err(); err != nil {
			t.Fatal(err)
		}
		got, err := redistest.Keys(ctx, c, t.Name()+":*")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want[1:]) {
			t.Fatalf("after DEL %s, Keys = %q", want[0], got)
		}
		for _, k := range want[1:] {
			c.Del(ctx, k)
		}
	})
}

// A server of the shared Sentinel deployment found down is started again
// by the next SharedSentinel, and a primary found down is replaced by its
// replica.
func TestSharedSentinelHeals(t *testing.T) {
	s := redistest.SharedSentinel(t)
	if s2 := redistest.SharedSentinel(t); s2 != s {
		t.Fatal("SharedSentinel returned two deployments")
	}
	s.Sentinels()[1].Kill(t)
	replica := s.Replica()
	replica.Kill(t)
	if redistest.SharedSentinel(t) != s {
		t.Fatal("SharedSentinel returned another deployment")
	}
	if s.Replica() != replica {
		t.Fatal("the primary changed")
	}
	primary := s.Primary()
	primary.Kill(t)
	redistest.SharedSentinel(t)
	if s.Primary() != replica || s.Replica() != primary {
		t.Fatalf("primary %s, replica %s after the primary %s was killed", s.Primary().Addr(), s.Replica().Addr(), primary.Addr())
	}
	c := s.FailoverClient(t)
	if err := c.Set(t.Context(), t.Name(), "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.Del(t.Context(), t.Name())
}
