package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func checkOutput(t *testing.T, out string) {
	t.Helper()
	want := initialBalance + workers*rounds
	for user := 1; user <= users; user++ {
		line := fmt.Sprintf("user %d (lock %q): balance %d\n", user, fmt.Sprintf("user:%d", user), want)
		if !strings.Contains(out, line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
	total := fmt.Sprintf("total %d, expected %d\n", users*want, users*want)
	if !strings.Contains(out, total) {
		t.Errorf("output lacks %q:\n%s", total, out)
	}
}

func TestKeyedExample(t *testing.T) {
	srv := redistest.Shared(t)
	redisURL := srv.URL()
	var out bytes.Buffer
	if err := run(t.Context(), redisURL, &out); err != nil {
		t.Fatal(err)
	}
	checkOutput(t, out.String())

	// Nothing stays behind in Redis: the balances are deleted and every
	// lock is released.
	keys, err := srv.Client(t).Keys(t.Context(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("keys left in Redis: %q", keys)
	}
}

func TestKeyedExampleEmbedded(t *testing.T) {
	redisURL := "redis://" + miniredis.RunT(t).Addr()
	var out bytes.Buffer
	if err := run(t.Context(), redisURL, &out); err != nil {
		t.Fatal(err)
	}
	checkOutput(t, out.String())
}
