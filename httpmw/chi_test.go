package httpmw_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"

	"github.com/distlock/distlock/httpmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

func TestChi(t *testing.T) {
	m := newMutex(t, redistest.Shared(t), mutex.Config{})
	lease, err := m.TryLock(t.Context(), "order:busy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lease.Unlock(context.Background()) })

	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, httpmw.LeaseFrom(r.Context()).Keys()[0])
	})
	chiKey := httpmw.KeyFunc(func(r *http.Request) (string, error) { return chi.URLParam(r, "id"), nil })

	r := chi.NewRouter()
	// Inline middleware runs after routing: PathValue sees chi's wildcards.
	r.With(httpmw.Serialize(m, httpmw.Namespace("account", httpmw.PathValue("id")))).Post("/accounts/{id}", echo)
	r.With(httpmw.Serialize(m, httpmw.Namespace("account", chiKey))).Post("/v2/accounts/{id}", echo)
	// A sub-router's middleware sees the wildcards of the mount pattern.
	r.Route("/orders/{id}", func(r chi.Router) {
		r.Use(httpmw.Serialize(m, httpmw.Namespace("order", chiKey)))
		r.Post("/", echo)
		r.Post("/items", echo)
	})
	r.Route("/docs/{id}", func(r chi.Router) {
		r.Use(httpmw.Serialize(m, httpmw.Namespace("doc", httpmw.PathValue("id"))))
		r.Post("/", echo)
	})
	web := serve(t, r)

	for path, want := range map[string]string{
		"/accounts/a1":     "account:a1",
		"/v2/accounts/a2":  "account:a2",
		"/orders/o1/":      "order:o1",
		"/orders/o1/items": "order:o1",
		"/docs/d1/":        "doc:d1",
	} {
		res := do(t, "POST", web.URL+path, nil)
		assert.Equal(t, http.StatusOK, res.status, path)
		assert.Equal(t, want, res.body, path)
	}
	assert.Equal(t, http.StatusConflict, do(t, "POST", web.URL+"/orders/busy/items", nil).status)
	assert.Equal(t, http.StatusBadRequest, do(t, "POST", web.URL+"/accounts/%00", nil).status)

	// Middleware of the top router runs before routing: no wildcard yet.
	top := chi.NewRouter()
	top.Use(httpmw.Serialize(m, httpmw.PathValue("id")))
	top.Post("/accounts/{id}", echo)
	res := do(t, "POST", serve(t, top).URL+"/accounts/a1", nil)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Equal(t, "missing lock key", res.body)
}
