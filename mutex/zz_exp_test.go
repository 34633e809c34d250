package mutex_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

func BenchmarkZZRaw(b *testing.B) {
	srv := redistest.Shared(b)
	c := srv.Client(b)
	ctx := context.Background()
	m, _ := mutex.New(c, mutex.Config{Prefix: "zz"})
	defer m.Close()
	s2 := redis.NewScript(`local p = redis.call('PTTL', KEYS[1]) if p ~= -2 then return {0,1,p} end local t = redis.call('TIME') redis.call('SET', KEYS[1], ARGV[1], 'PX', 10000) return {1, t[1]}`)
	s3 := redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); redis.call('PUBLISH', KEYS[1], '') return 1 end return 0`)
	fs := []func(){
		func() { c.Ping(ctx) },
		func() { c.Ping(ctx); c.Ping(ctx) },
		func() { c.SetNX(ctx, "y", "v", 10*time.Second); c.Del(ctx, "y") },
		func() { s2.Run(ctx, c, []string{"x"}, "v"); s3.Run(ctx, c, []string{"x"}, "v") },
		func() { l, _ := m.Lock(ctx, "k"); l.Unlock(ctx) },
	}
	names := []string{"ping", "ping*2", "set+del", "2 scripts", "Lock+Unlock"}
	d := make([][]time.Duration, len(fs))
	for range 5000 {
		for j, f := range fs {
			st := time.Now()
			f()
			d[j] = append(d[j], time.Since(st))
		}
	}
	for j := range fs {
		b.Logf("%-12s p50 %6v  ratio %.2f", names[j], percentile(d[j], 50), float64(percentile(d[j], 50))/float64(percentile(d[0], 50)))
	}
}
