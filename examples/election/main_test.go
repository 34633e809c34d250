package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// check runs the example: each of the three replicas leads in turn, runs
// the job, and stops.
func check(t *testing.T, redisURL string) {
	t.Helper()
	var out bytes.Buffer
	if err := run(t.Context(), redisURL, &out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"replica-1 stops", "replica-2 stops", "replica-3 stops"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(out.String(), "ran the job"); n != replicas*runs {
		t.Errorf("the job ran %d times, want %d", n, replicas*runs)
	}
}

func TestElection(t *testing.T) { check(t, redistest.Shared(t).URL()) }

func TestElectionEmbedded(t *testing.T) { check(t, "redis://"+miniredis.RunT(t).Addr()) }
