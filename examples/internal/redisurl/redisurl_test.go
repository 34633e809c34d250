package redisurl_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/examples/internal/redisurl"
	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestOptions(t *testing.T) {
	for name, url := range map[string]string{
		"url":      redistest.Shared(t).URL(),
		"embedded": "",
	} {
		t.Run(name, func(t *testing.T) {
			opts, stop, err := redisurl.Options(url)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			c := redis.NewClient(opts)
			defer c.Close()
			if err := c.Ping(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, _, err := redisurl.Options("not-a-url"); err == nil {
		t.Error("a bad URL was accepted")
	}
}
