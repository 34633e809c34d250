package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/distlock/distlock/distlockfx"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

// prefix starts the key prefixes of both configurations.
const prefix = "example-fx"

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

func run(ctx context.Context, redisURL string, out io.Writer) error {
	var billing *Billing
	app := fx.New(
		fx.NopLogger,
		// The application owns its Redis client; distlockfx only uses it.
		fx.Provide(func(lc fx.Lifecycle) (redis.UniversalClient, error) {
			client, err := redisurl.Open(redisURL)
			if err != nil {
				return nil, err
			}
			lc.Append(fx.StopHook(client.Close))
			return client, nil
		}),
		distlockfx.Module,
		distlockfx.Lock("orders", mutex.Config{Prefix: prefix + ":orders", TTL: 5 * time.Second},
			middleware.Retry()),
		distlockfx.Inherit("invoices", "orders", func(c *mutex.Config) {
			c.Prefix = prefix + ":invoices"
		}),
		fx.Supply(fx.Annotate(out, fx.As(new(io.Writer)))),
		fx.Provide(NewBilling),
		fx.Populate(&billing),
	)
	if err := app.Start(ctx); err != nil {
		return err
	}
	err := billing.Invoice(ctx, 42)
	if stopErr := app.Stop(ctx); stopErr != nil {
		return errors.Join(err, stopErr)
	}
	if err != nil {
		return err
	}

	// Stopping the application closed the configurations.
	_, err = billing.orders.TryLock(ctx, "order:42")
	fmt.Fprintf(out, "after stop: %v\n", err)
	return nil
}

// BillingParams are the dependencies of a Billing: the Lockers of the two
// configurations, by name.
type BillingParams struct {
	fx.In

	Orders   mutex.Locker `name:"orders"`
	Invoices mutex.Locker `name:"invoices"`
	Out      io.Writer
}

// Billing writes the invoices of orders, one writer per order at a time.
type Billing struct {
	orders   mutex.Locker
	invoices mutex.Locker
	out      io.Writer
}

// NewBilling returns a Billing using the Lockers in p.
func NewBilling(p BillingParams) *Billing {
	return &Billing{orders: p.Orders, invoices: p.Invoices, out: p.Out}
}

// Invoice locks the order, then its invoice, and writes the invoice.
func (b *Billing) Invoice(ctx context.Context, order int) error {
	orderKey := fmt.Sprintf("order:%d", order)
	return mutex.WithLock(ctx, b.orders, orderKey, func(ctx context.Context) error {
		fmt.Fprintf(b.out, "%s: locked\n", orderKey)

		// Another worker, with a context of its own, cannot take the
		// order meanwhile.
		if _, err := b.orders.TryLock(context.Background(), orderKey); err != nil {
			fmt.Fprintf(b.out, "%s: second worker: %v\n", orderKey, err)
		}

		invoiceKey := fmt.Sprintf("invoice:%d", order)
		return mutex.WithLock(ctx, b.invoices, invoiceKey, func(ctx context.Context) error {
			// A real service would pass the fence to the invoice store.
			fence := mutex.LeaseFromContext(ctx).Fence()
			fmt.Fprintf(b.out, "%s: written (fence > 0: %t)\n", invoiceKey, fence > 0)
			return nil
		})
	})
}
