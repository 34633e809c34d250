package mutex

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckServerInfo(t *testing.T) {
	for _, c := range []struct {
		name, info string
		unsafe     []string // parts of the error text; none for a safe server
	}{
		{"safe", "redis_version:7.0.15\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n", nil},
		{"no limit", "redis_version:7.2.4\r\nmaxmemory:0\r\nmaxmemory_policy:allkeys-lru\r\n", nil},
		{"noeviction with limit", "redis_version:6.2.0\r\nmaxmemory:1048576\r\nmaxmemory_policy:noeviction\r\n", nil},
		{"allkeys", "redis_version:7.0.15\r\nmaxmemory:1048576\r\nmaxmemory_policy:allkeys-lru\r\n",
			[]string{"maxmemory-policy allkeys-lru with maxmemory 1048576 can evict held locks"}},
		{"volatile", "redis_version:7.0.15\r\nmaxmemory:1048576\r\nmaxmemory_policy:volatile-ttl\r\n",
			[]string{"maxmemory-policy volatile-ttl"}},
		{"old", "redis_version:6.0.9\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n",
			[]string{`redis_version "6.0.9", need 6.2 or later`}},
		{"ten", "redis_version:10.0.0\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n", nil},
		{"unknown version", "maxmemory:0\r\n", []string{`redis_version "", need 6.2`}},
		{"old and evicting", "redis_version:5.0.7\r\nmaxmemory:10\r\nmaxmemory_policy:allkeys-random\r\n",
			[]string{"need 6.2", "allkeys-random"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkServerInfo("h:1", c.info)
			if len(c.unsafe) == 0 {
				if err != nil {
					t.Fatalf("safe server reported: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrUnsafeServer) {
				t.Fatalf("want ErrUnsafeServer, got %v", err)
			}
			for _, part := range c.unsafe {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not say %q", err, part)
				}
			}
			if n := strings.Count(err.Error(), "mutex: unsafe server"); n != len(c.unsafe) {
				t.Errorf("error %q: prefix %d times, want once per problem", err, n)
			}
		})
	}
}
