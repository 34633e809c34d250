package httpmw

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/distlock/distlock/internal/serialize"
	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
)

// MaxKeyLen is the longest key, in bytes, that Serialize accepts from a
// KeyFunc, namespace included. It is well below mutex.MaxKeyLen so that a
// client cannot make the middleware store large keys in Redis.
const MaxKeyLen = 256

// KeyFunc extracts the lock key of a request. An empty key, or an error
// wrapping ErrMissingKey, answers 400 "missing lock key"; a *ParseError
// answers 400 with "invalid " and its Source; any other error answers 400
// "invalid lock key". The key is validated after the KeyFunc returns, so a
// KeyFunc does not need to check it.
type KeyFunc func(*http.Request) (string, error)

// PathValue returns a KeyFunc taking the key from the path wildcard name of
// the route, as r.PathValue(name) reports it: "{id}" in an http.ServeMux
// pattern such as "POST /accounts/{id}", or in a chi route.
func PathValue(name string) KeyFunc {
	return func(r *http.Request) (string, error) {
		v := r.PathValue(name)
		if v == "" {
			return "", fmt.Errorf("%w: path value %q", ErrMissingKey, name)
		}
		return v, nil
	}
}

// Header returns a KeyFunc taking the key from the request header name. A
// header given more than once is invalid, so that a client cannot make two
// components of a system read different keys from one request.
func Header(name string) KeyFunc {
	return func(r *http.Request) (string, error) {
		vs := r.Header.Values(name)
		switch {
		case len(vs) == 0 || len(vs) == 1 && vs[0] == "":
			return "", fmt.Errorf("%w: header %q", ErrMissingKey, name)
		case len(vs) > 1:
			return "", fmt.Errorf("%w: header %q given %d times", ErrInvalidKey, name, len(vs))
		}
		return vs[0], nil
	}
}

// Query returns a KeyFunc taking the key from the URL query parameter name.
// A parameter given more than once is invalid.
func Query(name string) KeyFunc {
	return func(r *http.Request) (string, error) {
		vs := r.URL.Query()[name]
		switch {
		case len(vs) == 0 || len(vs) == 1 && vs[0] == "":
			return "", fmt.Errorf("%w: query parameter %q", ErrMissingKey, name)
		case len(vs) > 1:
			return "", fmt.Errorf("%w: query parameter %q given %d times", ErrInvalidKey, name, len(vs))
		}
		return vs[0], nil
	}
}

// Namespace returns a KeyFunc that prefixes the key of key with ns and a
// colon: Namespace("account", PathValue("id")) locks "account:42" for
// /accounts/42. Namespaces keep the keys of different resources apart when
// they share a Locker; give each resource a fixed namespace that is not a
// prefix of another one followed by a colon. Namespace of a nil KeyFunc is
// nil.
func Namespace(ns string, key KeyFunc) KeyFunc {
	if key == nil {
		return nil
	}
	return func(r *http.Request) (string, error) {
		k, err := key(r)
		if err != nil {
			return "", err
		}
		if k == "" {
			return "", fmt.Errorf("%w: in namespace %q", ErrMissingKey, ns)
		}
		return ns + ":" + k, nil
	}
}

// KeyedPathValue returns a KeyFunc that parses the path wildcard name with
// parse and locks the key that k gives the result, k.Key(v): the lock that
// k.Lock(ctx, v) takes. Values that parse to the same K lock the same
// resource, so with a parse built on strconv.ParseInt "/accounts/042" and
// "/accounts/42" wait for each other. The key carries k's namespace: do not
// wrap the KeyFunc in Namespace.
//
// A missing path value answers 400 "missing lock key". A value that is not
// a valid key (longer than MaxKeyLen bytes, not valid UTF-8, or holding
// control characters; parse never sees it), that parse refuses, or whose
// parsed K k refuses (an empty key string, a key longer than MaxKeyLen
// bytes with its namespace) answers 400 `invalid path value "<name>"`, and
// the error is a *ParseError.
//
// A nil parse, or a k that is nil or reports an error from Err, is a setup
// error: every request is answered 500 "lock misconfigured", and the error,
// wrapping mutex.ErrInvalid, goes to the WithErrorHook hook.
//
// Give Serialize the Locker that k was made with: code under the handler
// that locks the same value through k (k.WithLock) then joins the
// request's lease, where another Locker over the same Mutex would fail with
// mutex.ErrReentrant.
func KeyedPathValue[K comparable](k *keyed.Keyed[K], name string, parse func(string) (K, error)) KeyFunc {
	source := fmt.Sprintf("path value %q", name)
	var setup error
	switch {
	case k.Err() != nil:
		setup = fmt.Errorf("keyed %s: %w", source, k.Err())
	case parse == nil:
		setup = fmt.Errorf("%w: nil parse function for keyed %s", mutex.ErrInvalid, source)
	}
	if setup != nil {
		err := &serialize.SetupError{Err: setup}
		return func(*http.Request) (string, error) { return "", err }
	}
	raw := PathValue(name)
	return func(r *http.Request) (string, error) {
		v, err := raw(r)
		if err != nil {
			return "", err
		}
		if _, problem := serialize.CheckKey(v, MaxKeyLen); problem != "" {
			return "", &ParseError{Source: source, Err: errors.New(problem)}
		}
		parsed, err := parse(v)
		if err != nil {
			return "", &ParseError{Source: source, Err: err}
		}
		key, err := k.Key(parsed)
		if err == nil {
			if _, problem := serialize.CheckKey(key, MaxKeyLen); problem != "" {
				err = fmt.Errorf("lock key: %s", problem)
			}
		}
		if err != nil {
			return "", &ParseError{Source: source, Err: err}
		}
		return key, nil
	}
}

// validateKey checks a key extracted from a request before it reaches
// Redis. Its errors name the problem but never quote the key, which is
// untrusted input.
func validateKey(key string) error {
	missing, problem := serialize.CheckKey(key, MaxKeyLen)
	switch {
	case missing:
		return ErrMissingKey
	case problem != "":
		return fmt.Errorf("%w: %s", ErrInvalidKey, problem)
	}
	return nil
}
