package lockcore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/lockcore"
	"github.com/distlock/distlock/mutex"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain":    "plain",
		"a:b":      "a%3Ab",
		"{tag}":    "%7Btag%7D",
		"50%":      "50%25",
		"é":        "%C3%A9",
		"sp ace\n": "sp%20ace%0A",
	} {
		if got := lockcore.Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := lockcore.RedisKey("p", "a:b"); got != "p:{a%3Ab}" {
		t.Errorf("RedisKey = %q", got)
	}
}

func TestSlot(t *testing.T) {
	// Known slots of a Redis Cluster (CLUSTER KEYSLOT).
	for key, want := range map[string]int{"a": 15495, "b": 3300, "foo": 12182, "123456789": 12739} {
		if got := lockcore.Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestChecks(t *testing.T) {
	if p, err := lockcore.CheckPrefix("", "def"); err != nil || p != "def" {
		t.Errorf("CheckPrefix of empty: %q, %v", p, err)
	}
	for _, p := range []string{"a{", string(make([]byte, mutex.MaxPrefixLen+1))} {
		if _, err := lockcore.CheckPrefix(p, "def"); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("CheckPrefix(%.10q): %v", p, err)
		}
	}
	for ttl, want := range map[time.Duration]time.Duration{0: time.Second, 1500 * time.Microsecond * 10: 15 * time.Millisecond} {
		if got, err := lockcore.CheckTTL(ttl, time.Second); err != nil || got != want {
			t.Errorf("CheckTTL(%v) = %v, %v; want %v", ttl, got, err, want)
		}
	}
	var c *redis.Client
	if !lockcore.IsNil(c) || !lockcore.IsNil(nil) || lockcore.IsNil(context.Background()) {
		t.Error("IsNil")
	}
}
