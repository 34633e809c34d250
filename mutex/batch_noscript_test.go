package mutex_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// SCRIPT FLUSH while batched calls are under way: every call loads its
// script again, none fails with NOSCRIPT.
func TestScriptFlushDuringBatches(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	m := newMutexOn(t, c, mutex.Config{Prefix: prefix(t)})
	mutex.SetMaxInFlight(m, 1)
	stop := make(chan struct{})
	var flushes atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = srv.Client(t).ScriptFlush(context.Background()).Err()
			flushes.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for range 30 {
				l, err := m.Lock(t.Context(), fmt.Sprint("k", g%8))
				if !assert.NoError(t, err) {
					return
				}
				assert.NoError(t, l.Extend(t.Context()))
				assert.NoError(t, l.Unlock(t.Context()))
			}
		})
	}
	wg.Wait()
	close(stop)
	t.Logf("%d flushes", flushes.Load())
}
