package mutex_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// Many goroutines of one Mutex with few requests in flight, whose contexts
// end at random moments (queued, taken, in flight), while others call Done,
// Extend and Unlock: exclusion holds, every lease's Done closes after
// Unlock, and no lock key is left held once the background clean-up ran.
func TestBatchCancelStress(t *testing.T) {
	srv := redistest.Start(t)
	cfg := mutex.Config{Prefix: prefix(t), TTL: 3 * time.Second}
	m := newMutex(t, srv, cfg)
	mutex.SetMaxInFlight(m, 2)
	var holders [4]atomic.Int32
	var wg sync.WaitGroup
	var grants atomic.Int64
	for g := range 48 {
		wg.Go(func() {
			for i := range 40 {
				k := (g + i) % len(holders)
				ctx, cancel := context.WithTimeout(t.Context(), time.Duration(rand.IntN(40000))*time.Microsecond)
				l, err := m.Lock(ctx, fmt.Sprint("k", k))
				cancel()
				if err != nil {
					continue
				}
				grants.Add(1)
				if n := holders[k].Add(1); n != 1 {
					t.Errorf("%d holders of k%d", n, k)
				}
				done := l.Done()
				ectx, ecancel := context.WithTimeout(t.Context(), time.Duration(rand.IntN(2000))*time.Microsecond)
				_ = l.Extend(ectx)
				ecancel()
				go l.Done()
				holders[k].Add(-1)
				uctx, ucancel := context.WithTimeout(t.Context(), 2*time.Second)
				err = l.Unlock(uctx)
				ucancel()
				assert.NoError(t, err)
				select {
				case <-done:
				case <-time.After(time.Second):
					t.Error("Done not closed after Unlock")
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d grants", grants.Load())
	require.Eventually(t, func() bool {
		for _, k := range keysLeft(t, srv.Client(t), cfg.Prefix) {
			if !strings.Contains(k, ":x:") {
				return false
			}
		}
		return true
	}, 5*time.Second, 20*time.Millisecond, "lock keys left held: %v", keysLeft(t, srv.Client(t), cfg.Prefix))
}
