package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// stdoutSpan and stdoutMetrics are the parts of the stdout exporters' JSON
// that the test checks.
type stdoutSpan struct {
	Name        string
	SpanContext struct{ SpanID string }
	Parent      struct{ SpanID string }
	Attributes  []struct{ Key string }
	Events      []struct{ Name string }
}

type stdoutMetrics struct {
	ScopeMetrics []struct {
		Scope   struct{ Name string }
		Metrics []struct{ Name string }
	}
}

// decode splits the output into the program's lines and the exported spans
// and metric names.
func decode(t *testing.T, out string) (lines string, spans map[string][]stdoutSpan, metrics map[string]bool) {
	t.Helper()
	i := strings.Index(out, "\n{")
	if i < 0 {
		t.Fatalf("no exported data in output:\n%s", out)
	}
	lines = out[:i+1]
	spans, metrics = map[string][]stdoutSpan{}, map[string]bool{}
	dec := json.NewDecoder(strings.NewReader(out[i+1:]))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding output: %v", err)
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(raw, &probe); err != nil {
			t.Fatal(err)
		}
		switch {
		case probe["SpanContext"] != nil:
			var s stdoutSpan
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatal(err)
			}
			spans[s.Name] = append(spans[s.Name], s)
		case probe["ScopeMetrics"] != nil:
			var m stdoutMetrics
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			for _, sm := range m.ScopeMetrics {
				for _, x := range sm.Metrics {
					metrics[sm.Scope.Name+" "+x.Name] = true
				}
			}
		}
	}
	return lines, spans, metrics
}

func TestOtelExample(t *testing.T) {
	redisURL := redistest.Shared(t).URL()
	var out bytes.Buffer
	if err := run(t.Context(), redisURL, &out, exportStdout); err != nil {
		t.Fatal(err)
	}
	lines, spans, metrics := decode(t, out.String())
	for _, want := range []string{
		"locked order:42", "order:42 is busy", "gave up waiting", "report:2026 was lost",
	} {
		if !strings.Contains(lines, want) {
			t.Errorf("output lacks %q:\n%s", want, lines)
		}
	}

	for _, name := range []string{
		"POST /orders/42/pay", "distlock.Lock", "distlock.TryLock",
		"distlock.Extend", "distlock.Unlock", "nightly-report",
	} {
		if len(spans[name]) == 0 {
			t.Fatalf("no %s span exported", name)
		}
	}
	req, job := spans["POST /orders/42/pay"][0], spans["nightly-report"][0]
	for _, name := range []string{"distlock.Lock", "distlock.Unlock"} {
		// One under the request, one under the job.
		parents := map[string]bool{}
		for _, s := range spans[name] {
			parents[s.Parent.SpanID] = true
		}
		if !parents[req.SpanContext.SpanID] || !parents[job.SpanContext.SpanID] {
			t.Errorf("%s spans are not children of the request and job spans", name)
		}
	}
	lostEvent := false
	for _, ev := range job.Events {
		lostEvent = lostEvent || ev.Name == "distlock.lease.lost"
	}
	if !lostEvent {
		t.Errorf("the job span has no distlock.lease.lost event: %+v", job.Events)
	}
	keyAttr := false
	for _, a := range spans["distlock.TryLock"][0].Attributes {
		keyAttr = keyAttr || a.Key == "distlock.lock.key"
	}
	if !keyAttr {
		t.Errorf("TryLock span lacks distlock.lock.key")
	}

	for _, name := range []string{
		"distlock.lock.wait.duration", "distlock.lock.hold.duration",
		"distlock.lock.acquisitions", "distlock.lock.held", "distlock.lock.lost",
	} {
		if !metrics["github.com/distlock/distlock/otellock "+name] {
			t.Errorf("metric %s not exported; got %v", name, metrics)
		}
	}
}

func TestOtelExampleEmbedded(t *testing.T) {
	redisURL := "redis://" + miniredis.RunT(t).Addr()
	var out bytes.Buffer
	if err := run(t.Context(), redisURL, &out, exportStdout); err != nil {
		t.Fatal(err)
	}
	_, spans, _ := decode(t, out.String())
	if len(spans["distlock.Lock"]) == 0 {
		t.Errorf("no distlock.Lock span exported:\n%s", out.String())
	}
}

func TestOtelExampleOTLP(t *testing.T) {
	var (
		mu    sync.Mutex
		paths = map[string]int{}
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		if len(body) > 0 {
			paths[r.URL.Path]++
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)

	redisURL := redistest.Shared(t).URL()
	var out bytes.Buffer
	if err := run(t.Context(), redisURL, &out, exportOTLP); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "{") {
		t.Errorf("OTLP mode printed exported data:\n%s", out.String())
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range []string{"/v1/traces", "/v1/metrics"} {
		if paths[p] == 0 {
			t.Errorf("the collector received nothing on %s; got %v", p, paths)
		}
	}
}
