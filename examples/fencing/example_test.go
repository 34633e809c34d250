package fencing_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	_ "github.com/ncruces/go-sqlite3/driver"
	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/examples/fencing"
	"github.com/distlock/distlock/mutex"
)

// exampleRedis connects to REDIS_URL when it is set, and otherwise starts an
// embedded in-memory Redis. Call stop when done.
func exampleRedis() (client *redis.Client, stop func()) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			panic(err)
		}
		client = redis.NewClient(opts)
		return client, func() { _ = client.Close() }
	}
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	client = redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return client, func() { _ = client.Close(); mr.Close() }
}

// exampleDB opens an in-memory SQLite database. Each connection to
// ":memory:" has its own database, so the pool keeps one connection.
func exampleDB() *sql.DB {
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		panic(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

// Worker A holds the lock on an invoice and stalls until its lease runs out;
// worker B takes the lock and writes. When A wakes up and writes, the table
// refuses A's older fence.
func ExampleSQLStore() {
	ctx := context.Background()
	client, stop := exampleRedis()
	defer stop()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-fencing", TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	db := exampleDB()
	defer db.Close()
	store, err := fencing.NewSQLStore(db, "invoices")
	if err != nil {
		panic(err)
	}
	if err := store.CreateTable(ctx); err != nil {
		panic(err)
	}

	a, err := m.Lock(ctx, "invoice:42")
	if err != nil {
		panic(err)
	}
	fmt.Println("A writes:", store.Write(ctx, "invoice:42", []byte("draft by A"), a.Fence()))
	// A stalls, and its lease ends; Unlock stands in for the expiry here.
	_ = a.Unlock(ctx)

	b, err := m.Lock(ctx, "invoice:42")
	if err != nil {
		panic(err)
	}
	defer b.Unlock(ctx)
	fmt.Println("B writes:", store.Write(ctx, "invoice:42", []byte("sent by B"), b.Fence()))

	// A wakes up, unaware that its lease is gone, and writes.
	err = store.Write(ctx, "invoice:42", []byte("paid by A"), a.Fence())
	fmt.Println("A again, stale:", errors.Is(err, fencing.ErrStaleFence))

	value, fence, err := store.Read(ctx, "invoice:42")
	if err != nil {
		panic(err)
	}
	fmt.Printf("stored: %q, by B: %v\n", value, fence == b.Fence())
	// Output:
	// A writes: <nil>
	// B writes: <nil>
	// A again, stale: true
	// stored: "sent by B", by B: true
}

// A stale fence rolls back every write of the transaction it was part of.
func ExampleSQLStore_WriteTx() {
	ctx := context.Background()
	db := exampleDB()
	defer db.Close()
	store, err := fencing.NewSQLStore(db, "accounts")
	if err != nil {
		panic(err)
	}
	if err := store.CreateTable(ctx); err != nil {
		panic(err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE audit (entry TEXT)"); err != nil {
		panic(err)
	}
	// A newer lease (fence 200) has written the account already.
	if err := store.Write(ctx, "account:7", []byte("balance 100"), 200); err != nil {
		panic(err)
	}

	// An older lease (fence 100) tries to write the account and an audit
	// entry in one transaction.
	transfer := func(fence int64) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := store.WriteTx(ctx, tx, "account:7", []byte("balance 50"), fence); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO audit VALUES ('withdrew 50')"); err != nil {
			return err
		}
		return tx.Commit()
	}
	err = transfer(100)
	fmt.Println("stale:", errors.Is(err, fencing.ErrStaleFence))

	var entries int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM audit").Scan(&entries); err != nil {
		panic(err)
	}
	value, _, _ := store.Read(ctx, "account:7")
	fmt.Printf("%s, %d audit entries\n", value, entries)
	// Output:
	// stale: true
	// balance 100, 0 audit entries
}

// The same story with the data in Redis: the fence and the value live in
// one hash, and a Lua script compares and writes in one step.
func ExampleRedisStore() {
	ctx := context.Background()
	client, stop := exampleRedis()
	defer stop()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-fencing", TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// The lock's Redis keeps the data here too; any Redis whose durability
	// suits the data will do.
	store, err := fencing.NewRedisStore(client, "example-fencing:data")
	if err != nil {
		panic(err)
	}
	defer client.Del(ctx, store.Key("report:2026"))

	a, err := m.Lock(ctx, "report:2026")
	if err != nil {
		panic(err)
	}
	fmt.Println("A writes:", store.Write(ctx, "report:2026", []byte("v1 by A"), a.Fence()))
	// A stalls, and its lease ends; Unlock stands in for the expiry here.
	_ = a.Unlock(ctx)

	b, err := m.Lock(ctx, "report:2026")
	if err != nil {
		panic(err)
	}
	defer b.Unlock(ctx)
	fmt.Println("B writes:", store.Write(ctx, "report:2026", []byte("v2 by B"), b.Fence()))
	fmt.Println("B again:", store.Write(ctx, "report:2026", []byte("v3 by B"), b.Fence()))

	err = store.Write(ctx, "report:2026", []byte("v2 by A"), a.Fence())
	fmt.Println("A again, stale:", errors.Is(err, fencing.ErrStaleFence))

	value, fence, err := store.Read(ctx, "report:2026")
	if err != nil {
		panic(err)
	}
	fmt.Printf("stored: %q, by B: %v\n", value, fence == b.Fence())
	// Output:
	// A writes: <nil>
	// B writes: <nil>
	// B again: <nil>
	// A again, stale: true
	// stored: "v3 by B", by B: true
}
