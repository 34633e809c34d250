package distlockfx_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/distlock/distlock/distlockfx"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

// newClient is the application's Redis client, closed when it stops.
func newClient(lc fx.Lifecycle) (redis.UniversalClient, error) {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(client.Close))
	return client, nil
}

// Billing locks orders and invoices through the configurations of those
// names.
type Billing struct {
	fx.In

	Orders   mutex.Locker `name:"orders"`
	Invoices mutex.Locker `name:"invoices"`
}

func Example() {
	var billing Billing
	app := fx.New(
		fx.NopLogger,
		fx.Provide(newClient),
		distlockfx.Module,
		distlockfx.Lock("orders", mutex.Config{Prefix: "example-fx-orders", TTL: 5 * time.Second},
			middleware.Retry()),
		// Same client, TTL and Retry; a prefix of its own.
		distlockfx.Inherit("invoices", "orders", func(c *mutex.Config) { c.Prefix = "example-fx-invoices" }),
		fx.Populate(&billing),
	)
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		panic(err)
	}

	err := mutex.WithLock(ctx, billing.Orders, "order:42", func(ctx context.Context) error {
		fmt.Println("order locked")
		return mutex.WithLock(ctx, billing.Invoices, "invoice:7", func(context.Context) error {
			fmt.Println("invoice locked")
			return nil
		})
	})
	fmt.Println("done:", err)

	if err := app.Stop(ctx); err != nil {
		panic(err)
	}
	_, err = billing.Orders.TryLock(ctx, "order:42")
	fmt.Println("after Stop:", err)
	// Output:
	// order locked
	// invoice locked
	// done: <nil>
	// after Stop: mutex: closed
}

func ExampleLockFrom() {
	// Settings stands for the application's own configuration.
	type Settings struct {
		LockPrefix string
		LockTTL    time.Duration
	}
	var reports struct {
		fx.In
		Locker mutex.Locker `name:"reports"`
	}
	app := fx.New(
		fx.NopLogger,
		fx.Provide(newClient),
		fx.Supply(Settings{LockPrefix: "example-fx-reports", LockTTL: 30 * time.Second}),
		distlockfx.Module,
		distlockfx.LockFrom("reports", func(s Settings) mutex.Config {
			return mutex.Config{Prefix: s.LockPrefix, TTL: s.LockTTL}
		}),
		fx.Populate(&reports),
	)
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		panic(err)
	}
	defer app.Stop(ctx)

	m := reports.Locker.(*mutex.Mutex) // no decorators: the Mutex itself
	fmt.Println(m.Prefix(), m.TTL())
	// Output:
	// example-fx-reports 30s
}
