package redistest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// admins holds a deployment's own connections to its servers, for the
// harness' commands: RESP2, no retries, short timeouts.
type admins struct {
	mu      sync.Mutex
	clients map[*Server]*redis.Client
}

// of returns the connection to s, opening it on first use.
func (a *admins) of(s *Server) *redis.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.clients == nil {
		a.clients = make(map[*Server]*redis.Client)
	}
	c := a.clients[s]
	if c == nil {
		c = redis.NewClient(&redis.Options{
			Addr:            s.Addr(),
			Protocol:        2,
			DisableIdentity: true,
			MaxRetries:      -1,
			DialTimeout:     time.Second,
			ReadTimeout:     5 * time.Second,
			PoolSize:        2,
		})
		a.clients[s] = c
	}
	return c
}

// closeAll closes every connection; of opens new ones afterwards.
func (a *admins) closeAll() error {
	a.mu.Lock()
	clients := a.clients
	a.clients = nil
	a.mu.Unlock()
	var errs []error
	for _, c := range clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// stopServers stops the servers that are not nil, in parallel.
func stopServers(servers []*Server) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, s := range servers {
		if s == nil {
			continue
		}
		wg.Go(func() {
			if err := s.stop(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", s.Addr(), err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitUntil calls cond every 20ms until it returns nil or ctx ends; then
// the error names what is not ready and why.
func waitUntil(ctx context.Context, what string, cond func() error) error {
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: %s not ready: %w (%w)", what, err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
