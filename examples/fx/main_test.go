package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func checkOutput(t *testing.T, out string) {
	t.Helper()
	for _, want := range []string{
		"order:42: locked\n",
		"order:42: second worker: mutex: not obtained",
		"invoice:42: written (fence > 0: true)\n",
		"after stop: mutex: closed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestFxExample(t *testing.T) {
	srv := redistest.Shared(t)
	var out bytes.Buffer
	if err := run(t.Context(), srv.URL(), &out); err != nil {
		t.Fatal(err)
	}
	checkOutput(t, out.String())

	// Every lock is released: nothing stays behind in Redis.
	keys, err := srv.Client(t).Keys(t.Context(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("keys left in Redis: %q", keys)
	}
}

func TestFxExampleEmbedded(t *testing.T) {
	redisURL := "redis://" + miniredis.RunT(t).Addr()
	var out bytes.Buffer
	if err := run(t.Context(), redisURL, &out); err != nil {
		t.Fatal(err)
	}
	checkOutput(t, out.String())
}

func TestFxExampleBadURL(t *testing.T) {
	if err := run(t.Context(), "mysql://localhost", &bytes.Buffer{}); err == nil {
		t.Error("run succeeded with a URL redisurl cannot use")
	}
}
