package httpmw_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/httpmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// newMutex returns a Mutex on its own client of srv, closed at cleanup.
func newMutex(t testing.TB, srv *redistest.Server, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = prefix(t)
	}
	m, err := mutex.New(srv.Client(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// backendMutex returns a Mutex on its own client of b, closed at cleanup.
func backendMutex(t testing.TB, b redistest.Backend, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = prefix(t)
	}
	m, err := mutex.New(b.Client(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// newFaultMutex is newMutex for servers that a test stops: its client does
// not retry, and its pool is large enough that go-redis never starts its
// background re-dialer, which would outlive the test.
func newFaultMutex(t testing.TB, srv *redistest.Server, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = prefix(t)
	}
	m, err := mutex.New(srv.Client(t, func(o *redis.Options) {
		o.MaxRetries = -1
		o.DialerRetries = 1
		o.PoolSize = 1000
	}), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// newProxiedMutex returns a Mutex whose client reaches srv through a proxy,
// and the proxy. The client uses go-redis defaults changed by mods, and is
// connected before newProxiedMutex returns, so that a Pause of the proxy
// stalls a Redis call in flight rather than a dial.
func newProxiedMutex(t testing.TB, srv *redistest.Server, cfg mutex.Config, mods ...func(*redis.Options)) (*mutex.Mutex, *redistest.Proxy) {
	t.Helper()
	client, p := redistest.ProxiedClient(t, srv, mods...)
	if cfg.Prefix == "" {
		cfg.Prefix = prefix(t)
	}
	m, err := mutex.New(client, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, p
}

// prefix returns a key prefix unique to the test.
func prefix(t testing.TB) string {
	return "httpmw:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
}

// serve starts an HTTP server for h on 127.0.0.1, closed at cleanup.
func serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

type response struct {
	status int
	body   string
	header http.Header
}

// do sends a request and reads the whole answer.
func do(t testing.TB, method, url string, header http.Header) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	require.NoError(t, err)
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{status: resp.StatusCode, body: strings.TrimSpace(string(b)), header: resp.Header}
}

// async sends a request from a goroutine; the answer arrives on the
// returned channel. The goroutine ends with the test's context.
func async(t testing.TB, method, url string) <-chan response {
	t.Helper()
	ch := make(chan response, 1)
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
		if err != nil {
			ch <- response{body: err.Error()}
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- response{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ch <- response{status: resp.StatusCode, body: strings.TrimSpace(string(b)), header: resp.Header}
	}()
	return ch
}

// recv waits for a value on ch, failing the test after a generous bound.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// errLog collects the errors passed to an error hook.
type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errLog) hook() httpmw.Option {
	return httpmw.WithErrorHook(func(_ *http.Request, err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.errs = append(l.errs, err)
	})
}

// take returns the errors collected so far and forgets them.
func (l *errLog) take() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := l.errs
	l.errs = nil
	return errs
}
