package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// replicas starts n instances of the service on 127.0.0.1:0, all on redisURL,
// and returns their base URLs. They are stopped, and run must have
// returned nil, at cleanup.
func replicas(t *testing.T, n int, redisURL string) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	urls := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		urls[i] = "http://" + lis.Addr().String()
		wg.Go(func() { errs[i] = run(ctx, lis, redisURL) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		}
	})
	return urls
}

func call(t *testing.T, c *http.Client, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// deposits sends perAccount deposits of 1 to each account, all at once,
// spread over the replicas, and checks that none was lost.
func deposits(t *testing.T, urls, accounts []string, perAccount int) {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := range perAccount * len(accounts) {
		wg.Go(func() {
			url := fmt.Sprintf("%s/accounts/%s/deposit?amount=1", urls[i%len(urls)], accounts[i%len(accounts)])
			if status, body := call(t, c, "POST", url); status != http.StatusOK {
				t.Errorf("POST %s: %d %s", url, status, body)
			}
		})
	}
	wg.Wait()
	for _, a := range accounts {
		status, body := call(t, c, "GET", urls[0]+"/accounts/"+a)
		if status != http.StatusOK || body != fmt.Sprint(perAccount) {
			t.Errorf("balance of %s: %d %q, want %d", a, status, body, perAccount)
		}
	}
}

func TestConcurrentDepositsAcrossReplicas(t *testing.T) {
	srv := redistest.Shared(t)
	redisURL := srv.URL()
	rdb := srv.Client(t)
	accounts := []string{"alice", "bob", "carol"}
	t.Cleanup(func() {
		for _, a := range accounts {
			rdb.Del(context.Background(), accountKey(a))
		}
	})
	urls := replicas(t, 3, redisURL)
	deposits(t, urls, accounts, 20)

	// Every lock was released: only the balances are left.
	keys, err := rdb.Keys(t.Context(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix+":account:") {
			t.Errorf("key left in Redis: %q", k)
		}
	}
}

func TestAnswers(t *testing.T) {
	srv := redistest.Shared(t)
	redisURL := srv.URL()
	urls := replicas(t, 1, redisURL)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	for _, tt := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/accounts/nobody", http.StatusOK, "0"},
		{"POST", "/accounts/dave/deposit?amount=-1", http.StatusBadRequest, "amount must be a positive integer"},
		{"POST", "/accounts/d%0Ave/deposit?amount=1", http.StatusBadRequest, "invalid lock key"},
		{"POST", "/accounts/" + strings.Repeat("x", 300) + "/deposit?amount=1", http.StatusBadRequest, "invalid lock key"},
	} {
		status, body := call(t, c, tt.method, urls[0]+tt.path)
		if status != tt.status || body != tt.body {
			t.Errorf("%s %s: %d %q, want %d %q", tt.method, tt.path, status, body, tt.status, tt.body)
		}
	}
}

func TestEmbeddedRedis(t *testing.T) {
	redisURL := "redis://" + miniredis.RunT(t).Addr()
	urls := replicas(t, 2, redisURL)
	deposits(t, urls, []string{"erin", "frank"}, 5)
}

func TestRunStopsWithItsContext(t *testing.T) {
	redisURL := redistest.Shared(t).URL()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, lis, redisURL) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}
