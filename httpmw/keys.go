package httpmw

import (
	"fmt"
	"net/http"

	"github.com/distlock/distlock/internal/serialize"
)

// MaxKeyLen is the longest key, in bytes, that Serialize accepts from a
// KeyFunc, namespace included. It is well below mutex.MaxKeyLen so that a
// client cannot make the middleware store large keys in Redis.
const MaxKeyLen = 256

// KeyFunc extracts the lock key of a request. An empty key, or an error
// wrapping ErrMissingKey, answers 400 "missing lock key"; any other error
// answers 400 "invalid lock key". The key is validated after the KeyFunc
// returns, so a KeyFunc does not need to check it.
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
