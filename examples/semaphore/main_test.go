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

func check(t *testing.T, redisURL string) {
	t.Helper()
	var out bytes.Buffer
	if err := run(t.Context(), redisURL, &out); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("made %d calls", replicas*workers*calls)
	if !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("at most %d calls at once", limit)) {
		t.Errorf("the limit was not reached, or exceeded:\n%s", out.String())
	}
}

func TestSemaphore(t *testing.T) { check(t, redistest.Shared(t).URL()) }

func TestSemaphoreEmbedded(t *testing.T) { check(t, "redis://"+miniredis.RunT(t).Addr()) }
