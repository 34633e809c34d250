package distlocktest_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/distlocktest"
	"github.com/distlock/distlock/mutex"
)

func ExampleNewLocker() {
	clock := distlocktest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	locker, err := distlocktest.NewLocker(distlocktest.Options{Clock: clock, TTL: 10 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer locker.Close()
	ctx := context.Background()

	lease, err := locker.Lock(ctx, "invoice:42")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("fence", lease.Fence())

	clock.Advance(4 * time.Second)
	_, err = locker.TryLock(ctx, "invoice:42")
	var busy *mutex.NotObtainedError
	if errors.As(err, &busy) {
		fmt.Printf("%q is held for %v more\n", busy.Key, busy.RetryAfter)
	}

	clock.Advance(6 * time.Second)
	<-lease.Done()
	fmt.Println(lease.Err())

	next, err := locker.TryLock(ctx, "invoice:42")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("fence", next.Fence())
	// Output:
	// fence 1
	// "invoice:42" is held for 6s more
	// mutex: lock not held: validity of the lease on ["invoice:42"] ran out
	// fence 2
}

// A Lock waits until the key is released or expires; FIFO mode grants the
// waiters in the order they came.
func ExampleLocker_Lock() {
	locker, err := distlocktest.NewLocker(distlocktest.Options{TTL: time.Minute, FIFO: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer locker.Close()
	ctx := context.Background()

	first, err := locker.Lock(ctx, "report")
	if err != nil {
		fmt.Println(err)
		return
	}
	granted := make(chan string, 2)
	for i, name := range []string{"second", "third"} {
		go func() {
			lease, err := locker.Lock(ctx, "report")
			if err != nil {
				granted <- err.Error()
				return
			}
			granted <- fmt.Sprintf("%s, fence %d", name, lease.Fence())
			lease.Unlock(ctx)
		}()
		// Wait until it queues, so that the order is known.
		for locker.Waiting() <= i {
			time.Sleep(time.Millisecond)
		}
	}

	locker.Clock().Advance(time.Minute) // first's lease expires
	fmt.Println(<-granted)
	fmt.Println(<-granted)
	fmt.Println(first.Err() != nil)
	// Output:
	// second, fence 2
	// third, fence 3
	// true
}

// Advance expires the keys of a real Mutex on miniredis and, on a server
// whose clock the test fixed, moves that clock too.
func ExampleAdvance() {
	mr, err := miniredis.Run()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mr.Close()
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example", TTL: 10 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	ctx := context.Background()

	lease, err := m.Lock(ctx, "report")
	if err != nil {
		fmt.Println(err)
		return
	}
	distlocktest.Advance(mr, 10*time.Second)
	fmt.Println(m.Check(ctx, "report"))
	fmt.Println(errors.Is(lease.Extend(ctx), mutex.ErrNotHeld))

	next, err := m.Lock(ctx, "report")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(next.Fence() > lease.Fence())
	// The fixed clock has not moved since the grant.
	fmt.Println(errors.Is(next.Unlock(ctx), mutex.ErrClockStalled))
	distlocktest.Advance(mr, time.Millisecond)
	fmt.Println(next.Unlock(ctx))
	// Output:
	// available <nil>
	// true
	// true
	// true
	// <nil>
}
