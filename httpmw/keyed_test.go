package httpmw_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/httpmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
)

// parseAccount parses a positive decimal account number; leading zeros
// are allowed, so "042" and "42" are the same account.
func parseAccount(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, fmt.Errorf("account %d is not positive", n)
	}
	return n, nil
}

// TestKeyedPathValueLocksOneAccount checks that two spellings of one
// account lock one key, the one the Keyed locks, and that a handler locking
// the account through the Keyed joins the request's lease.
func TestKeyedPathValueLocksOneAccount(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		accounts := keyed.New[int64](m, "account")
		g := newGate()
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			lease := httpmw.LeaseFrom(r.Context())
			id, err := parseAccount(r.PathValue("id"))
			if err == nil {
				// Locking the account again through the Keyed joins the
				// request's lease instead of waiting for it.
				err = accounts.WithLock(r.Context(), id, func(ctx context.Context) error {
					if mutex.LeaseFromContext(ctx) != lease {
						return errors.New("did not join the request's lease")
					}
					return nil
				})
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			g.ServeHTTP(w, r)
		})
		mux := http.NewServeMux()
		mux.Handle("POST /accounts/{id}", httpmw.Serialize(m, httpmw.KeyedPathValue(accounts, "id", parseAccount))(h))
		web := serve(t, mux)

		first := async(t, "POST", web.URL+"/accounts/042")
		require.Equal(t, "042", recv(t, g.started, "first handler"))
		st, err := accounts.Check(t.Context(), 42)
		require.NoError(t, err)
		assert.Equal(t, mutex.Locked, st, "the request holds the Keyed's key")

		busy := do(t, "POST", web.URL+"/accounts/42", nil)
		assert.Equal(t, http.StatusConflict, busy.status, "/accounts/42 is /accounts/042")
		assert.Equal(t, "resource busy", busy.body)

		other := async(t, "POST", web.URL+"/accounts/43")
		require.Equal(t, "43", recv(t, g.started, "another account"))
		close(g.release)
		assert.Equal(t, "done 042", recv(t, first, "first answer").body)
		assert.Equal(t, "done 43", recv(t, other, "other answer").body)
	})
}

func TestKeyedPathValueBadValues(t *testing.T) {
	m := newMutex(t, redistest.Shared(t), mutex.Config{})
	accounts := keyed.New[int64](m, "account")
	var parsed atomic.Int32
	parse := func(s string) (int64, error) {
		parsed.Add(1)
		return parseAccount(s)
	}
	names := keyed.New[string](m, strings.Repeat("n", keyed.MaxNamespaceLen))
	var log errLog
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler ran") })
	mux := http.NewServeMux()
	mux.Handle("POST /accounts/{id}", httpmw.Serialize(m, httpmw.KeyedPathValue(accounts, "id", parse), log.hook())(h))
	mux.Handle("POST /names/{name}", httpmw.Serialize(m, httpmw.KeyedPathValue(names, "name",
		func(s string) (string, error) { return strings.TrimSpace(s), nil }), log.hook())(h))
	mux.Handle("POST /nowhere", httpmw.Serialize(m, httpmw.KeyedPathValue(accounts, "id", parse), log.hook())(h))
	web := serve(t, mux)

	for _, tc := range []struct {
		path    string
		parsed  bool   // parse saw the value
		problem string // in the error passed to the hook
	}{
		{"/accounts/abc", true, `strconv.ParseInt: parsing "abc": invalid syntax`},
		{"/accounts/-7", true, "account -7 is not positive"},
		{"/accounts/99999999999999999999", true, "value out of range"},
		{"/accounts/4%012", false, "control character at byte 1"},
		{"/accounts/" + strings.Repeat("1", httpmw.MaxKeyLen+1), false, "257 bytes, longer than 256"},
		// The Keyed refuses an empty key string.
		{"/names/%20", false, "empty key string"},
		// The raw value fits, but not with the namespace.
		{"/names/" + strings.Repeat("x", httpmw.MaxKeyLen-10), false, "lock key: 311 bytes, longer than 256"},
	} {
		parsed.Store(0)
		res := do(t, "POST", web.URL+tc.path, nil)
		assert.Equal(t, http.StatusBadRequest, res.status, tc.path)
		source := `path value "id"`
		if strings.HasPrefix(tc.path, "/names/") {
			source = `path value "name"`
		}
		assert.Equal(t, "invalid "+source, res.body, tc.path)
		assert.Equal(t, tc.parsed, parsed.Load() == 1, tc.path)
		hooked := log.take()
		require.Len(t, hooked, 1, tc.path)
		var pe *httpmw.ParseError
		require.ErrorAs(t, hooked[0], &pe, tc.path)
		assert.Equal(t, source, pe.Source)
		assert.ErrorIs(t, hooked[0], httpmw.ErrInvalidKey, tc.path)
		assert.ErrorContains(t, hooked[0], tc.problem, tc.path)
		assert.True(t, strings.HasPrefix(hooked[0].Error(), "httpmw: invalid lock key: "+source+": "), "%v", hooked[0])
	}

	// A route without the wildcard.
	res := do(t, "POST", web.URL+"/nowhere", nil)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Equal(t, "missing lock key", res.body)
	hooked := log.take()
	require.Len(t, hooked, 1)
	assert.ErrorIs(t, hooked[0], httpmw.ErrMissingKey)
}

func TestKeyedPathValueSetupErrors(t *testing.T) {
	m := newMutex(t, redistest.Shared(t), mutex.Config{})
	var log errLog
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler ran") })
	for name, key := range map[string]httpmw.KeyFunc{
		"nil Keyed":    httpmw.KeyedPathValue[int64](nil, "id", parseAccount),
		"bad Keyed":    httpmw.KeyedPathValue(keyed.New[int64](m, ""), "id", parseAccount),
		"zero Keyed":   httpmw.KeyedPathValue(&keyed.Keyed[int64]{}, "id", parseAccount),
		"nil parse":    httpmw.KeyedPathValue(keyed.New[int64](m, "account"), "id", nil),
		"in Namespace": httpmw.Namespace("ns", httpmw.KeyedPathValue[int64](nil, "id", parseAccount)),
		"no Locker":    httpmw.KeyedPathValue(keyed.New[int64](nil, "account"), "id", parseAccount),
	} {
		mux := http.NewServeMux()
		mux.Handle("POST /accounts/{id}", httpmw.Serialize(m, key, log.hook())(h))
		web := serve(t, mux)
		res := do(t, "POST", web.URL+"/accounts/42", nil)
		assert.Equal(t, http.StatusInternalServerError, res.status, name)
		assert.Equal(t, "lock misconfigured", res.body, name)
		hooked := log.take()
		require.Len(t, hooked, 1, name)
		assert.ErrorIs(t, hooked[0], mutex.ErrInvalid, name)
		assert.NotErrorIs(t, hooked[0], httpmw.ErrInvalidKey, name)
	}
}

func TestParseErrorWithoutCause(t *testing.T) {
	err := &httpmw.ParseError{Source: `header "X-Account"`}
	assert.EqualError(t, err, `httpmw: invalid lock key: header "X-Account"`)
	assert.ErrorIs(t, err, httpmw.ErrInvalidKey)
}
