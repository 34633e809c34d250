package fencing

import (
	"context"
	_ "embed"
	"fmt"
	"reflect"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix starts the Redis keys of a RedisStore created with an
// empty prefix.
const DefaultRedisPrefix = "fenced"

var (
	//go:embed scripts/write.lua
	writeSrc    string
	writeScript = redis.NewScript(writeSrc)
)

// RedisStore keeps values in Redis, each in the hash "<prefix>:<key>" with
// the fields "value" and "fence". It is safe for concurrent use.
type RedisStore struct {
	client redis.UniversalClient
	prefix string
}

// NewRedisStore returns a store whose keys start with prefix and a colon;
// an empty prefix means DefaultRedisPrefix. It fails with an error wrapping
// ErrInvalid for a nil client. It makes no Redis call.
func NewRedisStore(client redis.UniversalClient, prefix string) (*RedisStore, error) {
	if client == nil {
		return nil, invalidf("nil client")
	}
	if v := reflect.ValueOf(client); v.Kind() == reflect.Pointer && v.IsNil() {
		return nil, invalidf("nil client")
	}
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	return &RedisStore{client: client, prefix: prefix}, nil
}

// Key returns the Redis key of the hash that holds key's value and fence.
func (s *RedisStore) Key(key string) string { return s.prefix + ":" + key }

// Write stores value under key with fence, unless a higher fence has
// written key: then it changes nothing and returns an error wrapping
// ErrStaleFence. A fence equal to the stored one is accepted (the same
// grant writing again). The comparison and the write run in one Lua script,
// which Redis runs as one step. An empty key or a fence that is not
// positive gets an error wrapping ErrInvalid.
func (s *RedisStore) Write(ctx context.Context, key string, value []byte, fence int64) error {
	if err := checkWrite(key, fence); err != nil {
		return err
	}
	// Script.Run sends EVALSHA, and EVAL when the script is not cached.
	res, err := writeScript.Run(ctx, s.client, []string{s.Key(key)}, value, strconv.FormatInt(fence, 10)).Slice()
	if err != nil {
		return fmt.Errorf("write %q: %w", key, err)
	}
	if len(res) != 2 {
		return fmt.Errorf("write %q: unexpected reply %v", key, res)
	}
	ok, _ := res[0].(int64)
	if ok != 1 {
		return stale(key, fence, fmt.Sprintf("stored fence is %v", res[1]))
	}
	return nil
}

// Read returns the value stored under key and the fence that wrote it, or
// an error wrapping ErrNotFound if key was never written.
func (s *RedisStore) Read(ctx context.Context, key string) (value []byte, fence int64, err error) {
	if err := checkID(key); err != nil {
		return nil, 0, err
	}
	res, err := s.client.HMGet(ctx, s.Key(key), "value", "fence").Result()
	if err != nil {
		return nil, 0, fmt.Errorf("read %q: %w", key, err)
	}
	v, okV := res[0].(string)
	f, okF := res[1].(string)
	if !okV || !okF {
		return nil, 0, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	fence, err = strconv.ParseInt(f, 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("read %q: stored fence: %w", key, err)
	}
	return []byte(v), fence, nil
}
