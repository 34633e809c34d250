package keyed_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/google/uuid"

	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

// exampleMutex returns a Mutex on the package's test server and a function
// that closes it and its client.
func exampleMutex(prefix string) (*mutex.Mutex, func()) {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	m, err := mutex.New(client, mutex.Config{Prefix: prefix})
	if err != nil {
		panic(err)
	}
	return m, func() {
		m.Close()
		client.Close()
	}
}

func Example() {
	m, done := exampleMutex("example-keyed")
	defer done()
	ctx := context.Background()

	// Distinct (namespace, key) pairs are distinct locks, even when their
	// parts joined with ':' read the same.
	a := keyed.New[string](m, "a")
	ab := keyed.New[string](m, "a:b")
	l1, err := a.TryLock(ctx, "b:c")
	if err != nil {
		panic(err)
	}
	defer l1.Unlock(ctx)
	l2, err := ab.TryLock(ctx, "c")
	if err != nil {
		panic(err)
	}
	defer l2.Unlock(ctx)
	fmt.Println(l1.Keys(), l2.Keys())
	// Output: [a:b:c] [a%3Ab:c]
}

func ExampleKeyed_Lock() {
	m, done := exampleMutex("example-lock")
	defer done()
	ctx := context.Background()

	users := keyed.New[int64](m, "user")
	lease, err := users.Lock(ctx, 42)
	if err != nil {
		panic(err)
	}
	fmt.Println("holding", lease.Keys(), "fence", lease.Fence() > 0)
	if err := lease.Unlock(ctx); err != nil {
		panic(err)
	}
	// Output: holding [user:42] fence true
}

func ExampleNew() {
	m, done := exampleMutex("example-new")
	defer done()

	users := keyed.New[int64](m, "user")
	orders := keyed.New[uuid.UUID](m, "order")
	emails := keyed.New[string](m, "user:email")
	for _, k := range []func() (string, error){
		func() (string, error) { return users.Key(42) },
		func() (string, error) { return orders.Key(uuid.MustParse("0b7e4d6a-3c1f-4a8e-9a51-5d2f7c9e1b20")) },
		func() (string, error) { return emails.Key("ada@example.com") },
	} {
		fmt.Println(k())
	}

	// New reports a bad namespace or key type through Err, and every
	// method returns the same error without calling Redis.
	bad := keyed.New[float64](m, "temperature")
	fmt.Println(errors.Is(bad.Err(), mutex.ErrInvalid))
	fmt.Println(bad.Err())
	// Output:
	// user:42 <nil>
	// order:0b7e4d6a-3c1f-4a8e-9a51-5d2f7c9e1b20 <nil>
	// user%3Aemail:ada@example.com <nil>
	// true
	// mutex: invalid argument: no default key encoding for float64: use WithKeyFunc
}

func ExampleKeyed_TryLock() {
	m, done := exampleMutex("example-trylock")
	defer done()
	ctx := context.Background()
	users := keyed.New[int64](m, "user")

	lease, err := users.TryLock(ctx, 7)
	if err != nil {
		panic(err)
	}
	_, err = users.TryLock(ctx, 7)
	fmt.Println(errors.Is(err, mutex.ErrNotObtained))
	st, _ := users.Check(ctx, 7)
	fmt.Println(st)

	if err := lease.Unlock(ctx); err != nil {
		panic(err)
	}
	st, _ = users.Check(ctx, 7)
	fmt.Println(st)
	// Output:
	// true
	// locked
	// available
}

func ExampleKeyed_LockMany() {
	m, done := exampleMutex("example-lockmany")
	defer done()
	ctx := context.Background()
	accounts := keyed.New[int](m, "account")

	// A transfer locks both accounts. The order of the arguments does not
	// matter, so two opposite transfers cannot deadlock.
	transfer := func(from, to int) {
		lease, err := accounts.LockMany(ctx, from, to)
		if err != nil {
			panic(err)
		}
		defer lease.Unlock(ctx)
		fmt.Println("holding", lease.Keys())
	}
	transfer(20, 10)
	transfer(10, 20)
	// Output:
	// holding [account:10 account:20]
	// holding [account:10 account:20]
}

func ExampleKeyed_WithLock() {
	m, done := exampleMutex("example-withlock")
	defer done()
	ctx := context.Background()
	users := keyed.New[string](m, "user")

	err := users.WithLock(ctx, "ada", func(ctx context.Context) error {
		// The lease is extended while this runs, and ctx ends if it is lost.
		fmt.Println("updating", mutex.LeaseFromContext(ctx).Keys())
		return nil
	})
	fmt.Println(err)
	// Output:
	// updating [user:ada]
	// <nil>
}

func ExampleWithKeyFunc() {
	m, done := exampleMutex("example-keyfunc")
	defer done()

	type invoice struct {
		Tenant string
		Number int
	}
	// The number has no '@', so the first '@' ends it and no two invoices
	// share a key string.
	invoices := keyed.New(m, "invoice", keyed.WithKeyFunc(func(i invoice) string {
		return strconv.Itoa(i.Number) + "@" + i.Tenant
	}))
	fmt.Println(invoices.Key(invoice{Tenant: "acme", Number: 1001}))
	// Output: invoice:1001@acme <nil>
}
