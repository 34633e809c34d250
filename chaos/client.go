package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// EnvClient marks a client process: its value is the client id. The other
// CHAOS_* variables carry the client's configuration (see clientEnv).
const EnvClient = "CHAOS_CLIENT"

// Keys the clients lock: HotKey mostly, sometimes a cold key, sometimes both.
const HotKey = "hot"

var coldKeys = []string{"cold0", "cold1", "cold2"}

// ClientConfig configures one client process.
type ClientConfig struct {
	ID int
	// Redis is the URL the client opens with redisurl.Open: redis://,
	// redis+cluster:// or redis+sentinel://.
	Redis   string
	Store   string
	Lock    string // "real" or "broken"
	FIFO    bool
	TTL     time.Duration
	History string
	End     time.Time
	Seed    uint64
	// NoRetries sets go-redis MaxRetries to -1; otherwise go-redis' default
	// options (with their retries) are used.
	NoRetries bool
	// AutoExtend wraps the Mutex in middleware.AutoExtend.
	AutoExtend bool
	// LongHold makes the sleep after the writes last up to TTL/2 instead
	// of TTL/10: holders keep valid leases longer, which widens the window
	// in which a Redis that lost data can grant the keys again.
	LongHold bool
	// PauseHolders: sleep 1.5×TTL between the first check and the write in
	// one critical section in five.
	PauseHolders bool
	// Replicas is the Mutex's Config.Replicas.
	Replicas int
	// MultiKey lets a Lock take the hot key and a cold key together;
	// without it, those Locks take the hot key alone.
	MultiKey bool
}

func (c ClientConfig) env() []string {
	return []string{
		EnvClient + "=" + strconv.Itoa(c.ID),
		"CHAOS_REDIS=" + c.Redis,
		"CHAOS_STORE=" + c.Store,
		"CHAOS_LOCK=" + c.Lock,
		"CHAOS_FIFO=" + strconv.FormatBool(c.FIFO),
		"CHAOS_TTL=" + c.TTL.String(),
		"CHAOS_HISTORY=" + c.History,
		"CHAOS_END=" + strconv.FormatInt(c.End.UnixNano(), 10),
		"CHAOS_SEED=" + strconv.FormatUint(c.Seed, 10),
		"CHAOS_NORETRIES=" + strconv.FormatBool(c.NoRetries),
		"CHAOS_PAUSE=" + strconv.FormatBool(c.PauseHolders),
		"CHAOS_AUTOEXTEND=" + strconv.FormatBool(c.AutoExtend),
		"CHAOS_LONGHOLD=" + strconv.FormatBool(c.LongHold),
		"CHAOS_REPLICAS=" + strconv.Itoa(c.Replicas),
		"CHAOS_MULTIKEY=" + strconv.FormatBool(c.MultiKey),
	}
}

func clientConfigFromEnv() (ClientConfig, error) {
	var c ClientConfig
	var errs []error
	var err error
	c.ID, err = strconv.Atoi(os.Getenv(EnvClient))
	errs = append(errs, err)
	c.Redis, c.Store, c.Lock, c.History = os.Getenv("CHAOS_REDIS"), os.Getenv("CHAOS_STORE"), os.Getenv("CHAOS_LOCK"), os.Getenv("CHAOS_HISTORY")
	c.FIFO, err = strconv.ParseBool(os.Getenv("CHAOS_FIFO"))
	errs = append(errs, err)
	c.TTL, err = time.ParseDuration(os.Getenv("CHAOS_TTL"))
	errs = append(errs, err)
	end, err := strconv.ParseInt(os.Getenv("CHAOS_END"), 10, 64)
	errs = append(errs, err)
	c.End = time.Unix(0, end)
	c.Seed, err = strconv.ParseUint(os.Getenv("CHAOS_SEED"), 10, 64)
	errs = append(errs, err)
	c.NoRetries, err = strconv.ParseBool(os.Getenv("CHAOS_NORETRIES"))
	errs = append(errs, err)
	c.PauseHolders, err = strconv.ParseBool(os.Getenv("CHAOS_PAUSE"))
	errs = append(errs, err)
	c.AutoExtend, err = strconv.ParseBool(os.Getenv("CHAOS_AUTOEXTEND"))
	errs = append(errs, err)
	c.LongHold, err = strconv.ParseBool(os.Getenv("CHAOS_LONGHOLD"))
	errs = append(errs, err)
	c.Replicas, err = strconv.Atoi(os.Getenv("CHAOS_REPLICAS"))
	errs = append(errs, err)
	c.MultiKey, err = strconv.ParseBool(os.Getenv("CHAOS_MULTIKEY"))
	errs = append(errs, err)
	return c, errors.Join(errs...)
}

// IsClient reports whether this process was started as a client.
func IsClient() bool { return os.Getenv(EnvClient) != "" }

// ClientMain runs the client loop configured by the environment and
// returns the process exit code. Call it first thing in main (or TestMain)
// when IsClient reports true.
func ClientMain() int {
	cfg, err := clientConfigFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos client: bad environment:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := RunClient(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "chaos client:", err)
		return 1
	}
	return 0
}

// RunClient loops until cfg.End or ctx ends. Its last event (OpExit)
// counts the goroutines left once the Mutex and the Redis client are closed.
func RunClient(ctx context.Context, cfg ClientConfig) error {
	baseline := goleak.IgnoreCurrent()
	rec, err := NewRecorder(cfg.History, cfg.ID)
	if err != nil {
		return err
	}
	defer rec.Close()
	if err := runClient(ctx, cfg, rec); err != nil {
		return err
	}
	e := Event{Op: OpExit, Type: TypeOK}
	if err := goleak.Find(baseline); err != nil {
		e.Count = countGoroutines(err.Error())
		e.Note = truncate(err.Error(), 8<<10)
	}
	rec.Record(e)
	return nil
}

// countGoroutines counts the goroutines goleak lists in msg.
func countGoroutines(msg string) int {
	n := 0
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimLeft(line, "[ ")
		if strings.HasPrefix(line, "Goroutine ") && strings.Contains(line, " in state ") {
			n++
		}
	}
	return max(n, 1)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// runClient runs the loop and closes everything it opened.
func runClient(ctx context.Context, cfg ClientConfig, rec *Recorder) error {
	client, err := openRedis(cfg.Redis, cfg.NoRetries)
	if err != nil {
		return err
	}
	defer client.Close()
	var locker mutex.Locker
	switch cfg.Lock {
	case "real":
		m, err := mutex.New(client, mutex.Config{Prefix: "chaos", TTL: cfg.TTL, FIFO: cfg.FIFO, Replicas: cfg.Replicas})
		if err != nil {
			return err
		}
		defer m.Close()
		locker = m
		if cfg.AutoExtend {
			locker = middleware.Chain(m, middleware.AutoExtend())
		}
	case "broken":
		locker = NewBrokenLocker(client, "chaos", cfg.TTL)
	default:
		return fmt.Errorf("unknown lock %q", cfg.Lock)
	}
	w := NewStoreWriter(cfg.Store)
	defer w.client.CloseIdleConnections()
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(cfg.ID)))
	pid := os.Getpid()
	ctx, cancel := context.WithDeadline(ctx, cfg.End)
	defer cancel()
	for ctx.Err() == nil {
		keys := pickKeys(rng, cfg.MultiKey)
		pause := time.Duration(0)
		if cfg.PauseHolders && rng.IntN(5) == 0 {
			pause = cfg.TTL * 3 / 2
		}
		hold := cfg.TTL / 10
		if cfg.LongHold {
			hold = cfg.TTL / 2
		}
		cycle(ctx, rec, locker, w, rng, keys, cfg.TTL, hold, pid, pause)
	}
	return nil
}

// openRedis opens the client of url with redisurl (go-redis' default
// options and ContextTimeoutEnabled), with MaxRetries -1 if noRetries.
func openRedis(url string, noRetries bool) (redis.UniversalClient, error) {
	if noRetries {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		url += sep + "max_retries=-1"
	}
	return redisurl.Open(url)
}

// pickKeys returns the keys of one Lock: the hot key (70%), the hot key
// and a cold key (20%; the hot key alone unless multiKey), a cold key
// (10%).
func pickKeys(rng *rand.Rand, multiKey bool) []string {
	switch r := rng.IntN(10); {
	case r < 7:
		return []string{HotKey}
	case r < 9:
		if !multiKey {
			return []string{HotKey}
		}
		return []string{HotKey, coldKeys[rng.IntN(len(coldKeys))]}
	}
	return []string{coldKeys[rng.IntN(len(coldKeys))]}
}

// cycle is one Lock, check, write, check, Unlock.
func cycle(ctx context.Context, rec *Recorder, locker mutex.Locker, w *StoreWriter, rng *rand.Rand, keys []string, ttl, hold time.Duration, pid int, pause time.Duration) {
	lctx, lcancel := context.WithTimeout(ctx, 4*ttl)
	rec.Record(Event{Op: OpLock, Type: TypeInvoke, Keys: keys})
	lease, err := locker.Lock(lctx, keys...)
	lcancel()
	if err != nil {
		typ := TypeUnknown
		if errors.Is(err, mutex.ErrNotObtained) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			typ = TypeFail
		}
		rec.Record(Event{Op: OpLock, Type: typ, Keys: keys, Err: err.Error()})
		return
	}
	base := Event{Keys: keys, Fence: lease.Fence(), Token: lease.Token(), Deadline: deadlineOf(lease)}
	ev := func(op, typ string, err error) {
		e := base
		e.Op, e.Type = op, typ
		if err != nil {
			e.Err = err.Error()
		}
		if op == OpLock {
			for _, k := range keys {
				e.KeyFences = append(e.KeyFences, lease.FenceOf(k))
			}
		}
		rec.Record(e)
	}
	ev(OpLock, TypeOK, nil)
	stopWatch := watchDone(rec, lease, base)
	defer stopWatch()
	// check takes the time before asking the lease, so a pause between the
	// two can only shorten the recorded belief, never extend it.
	check := func() bool {
		e := base
		e.Op, e.T = OpCheck, time.Now().UnixNano()
		err := lease.Err()
		e.Deadline = deadlineOf(lease)
		e.Type = TypeOK
		if err != nil {
			e.Type, e.Err = TypeFail, err.Error()
		}
		rec.Record(e)
		return err == nil
	}
	if check() {
		sleepUpTo(rng, ttl/10)
		time.Sleep(pause)
		for _, k := range keys {
			e := base
			e.Op, e.Keys, e.Fence = OpWrite, []string{k}, lease.FenceOf(k)
			e.Type, e.Deadline = TypeInvoke, deadlineOf(lease)
			rec.Record(e)
			wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			err := w.Write(wctx, k, lease.FenceOf(k), lease.Token(), pid)
			wcancel()
			e.T = 0
			switch {
			case err == nil:
				e.Type = TypeOK
			case errors.Is(err, ErrRejected):
				e.Type, e.Err = TypeFail, err.Error()
			default:
				e.Type, e.Err = TypeUnknown, err.Error()
			}
			rec.Record(e)
		}
		sleepUpTo(rng, hold)
		check()
	}
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 2*ttl)
	ev(OpUnlock, TypeInvoke, nil)
	err = lease.Unlock(uctx)
	ucancel()
	stopWatch()
	switch {
	case err == nil:
		ev(OpUnlock, TypeOK, nil)
	case errors.Is(err, mutex.ErrNotHeld) || errors.Is(err, mutex.ErrReleased):
		ev(OpUnlock, TypeFail, err)
	default:
		ev(OpUnlock, TypeUnknown, err)
	}
}

// deadlineOf returns mutex.Deadline of lease in Unix nanoseconds, or 0.
func deadlineOf(lease mutex.Lease) int64 {
	if d, ok := mutex.Deadline(lease); ok {
		return d.UnixNano()
	}
	return 0
}

// watchDone records an OpDone event when lease's Done channel closes,
// unless by its own Unlock, until the returned function is called; that
// function waits for the watching goroutine and may be called again.
func watchDone(rec *Recorder, lease mutex.Lease, base Event) (stop func()) {
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case <-lease.Done():
			e := base
			e.Op, e.Type, e.T = OpDone, TypeOK, time.Now().UnixNano()
			err := lease.Err()
			if errors.Is(err, mutex.ErrReleased) {
				return
			}
			e.Deadline = deadlineOf(lease)
			if err != nil {
				e.Err = err.Error()
			}
			rec.Record(e)
		case <-quit:
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-finished
	}
}

func sleepUpTo(rng *rand.Rand, d time.Duration) {
	if d > 0 {
		time.Sleep(time.Duration(rng.Int64N(int64(d))))
	}
}
