package redisurl

import (
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Options returns client options for the Redis at url (as in REDIS_URL, for
// example redis://localhost:6379/0), or, when url is empty, starts an
// embedded Redis and returns options for it. Call stop when done: it stops
// the embedded Redis, if any.
func Options(url string) (opts *redis.Options, stop func(), err error) {
	if url != "" {
		opts, err := redis.ParseURL(url)
		return opts, func() {}, err
	}
	mr, err := miniredis.Run()
	if err != nil {
		return nil, nil, err
	}
	return &redis.Options{Addr: mr.Addr()}, mr.Close, nil
}
