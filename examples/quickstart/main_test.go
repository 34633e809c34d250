package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	redisURL := redistest.Shared(t).URL()
	if err := run(t.Context(), redisURL, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"locked [report:2026]", "second attempt: mutex: not obtained", "extended", "key is now available"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestQuickstartEmbedded(t *testing.T) {
	var out bytes.Buffer
	redisURL := "redis://" + miniredis.RunT(t).Addr()
	if err := run(t.Context(), redisURL, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "key is now available") {
		t.Errorf("unexpected output:\n%s", out.String())
	}
}
