package httpmw_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/httpmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

const (
	loadRequests = 200
	loadServers  = 3
	loadHold     = 2 * time.Millisecond
)

// referee counts the handlers inside each key and the overlaps it saw.
type referee struct {
	mu       sync.Mutex
	inside   map[string]*atomic.Int32
	done     map[string]int
	overlaps atomic.Int64
}

func newReferee() *referee {
	return &referee{inside: make(map[string]*atomic.Int32), done: make(map[string]int)}
}

func (rf *referee) enter(key string) func() {
	rf.mu.Lock()
	c := rf.inside[key]
	if c == nil {
		c = new(atomic.Int32)
		rf.inside[key] = c
	}
	rf.mu.Unlock()
	if c.Add(1) > 1 {
		rf.overlaps.Add(1)
	}
	return func() {
		c.Add(-1)
		rf.mu.Lock()
		rf.done[key]++
		rf.mu.Unlock()
	}
}

// loadCluster starts loadServers HTTP servers, each with its own Mutex on
// its own Redis client, all of b. Each serves /locked/{id}, serialized by
// id, and /plain/{id}, the same handler without the middleware.
func loadCluster(t testing.TB, b redistest.Backend, rf *referee) []string {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leave := rf.enter(r.PathValue("id"))
		time.Sleep(loadHold)
		leave()
	})
	urls := make([]string, loadServers)
	for i := range urls {
		m := backendMutex(t, b, mutex.Config{Prefix: prefix(t)})
		mux := http.NewServeMux()
		mux.Handle("POST /locked/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), httpmw.WithWait(time.Minute))(h))
		mux.Handle("POST /plain/{id}", h)
		urls[i] = serve(t, mux).URL
	}
	return urls
}

// loadClient returns an HTTP client that keeps a connection per concurrent
// request, closed at cleanup.
func loadClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: loadRequests}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// fire sends loadRequests concurrent requests to route, spread round robin
// over the servers and over keys keys, and returns the statuses by count.
func fire(ctx context.Context, c *http.Client, urls []string, route string, keys int) map[string]int {
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		got = make(map[string]int)
	)
	for i := range loadRequests {
		wg.Go(func() {
			url := fmt.Sprintf("%s/%s/k%d", urls[i%len(urls)], route, i%keys)
			status := "error"
			req, err := http.NewRequestWithContext(ctx, "POST", url, nil)
			if err == nil {
				var resp *http.Response
				resp, err = c.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.Status
				}
			}
			if err != nil {
				status = err.Error()
			}
			mu.Lock()
			got[status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}

// TestLoad sends 200 concurrent requests over 10 keys to 3 servers sharing
// one Redis: every request completes, and no two handlers of one key ever
// run at once.
func TestLoad(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		rf := newReferee()
		urls := loadCluster(t, backend, rf)
		got := fire(t.Context(), loadClient(t), urls, "locked", 10)

		assert.Equal(t, map[string]int{"200 OK": loadRequests}, got)
		assert.Zero(t, rf.overlaps.Load(), "handlers of one key overlapped")
		rf.mu.Lock()
		defer rf.mu.Unlock()
		require.Len(t, rf.done, 10)
		for key, n := range rf.done {
			assert.Equal(t, loadRequests/10, n, key)
		}
	})
}

// BenchmarkSerialize measures requests per second of batches of 200
// concurrent requests to 3 servers sharing one Redis, with the middleware
// (locked-req/s) and against the same servers and handler without it
// (plain-req/s), in the same run. The handler holds each request for 2ms.
// With 10 keys, 20 requests of a key run one after another, so the ratio is
// bounded by the serialization itself; with 200 keys it shows the cost of
// the middleware without contention.
func BenchmarkSerialize(b *testing.B) {
	for _, keys := range []int{10, 200} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			rf := newReferee()
			urls := loadCluster(b, redistest.Shared(b).Backend(), rf)
			c := loadClient(b)
			ctx := b.Context()
			// Warm up the connections of both routes.
			fire(ctx, c, urls, "plain", keys)
			fire(ctx, c, urls, "locked", keys)
			var locked, plain time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				got := fire(ctx, c, urls, "locked", keys)
				locked += time.Since(start)
				start = time.Now()
				fire(ctx, c, urls, "plain", keys)
				plain += time.Since(start)
				if got["200 OK"] != loadRequests {
					b.Fatalf("answers %v", got)
				}
			}
			n := float64(b.N * loadRequests)
			b.ReportMetric(n/locked.Seconds(), "locked-req/s")
			b.ReportMetric(n/plain.Seconds(), "plain-req/s")
			b.ReportMetric(plain.Seconds()/locked.Seconds(), "locked/plain")
			b.ReportMetric(0, "ns/op")
		})
	}
}
