package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/httpmw"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

const prefix = "example-http"

func main() {
	// REDIS_URL names the Redis to use, in any form redisurl.Open accepts;
	// without it, the example runs an embedded, in-memory Redis.
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			log.Fatal(err)
		}
		defer mr.Close()
		redisURL = "redis://" + mr.Addr()
	}
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on http://%s", lis.Addr())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, lis, redisURL); err != nil {
		log.Fatal(err)
	}
}

// run serves the account service on lis until ctx ends, then shuts down
// gracefully and returns.
func run(ctx context.Context, lis net.Listener, redisURL string) error {
	rdb, err := redisurl.Open(redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	m, err := mutex.New(rdb, mutex.Config{Prefix: prefix})
	if err != nil {
		return err
	}
	defer m.Close()

	srv := &http.Server{Handler: newHandler(m, &store{rdb: rdb}), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// newHandler routes the service. Deposits wait up to 5 seconds for their
// account and answer 409 Conflict with Retry-After beyond that; reads are
// not serialized.
func newHandler(m *mutex.Mutex, s *store) http.Handler {
	serialize := httpmw.Serialize(m, httpmw.Namespace("account", httpmw.PathValue("id")),
		httpmw.WithWait(5*time.Second),
		httpmw.WithErrorHook(func(r *http.Request, err error) {
			log.Printf("%s %q: %v", r.Method, r.URL.Path, err)
		}))
	mux := http.NewServeMux()
	mux.Handle("POST /accounts/{id}/deposit", serialize(http.HandlerFunc(s.deposit)))
	mux.HandleFunc("GET /accounts/{id}", s.get)
	return mux
}

// store keeps one balance per account in a Redis hash, with the fencing
// token of its last write.
type store struct {
	rdb redis.UniversalClient
}

// fencedWrite sets the balance unless a write with a newer fencing token
// was accepted already.
var fencedWrite = redis.NewScript(`
local last = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if tonumber(ARGV[2]) <= last then
  return 0
end
redis.call('HSET', KEYS[1], 'balance', ARGV[1], 'fence', ARGV[2])
return 1
`)

func accountKey(id string) string { return prefix + ":account:" + id }

func (s *store) balance(ctx context.Context, id string) (int64, error) {
	n, err := s.rdb.HGet(ctx, accountKey(id), "balance").Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

func (s *store) get(w http.ResponseWriter, r *http.Request) {
	n, err := s.balance(r.Context(), r.PathValue("id"))
	if err != nil {
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, n)
}

// deposit runs under the account's lock: read, add, write back.
func (s *store) deposit(w http.ResponseWriter, r *http.Request) {
	amount, err := strconv.ParseInt(r.URL.Query().Get("amount"), 10, 64)
	if err != nil || amount <= 0 {
		http.Error(w, "amount must be a positive integer", http.StatusBadRequest)
		return
	}
	ctx, id := r.Context(), r.PathValue("id")
	n, err := s.balance(ctx, id)
	if err != nil {
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	fence := httpmw.LeaseFrom(ctx).Fence()
	ok, err := fencedWrite.Run(ctx, s.rdb, []string{accountKey(id)}, n+amount, fence).Bool()
	switch {
	case err != nil && ctx.Err() != nil:
		// The lease was lost (or the client left) before the write
		// completed: it may or may not have happened.
		http.Error(w, "lock lost, retry", http.StatusServiceUnavailable)
		return
	case err != nil:
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	case !ok:
		http.Error(w, "stale write refused, retry", http.StatusConflict)
		return
	}
	fmt.Fprintln(w, n+amount)
}
