package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"sync"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

const (
	users          = 3
	workers        = 6
	rounds         = 10
	initialBalance = 100
	prefix         = "example-keyed"
)

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
	if err := run(context.Background(), redisURL, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// bank stores one balance per user in Redis.
type bank struct {
	rdb   redis.UniversalClient
	users *keyed.Keyed[int64]
}

func balanceKey(user int64) string {
	return prefix + ":balance:" + strconv.FormatInt(user, 10)
}

func (b *bank) balance(ctx context.Context, user int64) (int64, error) {
	return b.rdb.Get(ctx, balanceKey(user)).Int64()
}

// add changes the balance of user by amount with a GET and a SET. The
// caller must hold the lock of user.
func (b *bank) add(ctx context.Context, user, amount int64) error {
	n, err := b.balance(ctx, user)
	if err != nil {
		return err
	}
	return b.rdb.Set(ctx, balanceKey(user), n+amount, 0).Err()
}

// deposit adds amount to the balance of user under the user's lock.
func (b *bank) deposit(ctx context.Context, user, amount int64) error {
	return b.users.WithLock(ctx, user, func(ctx context.Context) error {
		return b.add(ctx, user, amount)
	})
}

// transfer moves amount from one user to another under both users' locks.
func (b *bank) transfer(ctx context.Context, from, to, amount int64) (err error) {
	lease, err := b.users.LockMany(ctx, from, to)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, lease.Unlock(context.WithoutCancel(ctx))) }()
	if err := b.add(ctx, from, -amount); err != nil {
		return err
	}
	return b.add(ctx, to, amount)
}

func run(ctx context.Context, redisURL string, out io.Writer) error {
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
	b := &bank{rdb: rdb, users: keyed.New[int64](m, "user")}

	for user := int64(1); user <= users; user++ {
		if err := rdb.Set(ctx, balanceKey(user), initialBalance, 0).Err(); err != nil {
			return err
		}
	}

	// Every worker deposits 1 to each user per round, and moves 5 between
	// two users: even workers one way, odd workers the other, so the
	// transfers cancel out and every balance ends at a known value.
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				for user := int64(1); user <= users; user++ {
					if err := b.deposit(ctx, user, 1); err != nil {
						errs[w] = err
						return
					}
				}
				from := int64(i%users + 1)
				to := from%users + 1
				if w%2 == 1 {
					from, to = to, from
				}
				if err := b.transfer(ctx, from, to, 5); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	var total int64
	for user := int64(1); user <= users; user++ {
		n, err := b.balance(ctx, user)
		if err != nil {
			return err
		}
		key, err := b.users.Key(user)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "user %d (lock %q): balance %d\n", user, key, n)
		total += n
	}
	fmt.Fprintf(out, "total %d, expected %d\n", total, users*(initialBalance+workers*rounds))

	// One DEL per key: on a Redis Cluster the keys live in different slots.
	for user := int64(1); user <= users; user++ {
		if err := rdb.Del(ctx, balanceKey(user)).Err(); err != nil {
			return err
		}
	}
	return nil
}
