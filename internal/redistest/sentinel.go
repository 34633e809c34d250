package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// sentinelMaster is the name the sentinels monitor the primary under.
	sentinelMaster = "redistest"
	// sentinelCount is the number of sentinels; sentinelQuorum of them
	// must agree that the primary is down.
	sentinelCount  = 3
	sentinelQuorum = 2
	// sentinelWait bounds the waits for the deployment to settle.
	sentinelWait = 30 * time.Second
)

// Sentinel is a Redis Sentinel deployment run for tests: a primary, a
// replica, and three sentinels monitoring them with a quorum of two.
type Sentinel struct {
	sentinels []*Server

	mu               sync.Mutex
	primary, replica *Server
	admins           admins // connections for the harness' own commands
}

// StartSentinel starts a primary, a replica of it, and three sentinels
// (redis-server --sentinel) on free 127.0.0.1 ports, and waits until the
// replica is in sync and every sentinel knows the replica and the other
// two sentinels. The sentinels consider the primary down after one second
// without an answer. opts apply to the primary and the replica (WithPort
// is refused). Everything is stopped when the test and its subtests
// complete. If redis-server cannot be found or the deployment does not
// come up, StartSentinel calls t.Fatal.
func StartSentinel(t testing.TB, opts ...Option) *Sentinel {
	t.Helper()
	s, err := newSentinel(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err.Error())
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("redistest: stopping the sentinel deployment: %v", err)
		}
	})
	return s
}

func newSentinel(dir string, opts []Option) (*Sentinel, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.port != 0 {
		return nil, errors.New("redistest: WithPort cannot be used for a sentinel deployment")
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	s := &Sentinel{}
	subdir := func(name string) (string, error) {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("redistest: %w", err)
		}
		return d, nil
	}
	fail := func(err error) (*Sentinel, error) { return nil, errors.Join(err, s.stop()) }

	pdir, err := subdir("primary")
	if err != nil {
		return nil, err
	}
	s.primary, err = newServer(bin, pdir, append([]Option{WithArgs("--repl-diskless-sync-delay", "0")}, opts...))
	if err != nil {
		return nil, err
	}
	rdir, err := subdir("replica")
	if err != nil {
		return fail(err)
	}
	s.replica, err = newServer(bin, rdir, append([]Option{WithArgs(
		"--repl-diskless-sync-delay", "0",
		"--replicaof", "127.0.0.1", strconv.Itoa(s.primary.Port()),
	)}, opts...))
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sentinelWait)
	defer cancel()
	// The sentinels learn of the replica from the primary's INFO, asked
	// at once when they connect and then only every ten seconds.
	if err := s.waitFor(ctx, func() error { return s.inSync(ctx, s.replica, s.primary) }); err != nil {
		return fail(err)
	}

	conf := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d %[3]d\n"+
		"sentinel down-after-milliseconds %[1]s 1000\n"+
		"sentinel failover-timeout %[1]s 5000\n"+
		"sentinel parallel-syncs %[1]s 1\n",
		sentinelMaster, s.primary.Port(), sentinelQuorum)
	s.sentinels = make([]*Server, sentinelCount)
	errs := make([]error, sentinelCount)
	var wg sync.WaitGroup
	for i := range s.sentinels {
		wg.Go(func() {
			sdir, err := subdir("sentinel" + strconv.Itoa(i))
			if err != nil {
				errs[i] = err
				return
			}
			path := filepath.Join(sdir, "sentinel.conf")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				errs[i] = fmt.Errorf("redistest: %w", err)
				return
			}
			s.sentinels[i], errs[i] = newServer(bin, sdir, []Option{
				func(o *options) { o.conf = path },
				WithArgs("--sentinel"),
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	if err := s.waitFor(ctx, func() error { return s.settled(ctx) }); err != nil {
		return fail(err)
	}
	return s, nil
}

// MasterName returns the name the sentinels monitor the primary under.
func (s *Sentinel) MasterName() string { return sentinelMaster }

// SentinelAddrs returns the addresses of the three sentinels.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		addrs[i] = sn.Addr()
	}
	return addrs
}

// Sentinels returns the three sentinel processes.
func (s *Sentinel) Sentinels() []*Server {
	return append([]*Server(nil), s.sentinels...)
}

// Primary returns the data server that is the primary now. After a
// failover it is the former replica.
func (s *Sentinel) Primary() *Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primary
}

// Replica returns the other data server: the replica, or after KillPrimary
// the killed former primary until RestartOld brings it back as a replica.
func (s *Sentinel) Replica() *Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replica
}

// FailoverClient returns a new go-redis failover client
// (redis.NewFailoverClient) that finds the primary through the sentinels,
// closed when the test completes. Apart from MasterName and SentinelAddrs
// it uses go-redis defaults, changed by mods in order.
func (s *Sentinel) FailoverClient(t testing.TB, mods ...func(*redis.FailoverOptions)) *redis.Client {
	t.Helper()
	opt := &redis.FailoverOptions{MasterName: sentinelMaster, SentinelAddrs: s.SentinelAddrs()}
	for _, mod := range mods {
		mod(opt)
	}
	c := redis.NewFailoverClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// KillPrimary kills (SIGKILL) the primary and waits until every sentinel
// names the replica as the primary (SENTINEL GET-MASTER-ADDR-BY-NAME) and
// the replica has taken the role. It returns the time from the kill to
// then. Afterwards Primary is the promoted replica and Replica the killed
// server, which stays down until RestartOld.
func (s *Sentinel) KillPrimary(t testing.TB) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), sentinelWait)
	defer cancel()
	old, next := s.Primary(), s.Replica()
	if !next.running() {
		t.Fatal("redistest: the replica is down; call RestartOld first")
	}
	old.Kill(t)
	start := time.Now()
	if err := s.waitFor(ctx, func() error { return s.promoted(ctx, next) }); err != nil {
		t.Fatal(err.Error())
	}
	took := time.Since(start)
	s.mu.Lock()
	s.primary, s.replica = next, old
	s.mu.Unlock()
	return took
}

// RestartOld starts the server killed by KillPrimary again, empty, on its
// port, makes it a replica of the current primary, and waits until it is
// in sync and every sentinel sees it as a healthy replica. It does nothing
// if the replica is running.
func (s *Sentinel) RestartOld(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), sentinelWait)
	defer cancel()
	primary, old := s.Primary(), s.Replica()
	if old.running() {
		return
	}
	old.Restart(t)
	// Sentinels would turn the returning server into a replica only after
	// it has reported itself a primary for several seconds.
	if err := s.admin(old).ReplicaOf(ctx, "127.0.0.1", strconv.Itoa(primary.Port())).Err(); err != nil {
		t.Fatalf("redistest: REPLICAOF on %s: %v", old.Addr(), err)
	}
	if err := s.settle(ctx, old, primary); err != nil {
		t.Fatal(err.Error())
	}
}

// Failover makes the replica the primary with SENTINEL FAILOVER (which does
// not wait for the replica to catch up, nor for other sentinels to agree),
// and waits until every sentinel names the replica as the primary. It then
// makes the former primary a replica of the new one (REPLICAOF, sooner than
// the sentinels would) and waits until it is in sync and every sentinel
// sees the new layout. It returns the time until every sentinel named the
// new primary.
func (s *Sentinel) Failover(t testing.TB) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), sentinelWait)
	defer cancel()
	if err := s.waitFor(ctx, func() error { return s.settled(ctx) }); err != nil {
		t.Fatal(err.Error())
	}
	old, next := s.Primary(), s.Replica()
	start := time.Now()
	if err := s.admin(s.sentinels[0]).Do(ctx, "SENTINEL", "FAILOVER", sentinelMaster).Err(); err != nil {
		t.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
	if err := s.waitFor(ctx, func() error { return s.promoted(ctx, next) }); err != nil {
		t.Fatal(err.Error())
	}
	took := time.Since(start)
	s.mu.Lock()
	s.primary, s.replica = next, old
	s.mu.Unlock()
	// The sentinels would turn the former primary into a replica only
	// after it has reported itself a primary for several seconds.
	if err := s.admin(old).ReplicaOf(ctx, "127.0.0.1", strconv.Itoa(next.Port())).Err(); err != nil {
		t.Fatalf("redistest: REPLICAOF on %s: %v", old.Addr(), err)
	}
	if err := s.settle(ctx, old, next); err != nil {
		t.Fatal(err.Error())
	}
	return took
}

// Stop stops the sentinels and the data servers and waits for them to exit.
func (s *Sentinel) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Errorf("redistest: stopping the sentinel deployment: %v", err)
	}
}

func (s *Sentinel) stop() error {
	s.mu.Lock()
	servers := append([]*Server{s.primary, s.replica}, s.sentinels...)
	s.mu.Unlock()
	return errors.Join(s.admins.closeAll(), stopServers(servers))
}

func (s *Sentinel) admin(sv *Server) *redis.Client { return s.admins.of(sv) }

func (s *Sentinel) waitFor(ctx context.Context, cond func() error) error {
	return waitUntil(ctx, "sentinel deployment", cond)
}

// inSync reports why replica is not in sync with primary.
func (s *Sentinel) inSync(ctx context.Context, replica, primary *Server) error {
	info, err := s.admin(replica).Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("redistest: INFO replication on %s: %w", replica.Addr(), err)
	}
	f := infoFields(info)
	if f["role"] != "slave" || f["master_port"] != strconv.Itoa(primary.Port()) || f["master_link_status"] != "up" {
		return fmt.Errorf("redistest: %s is not in sync with %s: role %s, primary port %s, link %s",
			replica.Addr(), primary.Addr(), f["role"], f["master_port"], f["master_link_status"])
	}
	return nil
}

// promoted reports why not every sentinel names next as the primary, or
// why next does not act as one yet.
func (s *Sentinel) promoted(ctx context.Context, next *Server) error {
	for _, sn := range s.sentinels {
		addr, err := s.admin(sn).Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinelMaster).StringSlice()
		if err != nil {
			return fmt.Errorf("redistest: SENTINEL GET-MASTER-ADDR-BY-NAME on %s: %w", sn.Addr(), err)
		}
		if len(addr) != 2 || addr[1] != strconv.Itoa(next.Port()) {
			return fmt.Errorf("redistest: sentinel %s names %v as the primary, not %s", sn.Addr(), addr, next.Addr())
		}
	}
	info, err := s.admin(next).Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("redistest: INFO replication on %s: %w", next.Addr(), err)
	}
	if role := infoFields(info)["role"]; role != "master" {
		return fmt.Errorf("redistest: %s has role %s", next.Addr(), role)
	}
	return nil
}

// settled reports why the deployment is not in its resting state: the
// replica in sync with the primary, and every sentinel naming the primary,
// seeing it and the replica up, and knowing the other sentinels.
func (s *Sentinel) settled(ctx context.Context) error {
	primary, replica := s.Primary(), s.Replica()
	if err := s.inSync(ctx, replica, primary); err != nil {
		return err
	}
	for _, sn := range s.sentinels {
		a := s.admin(sn)
		m, err := sentinelMap(a.Do(ctx, "SENTINEL", "MASTER", sentinelMaster))
		if err != nil {
			return fmt.Errorf("redistest: SENTINEL MASTER on %s: %w", sn.Addr(), err)
		}
		if m["port"] != strconv.Itoa(primary.Port()) || m["flags"] != "master" ||
			m["num-slaves"] != "1" || m["num-other-sentinels"] != strconv.Itoa(sentinelCount-1) {
			return fmt.Errorf("redistest: sentinel %s sees primary port %s, flags %s, %s replicas, %s other sentinels",
				sn.Addr(), m["port"], m["flags"], m["num-slaves"], m["num-other-sentinels"])
		}
		replicas, err := a.Do(ctx, "SENTINEL", "REPLICAS", sentinelMaster).Slice()
		if err != nil {
			return fmt.Errorf("redistest: SENTINEL REPLICAS on %s: %w", sn.Addr(), err)
		}
		for _, r := range replicas {
			rm, err := sentinelMap(redis.NewCmdResult(r, nil))
			if err != nil {
				return err
			}
			// What a sentinel knows of the replica's own replication
			// comes from INFO, asked every ten seconds: the replica's
			// sync is checked on the replica itself instead.
			if rm["port"] != strconv.Itoa(replica.Port()) || rm["flags"] != "slave" {
				return fmt.Errorf("redistest: sentinel %s sees replica port %s, flags %s",
					sn.Addr(), rm["port"], rm["flags"])
			}
		}
	}
	return nil
}

// sentinelMap turns a flat field-value reply into a map.
func sentinelMap(cmd *redis.Cmd) (map[string]string, error) {
	switch v := cmd.Val().(type) {
	case map[any]any:
		m := make(map[string]string, len(v))
		for k, val := range v {
			m[fmt.Sprint(k)] = fmt.Sprint(val)
		}
		return m, cmd.Err()
	case []any:
		if len(v)%2 != 0 {
			return nil, fmt.Errorf("redistest: odd-length reply %v", v)
		}
		m := make(map[string]string, len(v)/2)
		for i := 0; i < len(v); i += 2 {
			m[fmt.Sprint(v[i])] = fmt.Sprint(v[i+1])
		}
		return m, cmd.Err()
	}
	if err := cmd.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("redistest: unexpected reply %v", cmd.Val())
}

// infoFields parses INFO output into its fields.
func infoFields(info string) map[string]string {
	m := make(map[string]string)
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// SharedSentinel returns a Sentinel deployment started on first use and
// reused by every test of the package, which saves starting one per test.
// Tests sharing it must use their own keys and must not stop, kill, pause
// or fail over its servers (use StartSentinel for that). It is stopped and
// its directories removed by Main. Servers found not running are started
// again: a primary that is down is replaced by its replica first.
func SharedSentinel(t testing.TB) *Sentinel {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if s := shared.sentinel; s != nil {
		if err := s.heal(t.Context()); err != nil {
			t.Fatal(err.Error())
		}
		return s
	}
	dir, err := os.MkdirTemp("", "redistest-sentinel-")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s, err := newSentinel(dir, nil)
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatal(err.Error())
	}
	shared.sentinel = s
	shared.stops = append(shared.stops, func() error {
		return errors.Join(s.stop(), os.RemoveAll(dir))
	})
	return s
}

// heal starts again the sentinels that are not running and, if a data
// server is down, waits for the other to be the primary and starts the
// one that is down again as its replica; then it waits until the
// deployment is settled.
func (s *Sentinel) heal(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sentinelWait)
	defer cancel()
	for _, sn := range s.sentinels {
		if err := restart(sn); err != nil {
			return err
		}
	}
	primary, replica := s.Primary(), s.Replica()
	if !primary.running() {
		if !replica.running() {
			return errors.New("redistest: both data servers of the sentinel deployment are down")
		}
		if err := s.waitFor(ctx, func() error { return s.promoted(ctx, replica) }); err != nil {
			return err
		}
		s.mu.Lock()
		s.primary, s.replica = replica, primary
		s.mu.Unlock()
		primary, replica = replica, primary
	}
	if !replica.running() {
		if err := restart(replica); err != nil {
			return err
		}
		if err := s.admin(replica).ReplicaOf(ctx, "127.0.0.1", strconv.Itoa(primary.Port())).Err(); err != nil {
			return fmt.Errorf("redistest: REPLICAOF on %s: %w", replica.Addr(), err)
		}
	}
	return s.settle(ctx, replica, primary)
}

// settle waits until the deployment is settled, with replica a replica of
// primary. A server that reports itself a primary meanwhile (a sentinel
// that had not yet heard of the last failover can reconfigure it) is
// pointed at primary again.
func (s *Sentinel) settle(ctx context.Context, replica, primary *Server) error {
	return s.waitFor(ctx, func() error {
		err := s.settled(ctx)
		if err != nil {
			if info, ierr := s.admin(replica).Info(ctx, "replication").Result(); ierr == nil && infoFields(info)["role"] == "master" {
				_ = s.admin(replica).ReplicaOf(ctx, "127.0.0.1", strconv.Itoa(primary.Port())).Err()
			}
		}
		return err
	})
}

// restart starts sv again on its port if it is not running.
func restart(sv *Server) error {
	if sv.running() {
		return nil
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	err := sv.stopLocked()
	if err == nil {
		err = sv.startLocked(false)
	}
	return err
}
