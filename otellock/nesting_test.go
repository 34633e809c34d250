package otellock_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/httpmw"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/otellock"
)

func TestNestsUnderHTTPRequestSpan(t *testing.T) {
	h := newHarness(t, 0)
	l := middleware.Chain(h.m, otellock.Middleware(otellock.WithTracerProvider(h.tp), otellock.WithMeterProvider(h.mp)))
	tracer := h.tp.Tracer("test")

	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, span := tracer.Start(r.Context(), "handler")
		span.End()
		w.WriteHeader(http.StatusNoContent)
	})
	serialized := httpmw.Serialize(l, httpmw.Header("X-Account"))(app)
	// Stands for a tracing HTTP server middleware such as otelhttp.
	server := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tracer.Start(r.Context(), "POST /deposit")
		defer span.End()
		serialized.ServeHTTP(w, r.WithContext(ctx))
	})

	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/deposit", nil)
	req.Header.Set("X-Account", key(t, "acct"))
	rec := httptest.NewRecorder()
	server.ServeHTTP(rec, req)
	require.Equal(t, http.StatusNoContent, rec.Code)

	request := h.one(t, "POST /deposit")
	rid := request.SpanContext().SpanID()
	acquire := h.one(t, "distlock.TryLock")
	assert.Equal(t, rid, acquire.Parent().SpanID(), "the lock span is a child of the request span")
	handler := h.one(t, "handler")
	assert.Equal(t, rid, handler.Parent().SpanID())
	assert.False(t, handler.StartTime().Before(acquire.EndTime()), "the handler runs after the lock is obtained")
	unlock := h.one(t, "distlock.Unlock")
	assert.Equal(t, request.SpanContext().TraceID(), unlock.SpanContext().TraceID(), "the release is in the request's trace")
	assert.False(t, unlock.StartTime().Before(handler.EndTime()), "the release follows the handler")
}
