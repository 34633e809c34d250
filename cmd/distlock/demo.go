package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

// demoPrefix is the key prefix of the demo, unless --prefix sets one.
const demoPrefix = "distlock:demo"

// demoTimeout bounds the whole demo.
const demoTimeout = 30 * time.Second

func demoCmd(args []string, stdout, stderr io.Writer) int {
	fs, c := newFlags("demo", "demo [--redis URL] [--prefix P]", stderr)
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "distlock demo: unexpected arguments %q\n", pos)
		return exitUsage
	}
	prefix := demoPrefix
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "prefix" {
			prefix = c.prefix
		}
	})
	rawURL := c.redisURL
	if rawURL == "" {
		rawURL = os.Getenv("REDIS_URL")
	}
	if rawURL == "" {
		// An embedded Redis whose keys expire with the wall clock, as
		// Redis's do (miniredis expires them only on request otherwise).
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			return failed(stderr, "start the embedded Redis", err)
		}
		defer mr.Close()
		mr.ClockTTL(true)
		rawURL = "redis://" + mr.Addr()
		fmt.Fprintf(stdout, "Redis: embedded, in memory (miniredis at %s); --redis or REDIS_URL names another.\n", mr.Addr())
	} else {
		fmt.Fprintln(stdout, "Redis: from --redis or REDIS_URL.")
	}
	client, err := redisurl.Open(rawURL)
	if err != nil {
		fmt.Fprintf(stderr, "distlock: %v\n", err)
		return exitUsage
	}
	defer client.Close()
	ctx, cancel := background()
	defer cancel()
	ctx, cancelDemo := context.WithTimeout(ctx, demoTimeout)
	defer cancelDemo()
	d := &demo{client: client, prefix: prefix, out: stdout}
	defer d.close()
	for _, part := range []func(context.Context) error{d.contention, d.fifo, d.lostLease, d.left} {
		if err := part(ctx); err != nil {
			return failed(stderr, "demo", err)
		}
	}
	return exitOK
}

// demo runs the parts of the demo, each with workers that have a Mutex
// of their own, as separate processes would.
type demo struct {
	client redis.UniversalClient
	prefix string
	out    io.Writer

	mu      sync.Mutex // serializes output and the records of the parts
	mutexes []*mutex.Mutex
}

func (d *demo) close() {
	for _, m := range d.mutexes {
		_ = m.Close()
	}
}

// worker returns the Mutex of worker n.
func (d *demo) worker(n int, cfg mutex.Config) (*mutex.Mutex, error) {
	cfg.Prefix, cfg.Owner = d.prefix, fmt.Sprintf("worker-%d", n)
	m, err := mutex.New(d.client, cfg)
	if err != nil {
		return nil, err
	}
	d.mutexes = append(d.mutexes, m)
	return m, nil
}

func (d *demo) printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, format, args...)
}

// contention has three workers take one key twice each: never two at
// once, and fences increase.
func (d *demo) contention(ctx context.Context) error {
	const key, workers, rounds, holdFor = "report", 3, 2, 100 * time.Millisecond
	fmt.Fprintf(d.out, "\n1. Three workers take turns on %q, %d times each, holding it %v.\n", key, rounds, holdFor)
	var (
		wg      sync.WaitGroup
		errs    = make([]error, workers)
		holders int
		overlap bool
		fences  []int64
	)
	for i := range workers {
		m, err := d.worker(i+1, mutex.Config{TTL: 2 * time.Second})
		if err != nil {
			return err
		}
		wg.Go(func() {
			for range rounds {
				start := time.Now()
				lease, err := m.Lock(ctx, key)
				if err != nil {
					errs[i] = err
					return
				}
				d.mu.Lock()
				holders++
				overlap = overlap || holders > 1
				fences = append(fences, lease.Fence())
				fmt.Fprintf(d.out, "   %s holds %q  fence %d  waited %v\n", m.Owner(), key, lease.Fence(), time.Since(start).Round(time.Millisecond))
				d.mu.Unlock()
				time.Sleep(holdFor)
				d.mu.Lock()
				holders--
				d.mu.Unlock()
				if err := lease.Unlock(ctx); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if overlap {
		return errors.New("two workers held the key at once")
	}
	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			return fmt.Errorf("fence %d after fence %d", fences[i], fences[i-1])
		}
	}
	fmt.Fprintf(d.out, "   %d grants, one holder at a time, each fence greater than the one before.\n", len(fences))
	fmt.Fprintln(d.out, "   (Without FIFO mode, a worker that asks again right after its release may well win again.)")
	return nil
}

// fifo has waiters queue behind a holder and shows that they get the key
// in the order they asked for it.
func (d *demo) fifo(ctx context.Context) error {
	const key = "queue"
	fmt.Fprintf(d.out, "\n2. FIFO mode: worker-1 holds %q; workers 2, 3 and 4 ask for it, in that order.\n", key)
	cfg := mutex.Config{TTL: 2 * time.Second, FIFO: true}
	first, err := d.worker(1, cfg)
	if err != nil {
		return err
	}
	lease, err := first.Lock(ctx, key)
	if err != nil {
		return err
	}
	var (
		wg    sync.WaitGroup
		errs  = make([]error, 3)
		order []int
	)
	for i := range 3 {
		n := i + 2
		m, err := d.worker(n, cfg)
		if err != nil {
			return errors.Join(err, lease.Unlock(ctx))
		}
		wg.Go(func() {
			l, err := m.Lock(ctx, key)
			if err != nil {
				errs[i] = err
				return
			}
			d.mu.Lock()
			order = append(order, n)
			fmt.Fprintf(d.out, "   %s holds %q  fence %d\n", m.Owner(), key, l.Fence())
			d.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			errs[i] = l.Unlock(ctx)
		})
		// The next worker asks once this one is queued.
		if err := waitQueue(ctx, first, key, int64(n-1)); err != nil {
			return errors.Join(err, lease.Unlock(ctx))
		}
	}
	info, err := first.Inspect(ctx, key)
	if err != nil {
		return errors.Join(err, lease.Unlock(ctx))
	}
	fmt.Fprintf(d.out, "   status: held by %s, fence %d, %d waiting in the queue\n", info[0].Owner, info[0].Fence, info[0].Queue)
	if err := lease.Unlock(ctx); err != nil {
		return err
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !slices.Equal(order, []int{2, 3, 4}) {
		return fmt.Errorf("granted to workers %v, not in arrival order", order)
	}
	fmt.Fprintln(d.out, "   The key went down the queue in arrival order.")
	return nil
}

// waitQueue waits until n FIFO waiters queue for key.
func waitQueue(ctx context.Context, m *mutex.Mutex, key string, n int64) error {
	for {
		info, err := m.Inspect(ctx, key)
		if err != nil {
			return err
		}
		if info[0].Queue >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// lostLease has a worker stall past its lease's validity: its lease
// reports the loss, another worker takes the key, and a store that checks
// fences refuses the stalled worker's late write.
func (d *demo) lostLease(ctx context.Context) error {
	const key, ttl, stall = "invoice", 500 * time.Millisecond, 800 * time.Millisecond
	fmt.Fprintf(d.out, "\n3. A lost lease: worker-1 takes %q with a %v TTL, then stalls for %v (a long GC pause, say) without extending it.\n", key, ttl, stall)
	slow, err := d.worker(1, mutex.Config{TTL: ttl})
	if err != nil {
		return err
	}
	other, err := d.worker(2, mutex.Config{TTL: ttl})
	if err != nil {
		return err
	}
	var store fencedStore
	lease, err := slow.Lock(ctx, key)
	if err != nil {
		return err
	}
	granted := time.Now()
	store.write(lease.Fence())
	fmt.Fprintf(d.out, "   worker-1 holds %q  fence %d, and writes to the store with it\n", key, lease.Fence())
	type result struct {
		lease mutex.Lease
		err   error
	}
	next := make(chan result, 1)
	go func() {
		l, err := other.Lock(ctx, key)
		next <- result{l, err}
	}()
	select {
	case <-lease.Done():
		d.printf("   worker-1's lease ended %v after the grant: %v\n", time.Since(granted).Round(time.Millisecond), lease.Err())
	case <-time.After(2 * ttl):
		return errors.New("the lease did not end at its deadline")
	}
	r := <-next
	if r.err != nil {
		return r.err
	}
	d.printf("   worker-2 holds %q  fence %d, %v after the grant to worker-1, once Redis expired its lock\n", key, r.lease.Fence(), time.Since(granted).Round(time.Millisecond))
	store.write(r.lease.Fence())
	time.Sleep(time.Until(granted.Add(stall)))
	if store.write(lease.Fence()) {
		return errors.New("the store accepted a stale fence")
	}
	d.printf("   worker-1 resumes and writes with fence %d: the store refuses it, having seen fence %d\n", lease.Fence(), r.lease.Fence())
	err = lease.Unlock(ctx)
	if !errors.Is(err, mutex.ErrNotHeld) {
		return fmt.Errorf("unlock of the lost lease: got %v, want ErrNotHeld", err)
	}
	d.printf("   worker-1's Unlock: %v\n", err)
	return r.lease.Unlock(ctx)
}

// left checks that no key of the demo is held any more.
func (d *demo) left(ctx context.Context) error {
	keys, err := d.mutexes[0].List(ctx, "")
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		return fmt.Errorf("keys still held: %q", keys)
	}
	fmt.Fprintln(d.out, "\nDone: no key of the demo is held any more.")
	return nil
}

// fencedStore accepts a write only with a fence greater than every fence
// it has seen.
type fencedStore struct{ last int64 }

func (s *fencedStore) write(fence int64) bool {
	if fence <= s.last {
		return false
	}
	s.last = fence
	return true
}
