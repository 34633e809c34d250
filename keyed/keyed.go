package keyed

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/distlock/distlock/mutex"
	"github.com/google/uuid"
)

// MaxNamespaceLen is the longest namespace, in bytes, that New accepts.
const MaxNamespaceLen = 64

// Keyed locks resources identified by values of type K in one namespace of a
// mutex.Locker. It is safe for concurrent use. A Keyed is made by New; its
// zero value reports an error from every method.
type Keyed[K comparable] struct {
	locker    mutex.Locker
	namespace string
	prefix    string // the escaped namespace followed by ':'
	encode    func(K) (string, error)
	err       error
}

// Option configures a Keyed.
type Option[K comparable] interface {
	apply(*options[K])
}

type options[K comparable] struct {
	keyFunc    func(K) string
	keyFuncSet bool
}

type keyFuncOption[K comparable] func(K) string

func (f keyFuncOption[K]) apply(o *options[K]) {
	o.keyFunc = f
	o.keyFuncSet = true
}

// WithKeyFunc sets the function that turns a K into its key string,
// replacing the default encoding. It must give distinct strings for values
// that should be distinct locks, and a non-empty string for every value that
// is locked. A nil f makes New record an error.
func WithKeyFunc[K comparable](f func(K) string) Option[K] {
	return keyFuncOption[K](f)
}

// New returns a Keyed that locks the values of K in namespace through l.
//
// New makes no Redis call and never fails outright: a nil l, a namespace
// that is empty or longer than MaxNamespaceLen bytes, a nil option or key
// function, and a K with no default encoding (see the package documentation)
// and no WithKeyFunc are recorded, reported by Err and returned by every
// method, wrapping mutex.ErrInvalid.
func New[K comparable](l mutex.Locker, namespace string, opts ...Option[K]) *Keyed[K] {
	k := &Keyed[K]{
		locker:    l,
		namespace: namespace,
		prefix:    escapeNamespace(namespace) + ":",
	}
	k.err = k.configure(opts)
	return k
}

func (k *Keyed[K]) configure(opts []Option[K]) error {
	if isNilLocker(k.locker) {
		return invalidf("nil Locker")
	}
	if k.namespace == "" {
		return invalidf("empty namespace")
	}
	if len(k.namespace) > MaxNamespaceLen {
		return invalidf("namespace of %d bytes, longer than %d", len(k.namespace), MaxNamespaceLen)
	}
	var o options[K]
	for _, opt := range opts {
		if opt == nil {
			return invalidf("nil Option")
		}
		opt.apply(&o)
	}
	if o.keyFuncSet {
		if o.keyFunc == nil {
			return invalidf("nil key function")
		}
		f := o.keyFunc
		k.encode = func(key K) (string, error) { return f(key), nil }
		return nil
	}
	enc, err := defaultEncoder[K]()
	if err != nil {
		return err
	}
	k.encode = enc
	return nil
}

func isNilLocker(l mutex.Locker) bool {
	if l == nil {
		return true
	}
	v := reflect.ValueOf(l)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Chan, reflect.Slice:
		return v.IsNil()
	}
	return false
}

var (
	stringerType = reflect.TypeFor[fmt.Stringer]()
	uuidType     = reflect.TypeFor[uuid.UUID]()
)

// defaultEncoder returns the key encoding of K, in the precedence order the
// package documentation gives.
func defaultEncoder[K comparable]() (func(K) (string, error), error) {
	t := reflect.TypeFor[K]()
	switch t.Kind() {
	case reflect.String:
		return func(key K) (string, error) {
			return reflect.ValueOf(key).String(), nil
		}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(key K) (string, error) {
			return strconv.FormatInt(reflect.ValueOf(key).Int(), 10), nil
		}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return func(key K) (string, error) {
			return strconv.FormatUint(reflect.ValueOf(key).Uint(), 10), nil
		}, nil
	}
	if t == uuidType {
		return func(key K) (string, error) {
			return any(key).(uuid.UUID).String(), nil
		}, nil
	}
	if t.Implements(stringerType) {
		return func(key K) (string, error) {
			// A nil pointer or interface has no String to call.
			v := reflect.ValueOf(any(key))
			if !v.IsValid() || (v.Kind() == reflect.Pointer && v.IsNil()) {
				return "", invalidf("nil %v key", t)
			}
			return any(key).(fmt.Stringer).String(), nil
		}, nil
	}
	return nil, invalidf("no default key encoding for %v: use WithKeyFunc", t)
}

// escapeNamespace writes '%' as "%25" and ':' as "%3A", so that the escaped
// namespace contains no ':' and the first ':' of a core key ends it.
func escapeNamespace(ns string) string {
	if !strings.ContainsAny(ns, "%:") {
		return ns
	}
	var b strings.Builder
	b.Grow(len(ns) + 8)
	for i := 0; i < len(ns); i++ {
		switch c := ns[i]; c {
		case '%':
			b.WriteString("%25")
		case ':':
			b.WriteString("%3A")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// invalidf returns an error wrapping mutex.ErrInvalid, with the problem
// described by format and args after its text.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{mutex.ErrInvalid}, args...)...)
}

var errNotNew = invalidf("Keyed not made by New")

// Err returns the configuration error recorded by New, or nil if the Keyed
// is ready to use. Every method returns this error while it is not nil.
func (k *Keyed[K]) Err() error {
	if k == nil || (k.err == nil && k.encode == nil) {
		return errNotNew
	}
	return k.err
}

// Namespace returns the namespace given to New.
func (k *Keyed[K]) Namespace() string {
	if k == nil {
		return ""
	}
	return k.namespace
}

// Key returns the core key that locks key: the escaped namespace, ':', and
// the key string of key. It fails with an error wrapping mutex.ErrInvalid
// if the Keyed is not usable (see Err), if the key string is empty, or if
// the core key is longer than mutex.MaxKeyLen bytes.
func (k *Keyed[K]) Key(key K) (string, error) {
	if err := k.Err(); err != nil {
		return "", err
	}
	s, err := k.encode(key)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", invalidf("empty key string for %v in namespace %q", key, k.namespace)
	}
	if n := len(k.prefix) + len(s); n > mutex.MaxKeyLen {
		return "", invalidf("key of %d bytes in namespace %q (%d bytes with the namespace), longer than %d",
			len(s), k.namespace, n, mutex.MaxKeyLen)
	}
	return k.prefix + s, nil
}

// keys returns the core keys of keys, without duplicates and sorted, so that
// every permutation of the same set locks the same keys in the same order.
func (k *Keyed[K]) keys(keys []K) ([]string, error) {
	if err := k.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, invalidf("no keys")
	}
	out := make([]string, 0, len(keys))
	for _, key := range keys {
		s, err := k.Key(key)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Lock waits until key is held by a new lease, or ctx ends. Its errors are
// those of Key and of the Locker's Lock.
func (k *Keyed[K]) Lock(ctx context.Context, key K) (mutex.Lease, error) {
	s, err := k.Key(key)
	if err != nil {
		return nil, err
	}
	return k.locker.Lock(ctx, s)
}

// TryLock makes one attempt to hold key. Its errors are those of Key and of
// the Locker's TryLock: mutex.ErrNotObtained when another owner holds key.
func (k *Keyed[K]) TryLock(ctx context.Context, key K) (mutex.Lease, error) {
	s, err := k.Key(key)
	if err != nil {
		return nil, err
	}
	return k.locker.TryLock(ctx, s)
}

// LockMany waits until every one of keys is held by one new lease, or ctx
// ends; it holds all of them or none. Repeated keys are locked once, and the
// order of keys does not matter: LockMany(ctx, a, b) and LockMany(ctx, b, a)
// lock the same core keys, in the same order, with one call to the Locker.
// It fails with an error wrapping mutex.ErrInvalid for no keys or a bad key;
// its other errors are those of the Locker's Lock.
func (k *Keyed[K]) LockMany(ctx context.Context, keys ...K) (mutex.Lease, error) {
	ss, err := k.keys(keys)
	if err != nil {
		return nil, err
	}
	return k.locker.Lock(ctx, ss...)
}

// TryLockMany makes one attempt to hold every one of keys, deduplicated and
// ordered as by LockMany. Its errors are those of LockMany, and
// mutex.ErrNotObtained when another owner holds one of the keys.
func (k *Keyed[K]) TryLockMany(ctx context.Context, keys ...K) (mutex.Lease, error) {
	ss, err := k.keys(keys)
	if err != nil {
		return nil, err
	}
	return k.locker.TryLock(ctx, ss...)
}

// Check reports whether key is held: mutex.Available or mutex.Locked. Its
// errors are those of Key and of the Locker's Check.
func (k *Keyed[K]) Check(ctx context.Context, key K) (mutex.Status, error) {
	s, err := k.Key(key)
	if err != nil {
		return mutex.Available, err
	}
	return k.locker.Check(ctx, s)
}

// WithLock runs fn while holding key, through mutex.WithLock: the lease is
// extended while fn runs, fn's context records the lease and is cancelled
// if the lease is lost, and the key is unlocked when fn returns or panics.
// Under a context that already holds key through the same Locker, fn joins
// the held lease. It returns fn's error joined with any unlock error, the
// errors of Key, or those of mutex.WithLock.
func (k *Keyed[K]) WithLock(ctx context.Context, key K, fn func(ctx context.Context) error) error {
	s, err := k.Key(key)
	if err != nil {
		return err
	}
	return mutex.WithLock(ctx, k.locker, s, fn)
}

// WithLockMany runs fn while holding every one of keys, deduplicated and
// ordered as by LockMany, through mutex.WithLockMany. Its errors are those
// of LockMany and of mutex.WithLockMany, or fn's error.
func (k *Keyed[K]) WithLockMany(ctx context.Context, keys []K, fn func(ctx context.Context) error) error {
	ss, err := k.keys(keys)
	if err != nil {
		return err
	}
	return mutex.WithLockMany(ctx, k.locker, ss, fn)
}
