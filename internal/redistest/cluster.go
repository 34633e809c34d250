package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	cliInstallHint = "install it with: sudo apt-get install -y redis-tools, or set REDIS_CLI"

	// clusterShards is the number of primaries of a Cluster; each has one
	// replica.
	clusterShards = 3
	// clusterSlots is the number of hash slots of Redis Cluster.
	clusterSlots = 16384
	// clusterNodeTimeout is --cluster-node-timeout in milliseconds: short,
	// so that a node that dies is noticed quickly.
	clusterNodeTimeout = "1000"
	// clusterWait bounds the waits for a cluster to settle.
	clusterWait = 30 * time.Second
	// migrateBatch is how many keys one MIGRATE moves.
	migrateBatch = 100
)

// CLIBinary returns the path of redis-cli: $REDIS_CLI if set (a path, or a
// name looked up in PATH), else redis-cli looked up in PATH. If none is
// found, the error names the command that installs it and matches
// ErrNotFound.
func CLIBinary() (string, error) {
	if env := os.Getenv("REDIS_CLI"); env != "" {
		path, err := exec.LookPath(env)
		if err != nil {
			return "", &notFoundError{msg: fmt.Sprintf(
				"redistest: redis-cli not found at REDIS_CLI=%q: %v (%s)", env, err, cliInstallHint)}
		}
		return path, nil
	}
	path, err := exec.LookPath("redis-cli")
	if err != nil {
		return "", &notFoundError{msg: "redistest: redis-cli not found in PATH (" + cliInstallHint + ")"}
	}
	return path, nil
}

// Slot returns the Redis Cluster hash slot of key: CRC16 of the key, or of
// its hash tag (the part between the first "{" and the next "}", if not
// empty), modulo 16384.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
}

// Cluster is a Redis Cluster of three primaries with one replica each, six
// redis-server processes run for tests.
type Cluster struct {
	cli   string
	nodes []*Server

	admins admins // connections for the harness' own commands
}

// StartCluster starts a Redis Cluster of three primaries and three
// replicas on free 127.0.0.1 ports, creates it with redis-cli --cluster
// create, and waits until every node reports cluster_state:ok, agrees on
// the slot map, and every replica is in sync with its primary. The nodes
// run with a cluster node timeout of one second and without persistence;
// opts apply to every node (WithPort is refused). The cluster is stopped
// when the test and its subtests complete. If redis-server or redis-cli
// cannot be found, or the cluster does not come up, StartCluster calls
// t.Fatal.
func StartCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	c, err := newCluster(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err.Error())
	}
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Errorf("redistest: stopping the cluster: %v", err)
		}
	})
	return c
}

func newCluster(dir string, opts []Option) (*Cluster, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.port != 0 {
		return nil, errors.New("redistest: WithPort cannot be used for a cluster")
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	cli, err := CLIBinary()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cli:   cli,
		nodes: make([]*Server, 2*clusterShards),
	}
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Go(func() {
			ndir := filepath.Join(dir, "node"+strconv.Itoa(i))
			if err := os.MkdirAll(ndir, 0o755); err != nil {
				errs[i] = fmt.Errorf("redistest: %w", err)
				return
			}
			nopts := append([]Option{WithArgs(
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(ndir, "nodes.conf"),
				"--cluster-node-timeout", clusterNodeTimeout,
				"--cluster-allow-replica-migration", "no",
				"--repl-diskless-sync-delay", "0",
			)}, opts...)
			c.nodes[i], errs[i] = newServer(bin, ndir, nopts)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, errors.Join(err, c.stop())
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	if err := c.create(ctx); err != nil {
		return nil, errors.Join(err, c.stop())
	}
	if err := c.waitHealthy(ctx); err != nil {
		return nil, errors.Join(err, c.stop())
	}
	return c, nil
}

// create runs redis-cli --cluster create on the nodes.
func (c *Cluster) create(ctx context.Context) error {
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	cmd := exec.CommandContext(ctx, c.cli, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("redistest: %s %s: %w\n%s", c.cli, quoteArgs(args), err, out.String())
	}
	return nil
}

// Addrs returns the addresses of the six nodes, primaries and replicas
// alike, in a fixed order that does not follow their roles.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Nodes returns the six nodes, in the order of Addrs.
func (c *Cluster) Nodes() []*Server { return slices.Clone(c.nodes) }

// URL returns a redis:// URL naming every node, in the form read by
// redis.ParseClusterURL ("redis://HOST:PORT?addr=HOST:PORT&addr=...").
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	return "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
}

// Client returns a new go-redis cluster client seeded with every node,
// closed when the test completes. Apart from Addrs it uses go-redis
// defaults, changed by mods in order.
func (c *Cluster) Client(t testing.TB, mods ...func(*redis.ClusterOptions)) *redis.ClusterClient {
	t.Helper()
	opt := &redis.ClusterOptions{Addrs: c.Addrs()}
	for _, mod := range mods {
		mod(opt)
	}
	cc := redis.NewClusterClient(opt)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Primaries returns the nodes that are primaries now, ordered by the
// first slot they serve.
func (c *Cluster) Primaries(t testing.TB) []*Server {
	t.Helper()
	view, err := c.view(t.Context())
	if err != nil {
		t.Fatal(err.Error())
	}
	var ps []clusterNode
	for _, n := range view {
		if n.primary && len(n.slots) > 0 {
			ps = append(ps, n)
		}
	}
	slices.SortFunc(ps, func(a, b clusterNode) int { return a.slots[0][0] - b.slots[0][0] })
	servers := make([]*Server, len(ps))
	for i, n := range ps {
		servers[i] = c.server(n.addr)
	}
	return servers
}

// PrimaryFor returns the primary that serves the slot of key.
func (c *Cluster) PrimaryFor(t testing.TB, key string) *Server {
	t.Helper()
	p, _ := c.shard(t, Slot(key))
	return p
}

// ReplicaFor returns the replica of the primary that serves the slot of
// key.
func (c *Cluster) ReplicaFor(t testing.TB, key string) *Server {
	t.Helper()
	_, r := c.shard(t, Slot(key))
	return r
}

// shard returns the primary serving slot and its replica.
func (c *Cluster) shard(t testing.TB, slot int) (primary, replica *Server) {
	t.Helper()
	view, err := c.view(t.Context())
	if err != nil {
		t.Fatal(err.Error())
	}
	p, r, err := shardOf(view, slot)
	if err != nil {
		t.Fatal(err.Error())
	}
	return c.server(p.addr), c.server(r.addr)
}

func shardOf(view []clusterNode, slot int) (primary, replica clusterNode, err error) {
	for _, n := range view {
		if n.primary && n.serves(slot) {
			primary = n
		}
	}
	if primary.id == "" {
		return primary, replica, fmt.Errorf("redistest: no primary serves slot %d", slot)
	}
	for _, n := range view {
		if !n.primary && n.primaryID == primary.id {
			return primary, n, nil
		}
	}
	return primary, replica, fmt.Errorf("redistest: the primary of slot %d (%s) has no replica", slot, primary.addr)
}

// Failover makes the replica of the shard serving key's slot its primary
// with a graceful CLUSTER FAILOVER (the replica catches up with the
// primary, which stops taking writes meanwhile, so no acknowledged write
// is lost), and waits until the two nodes have swapped roles and the
// cluster is healthy again in every node's view. It returns how long the
// failover took.
func (c *Cluster) Failover(t testing.TB, key string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clusterWait)
	defer cancel()
	slot := Slot(key)
	if err := c.waitHealthy(ctx); err != nil {
		t.Fatal(err.Error())
	}
	_, replica := c.shard(t, slot)
	start := time.Now()
	if err := c.admin(replica).Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatalf("redistest: CLUSTER FAILOVER on %s: %v", replica.Addr(), err)
	}
	if err := c.waitOwner(ctx, slot, replica, true); err != nil {
		t.Fatal(err.Error())
	}
	return time.Since(start)
}

// KillPrimary kills (SIGKILL) the primary serving key's slot, makes its
// replica take over at once with CLUSTER FAILOVER FORCE (writes the
// replica had not received are lost, as in a real crash), and waits until
// the surviving nodes agree on the new primary and report cluster_state:ok.
// It then restarts the killed node, empty, on its port; the node rejoins
// as a replica of the new primary, and KillPrimary waits until the cluster
// is whole and healthy again. It returns the time from the kill to the
// cluster being usable with the promoted replica (before the restart).
func (c *Cluster) KillPrimary(t testing.TB, key string) time.Duration {
	t.Helper()
	_, took := c.KillPrimaryAt(t, key, false)
	return took
}

// Heal starts again every node that was stopped or killed (each rejoins
// with its former identity, empty) and waits until the cluster is whole
// and healthy.
func (c *Cluster) Heal(t testing.TB) {
	t.Helper()
	if err := c.heal(t.Context()); err != nil {
		t.Fatal(err.Error())
	}
}

func (c *Cluster) heal(ctx context.Context) error {
	for _, s := range c.nodes {
		if err := restart(s); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, clusterWait)
	defer cancel()
	return c.waitHealthy(ctx)
}

// MigrateSlot moves slot, with its keys, to the primary to, the way
// redis-cli --cluster reshard does: the slot is marked IMPORTING on to and
// MIGRATING on its current primary, its keys are moved in batches with
// MIGRATE (clients are redirected with ASK meanwhile), and then every
// primary is told the slot's new owner with CLUSTER SETSLOT NODE. It waits
// until every node agrees on the new owner. Clients may keep using the slot
// throughout. Moving a slot to the primary that serves it does nothing.
func (c *Cluster) MigrateSlot(t testing.TB, slot int, to *Server) {
	t.Helper()
	if err := c.migrateSlot(t.Context(), slot, to); err != nil {
		t.Fatal(err.Error())
	}
}

func (c *Cluster) migrateSlot(ctx context.Context, slot int, to *Server) error {
	if slot < 0 || slot >= clusterSlots {
		return fmt.Errorf("redistest: slot %d out of range", slot)
	}
	ctx, cancel := context.WithTimeout(ctx, clusterWait)
	defer cancel()
	if err := c.waitHealthy(ctx); err != nil {
		return err
	}
	view, err := c.view(ctx)
	if err != nil {
		return err
	}
	src, _, err := shardOf(view, slot)
	if err != nil {
		return err
	}
	var dst clusterNode
	for _, n := range view {
		if n.addr == to.Addr() {
			dst = n
		}
	}
	switch {
	case dst.id == "":
		return fmt.Errorf("redistest: %s is not a node of the cluster", to.Addr())
	case !dst.primary:
		return fmt.Errorf("redistest: cannot move slot %d to %s, a replica", slot, to.Addr())
	case dst.id == src.id:
		return nil
	}
	from := c.server(src.addr)
	steps := []struct {
		s    *Server
		args []any
	}{
		{to, []any{"CLUSTER", "SETSLOT", slot, "IMPORTING", src.id}},
		{from, []any{"CLUSTER", "SETSLOT", slot, "MIGRATING", dst.id}},
	}
	for _, st := range steps {
		if err := c.admin(st.s).Do(ctx, st.args...).Err(); err != nil {
			return fmt.Errorf("redistest: %v on %s: %w", st.args, st.s.Addr(), err)
		}
	}
	for {
		keys, err := c.admin(from).ClusterGetKeysInSlot(ctx, slot, migrateBatch).Result()
		if err != nil {
			return fmt.Errorf("redistest: CLUSTER GETKEYSINSLOT on %s: %w", from.Addr(), err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", to.Port(), "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		// The reply is NOKEY when the keys were deleted meanwhile.
		if err := c.admin(from).Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("redistest: MIGRATE of slot %d from %s to %s: %w", slot, from.Addr(), to.Addr(), err)
		}
	}
	// The new owner first, then the old one, then everyone else.
	owners := []*Server{to, from}
	for _, n := range view {
		if n.primary && n.id != src.id && n.id != dst.id {
			owners = append(owners, c.server(n.addr))
		}
	}
	for _, s := range owners {
		if err := c.admin(s).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dst.id).Err(); err != nil {
			return fmt.Errorf("redistest: CLUSTER SETSLOT %d NODE on %s: %w", slot, s.Addr(), err)
		}
	}
	return c.waitOwner(ctx, slot, to, true)
}

// Stop stops every node and waits for them to exit.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := c.stop(); err != nil {
		t.Errorf("redistest: stopping the cluster: %v", err)
	}
}

func (c *Cluster) stop() error {
	return errors.Join(c.admins.closeAll(), stopServers(c.nodes))
}

// admin returns the harness' own client of node s.
func (c *Cluster) admin(s *Server) *redis.Client { return c.admins.of(s) }

func (c *Cluster) server(addr string) *Server {
	for _, s := range c.nodes {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// clusterNode is a line of CLUSTER NODES.
type clusterNode struct {
	id, addr  string
	myself    bool
	primary   bool
	primaryID string // of a replica
	failing   bool   // flagged fail or fail?
	connected bool
	slots     [][2]int // ranges served, first and last slot
}

func (n clusterNode) serves(slot int) bool {
	for _, r := range n.slots {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

// parseClusterNodes parses the reply of CLUSTER NODES, lines like
// "<id> 127.0.0.1:7000@17000[,hostname] myself,master - 0 0 1 connected 0-5460 [42->-<id>]".
func parseClusterNodes(reply string) ([]clusterNode, error) {
	var nodes []clusterNode
	for line := range strings.Lines(reply) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			return nil, fmt.Errorf("redistest: bad CLUSTER NODES line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := clusterNode{id: f[0], addr: addr, connected: f[7] == "connected"}
		for flag := range strings.SplitSeq(f[2], ",") {
			switch flag {
			case "myself":
				n.myself = true
			case "master":
				n.primary = true
			case "fail", "fail?":
				n.failing = true
			}
		}
		if f[3] != "-" {
			n.primaryID = f[3]
		}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue // a slot being imported or migrated
			}
			first, last, isRange := strings.Cut(s, "-")
			if !isRange {
				last = first
			}
			a, err1 := strconv.Atoi(first)
			b, err2 := strconv.Atoi(last)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("redistest: bad slots %q in CLUSTER NODES line %q", s, line)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// nodesOf returns CLUSTER NODES as seen by s.
func (c *Cluster) nodesOf(ctx context.Context, s *Server) ([]clusterNode, error) {
	reply, err := c.admin(s).ClusterNodes(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("redistest: CLUSTER NODES on %s: %w", s.Addr(), err)
	}
	return parseClusterNodes(reply)
}

// view returns the cluster as seen by the first running node that answers.
func (c *Cluster) view(ctx context.Context) ([]clusterNode, error) {
	var errs []error
	for _, s := range c.nodes {
		if !s.running() {
			continue
		}
		v, err := c.nodesOf(ctx, s)
		if err == nil {
			return v, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, errors.New("redistest: no cluster node is running")
	}
	return nil, errors.Join(errs...)
}

// waitHealthy waits until the cluster is whole and healthy (see healthy).
func (c *Cluster) waitHealthy(ctx context.Context) error {
	return c.waitFor(ctx, func() error { return c.healthy(ctx, true) })
}

// waitOwner waits until every running node sees s as the primary serving
// slot and the cluster is healthy; whole means all six nodes must be
// running and in place (see healthy).
func (c *Cluster) waitOwner(ctx context.Context, slot int, s *Server, whole bool) error {
	return c.waitFor(ctx, func() error {
		if err := c.healthy(ctx, whole); err != nil {
			return err
		}
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			view, err := c.nodesOf(ctx, n)
			if err != nil {
				return err
			}
			p, _, err := shardOf(view, slot)
			if err != nil && whole {
				return err
			}
			if p.addr != s.Addr() {
				return fmt.Errorf("redistest: %s sees %s as the primary of slot %d, not %s", n.Addr(), p.addr, slot, s.Addr())
			}
		}
		return nil
	})
}

func (c *Cluster) waitFor(ctx context.Context, cond func() error) error {
	return waitUntil(ctx, "cluster", cond)
}

// healthy reports why the cluster is not healthy: every running node must
// report cluster_state:ok with all slots served, and all running nodes
// must agree on the roles of the nodes and the slots of the primaries.
// If whole is set, all nodes must also be running, none flagged as
// failing, each primary must have one replica, and every replica must
// have a working link to its primary.
func (c *Cluster) healthy(ctx context.Context, whole bool) error {
	var ref string
	down := make(map[string]bool)
	for _, s := range c.nodes {
		if !s.running() {
			down[s.Addr()] = true
		}
	}
	for _, s := range c.nodes {
		if down[s.Addr()] {
			if whole {
				return fmt.Errorf("redistest: %s is not running", s.Addr())
			}
			continue
		}
		a := c.admin(s)
		info, err := a.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("redistest: CLUSTER INFO on %s: %w", s.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
			f := strings.Fields(info)
			return fmt.Errorf("redistest: CLUSTER INFO on %s: %s", s.Addr(), strings.Join(f[:min(4, len(f))], " "))
		}
		view, err := c.nodesOf(ctx, s)
		if err != nil {
			return err
		}
		if whole {
			if err := checkWhole(view); err != nil {
				return fmt.Errorf("%w in the view of %s", err, s.Addr())
			}
		}
		sig := signature(view, down)
		if ref == "" {
			ref = sig
		} else if sig != ref {
			return fmt.Errorf("redistest: nodes disagree on the cluster: %q and %q", ref, sig)
		}
		if whole {
			repl, err := a.Info(ctx, "replication").Result()
			if err != nil {
				return fmt.Errorf("redistest: INFO replication on %s: %w", s.Addr(), err)
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return fmt.Errorf("redistest: replica %s is not in sync with its primary", s.Addr())
			}
		}
	}
	return nil
}

// checkWhole reports why view is not that of a whole cluster.
func checkWhole(view []clusterNode) error {
	if len(view) != 2*clusterShards {
		return fmt.Errorf("redistest: %d nodes known", len(view))
	}
	replicas := make(map[string]int)
	for _, n := range view {
		switch {
		case n.failing:
			return fmt.Errorf("redistest: %s flagged as failing", n.addr)
		case !n.myself && !n.connected:
			return fmt.Errorf("redistest: %s not connected", n.addr)
		case !n.primary:
			replicas[n.primaryID]++
		}
	}
	for _, n := range view {
		if n.primary && (len(n.slots) == 0 || replicas[n.id] != 1) {
			return fmt.Errorf("redistest: primary %s has %d slot ranges and %d replicas", n.addr, len(n.slots), replicas[n.id])
		}
	}
	return nil
}

// signature sums up view for comparison with the views of other nodes:
// each node's role, primary, and slots. Nodes whose address is in down
// are left out.
func signature(view []clusterNode, down map[string]bool) string {
	lines := make([]string, 0, len(view))
	for _, n := range view {
		if down[n.addr] {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %s %t %s %v", n.id, n.addr, n.primary, n.primaryID, n.slots))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// SharedCluster returns a cluster started on first use and reused by every
// test of the package, which saves starting one per test. Tests sharing it
// must use their own keys and must not stop, kill, fail over or reshard it
// (use StartCluster for that). It is stopped and its directories removed by
// Main. Nodes found not running are started again.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if c := shared.cluster; c != nil {
		if err := c.heal(t.Context()); err != nil {
			t.Fatal(err.Error())
		}
		return c
	}
	dir, err := os.MkdirTemp("", "redistest-cluster-")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	c, err := newCluster(dir, nil)
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatal(err.Error())
	}
	shared.cluster = c
	shared.stops = append(shared.stops, func() error {
		return errors.Join(c.stop(), os.RemoveAll(dir))
	})
	return c
}
