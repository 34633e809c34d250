package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// Exit codes, as documented.
const (
	exitUsage       = 2
	exitNotObtained = 111
	exitLeaseLost   = 112
	exitNotFound    = 127
)

// cli is the distlock binary, built for the test.
type cli struct {
	bin string
	url string // the shared server's
}

// build builds distlock into a temporary directory of t, with the race
// detector when the tests have it.
func build(t *testing.T) cli {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "distlock")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return cli{bin: bin, url: redistest.Shared(t).URL()}
}

// result is the outcome of one distlock run.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// command returns a distlock command with args, without REDIS_URL in its
// environment.
func (c cli) command(args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.Command(c.bin, args...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "REDIS_URL=") || strings.HasPrefix(kv, "GORACE=")
	})
	// The race detector otherwise sleeps a second before a successful exit.
	cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// run runs distlock with args and waits for it, for at most 20s.
func (c cli) run(t *testing.T, args ...string) result {
	t.Helper()
	cmd, stdout, stderr := c.command(args...)
	require.NoError(t, cmd.Start())
	return wait(t, cmd, stdout, stderr, time.Now())
}

// wait waits for cmd, started at start, for at most 20s.
func wait(t *testing.T, cmd *exec.Cmd, stdout, stderr *bytes.Buffer, start time.Time) result {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("distlock %q did not end; stderr:\n%s", cmd.Args[1:], stderr)
	}
	r := result{code: 0, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		r.code = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	t.Logf("distlock %q: exit %d in %v\nstdout:\n%sstderr:\n%s", cmd.Args[1:], r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
	return r
}

// prefix returns a key prefix unique to the test.
func prefix(t testing.TB) string {
	return "cli:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
}

// newMutex returns a Mutex on client, closed at cleanup.
func newMutex(t testing.TB, client redis.UniversalClient, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	m, err := mutex.New(client, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// waitFor waits until the file at path contains s.
func waitFor(t *testing.T, path, s string) {
	t.Helper()
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), s)
	}, 10*time.Second, 5*time.Millisecond, "%s never contained %q", path, s)
}

// inspect returns the state of key.
func inspect(t *testing.T, m *mutex.Mutex, key string) mutex.KeyInfo {
	t.Helper()
	infos, err := m.Inspect(context.Background(), key)
	require.NoError(t, err)
	return infos[0]
}

// TestCLI builds distlock once and runs it in subtests.
func TestCLI(t *testing.T) {
	c := build(t)
	t.Run("usage", func(t *testing.T) { t.Parallel(); testUsage(t, c) })
	t.Run("run", func(t *testing.T) { t.Parallel(); testRun(t, c) })
	t.Run("status, list and unlock", func(t *testing.T) { t.Parallel(); testStatusListUnlock(t, c) })
	t.Run("demo", func(t *testing.T) { t.Parallel(); testDemo(t, c) })
}

func testUsage(t *testing.T, c cli) {
	// No Redis listens there: every error must come before any Redis call.
	nowhere := "redis://127.0.0.1:1"
	for _, args := range [][]string{
		{},
		{"nope"},
		{"run", "--redis", nowhere, "--", "true"},
		{"run", "--redis", nowhere, "--key", "k"},
		{"run", "--redis", nowhere, "--key", "k", "--wait", "-1s", "true"},
		{"run", "--redis", nowhere, "--key", "k", "--wait", "soon", "true"},
		{"run", "--redis", nowhere, "--key", "k", "--ttl", "1ms", "true"},
		{"run", "--redis", nowhere, "--key", "k", "--owner", "a\nb", "true"},
		{"run", "--redis", nowhere, "--key", strings.Repeat("k", mutex.MaxKeyLen+1), "true"},
		{"run", "--redis", "http://example.com", "--key", "k", "true"},
		{"status", "--redis", nowhere},
		{"status", "--redis", nowhere, "a", "a"},
		{"list", "--redis", nowhere, "a*", "b*"},
		{"unlock", "--redis", nowhere, "k"},
		{"unlock", "--redis", nowhere, "--force"},
		{"demo", "extra"},
	} {
		r := c.run(t, args...)
		assert.Equal(t, exitUsage, r.code, "%q", args)
		assert.NotEmpty(t, r.stderr, "%q", args)
		assert.NotContains(t, r.stderr, "panic", "%q", args)
	}
	r := c.run(t, "unlock", "--redis", nowhere, "k")
	assert.Contains(t, r.stderr, "without --force")
	assert.Equal(t, 0, c.run(t, "help").code)
	assert.Equal(t, 0, c.run(t, "run", "-h").code)
}

func testRun(t *testing.T, c cli) {
	client := redistest.Shared(t).Client(t)

	t.Run("exit code and environment", func(t *testing.T) {
		t.Parallel()
		p := prefix(t)
		r := c.run(t, "run", "--redis", c.url, "--prefix", p, "--key", "job:{1}",
			"--", "sh", "-c", `echo "key=$DISTLOCK_KEY fence=$DISTLOCK_FENCE"; exit 7`)
		assert.Equal(t, 7, r.code)
		assert.Regexp(t, `^key=job:\{1\} fence=[1-9][0-9]{15}\n$`, r.stdout)
		assert.False(t, inspect(t, newMutex(t, client, mutex.Config{Prefix: p}), "job:{1}").Held, "key left held")
	})

	t.Run("command not found", func(t *testing.T) {
		t.Parallel()
		p := prefix(t)
		r := c.run(t, "run", "--redis", c.url, "--prefix", p, "--key", "k", "--", "no-such-command-distlock")
		assert.Equal(t, exitNotFound, r.code)
		assert.False(t, inspect(t, newMutex(t, client, mutex.Config{Prefix: p}), "k").Held, "key left held")
	})

	t.Run("runs never overlap", func(t *testing.T) {
		t.Parallel()
		for _, mode := range []string{"plain", "fifo"} {
			log := filepath.Join(t.TempDir(), mode+".log")
			args := []string{"run", "--redis", c.url, "--prefix", prefix(t), "--key", "shared", "--wait", "20s"}
			if mode == "fifo" {
				args = append(args, "--fifo")
			}
			args = append(args, "--", "sh", "-c",
				`echo "start $DISTLOCK_FENCE" >> "$0"; sleep 0.15; echo "end $DISTLOCK_FENCE" >> "$0"`, log)
			const n = 4
			var wg sync.WaitGroup
			codes := make([]int, n)
			for i := range n {
				wg.Go(func() {
					cmd, stdout, stderr := c.command(args...)
					if err := cmd.Start(); err != nil {
						codes[i] = -1
						return
					}
					codes[i] = wait(t, cmd, stdout, stderr, time.Now()).code
				})
			}
			wg.Wait()
			assert.Equal(t, make([]int, n), codes, mode)
			b, err := os.ReadFile(log)
			require.NoError(t, err)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			require.Len(t, lines, 2*n, "%s:\n%s", mode, b)
			var last int64
			for i := 0; i < len(lines); i += 2 {
				start, ok1 := strings.CutPrefix(lines[i], "start ")
				end, ok2 := strings.CutPrefix(lines[i+1], "end ")
				require.True(t, ok1 && ok2 && start == end, "%s: runs overlap:\n%s", mode, b)
				fence, err := strconv.ParseInt(start, 10, 64)
				require.NoError(t, err)
				assert.Greater(t, fence, last, "%s: fences do not increase:\n%s", mode, b)
				last = fence
			}
		}
	})

	t.Run("not obtained", func(t *testing.T) {
		t.Parallel()
		p := prefix(t)
		holder := newMutex(t, client, mutex.Config{Prefix: p, Owner: "batch-7"})
		lease, err := holder.Lock(t.Context(), "k")
		require.NoError(t, err)
		log := filepath.Join(t.TempDir(), "ran")
		r := c.run(t, "run", "--redis", c.url, "--prefix", p, "--key", "k", "--wait", "0", "--", "touch", log)
		assert.Equal(t, exitNotObtained, r.code)
		assert.Contains(t, r.stderr, `"k" is held (by batch-7, fence `+strconv.FormatInt(lease.Fence(), 10))
		r = c.run(t, "run", "--redis", c.url, "--prefix", p, "--key", "k", "--wait", "300ms", "--", "touch", log)
		assert.Equal(t, exitNotObtained, r.code)
		assert.GreaterOrEqual(t, r.took, 300*time.Millisecond)
		assert.Contains(t, r.stderr, "gave up after 300ms")
		assert.NoFileExists(t, log)

		// A wait that outlasts the holder runs the command.
		time.AfterFunc(200*time.Millisecond, func() { _ = lease.Unlock(context.Background()) })
		r = c.run(t, "run", "--redis", c.url, "--prefix", p, "--key", "k", "--wait", "forever", "--", "touch", log)
		assert.Equal(t, 0, r.code)
		assert.FileExists(t, log)
	})

	t.Run("lease lost", func(t *testing.T) {
		t.Parallel()
		p := prefix(t)
		log := filepath.Join(t.TempDir(), "log")
		cmd, stdout, stderr := c.command("run", "--redis", c.url, "--prefix", p, "--key", "k", "--ttl", "600ms",
			"--", "sh", "-c", `trap 'echo TERM >> "$0"; exit 0' TERM; echo started >> "$0"; while :; do sleep 0.05; done`, log)
		require.NoError(t, cmd.Start())
		waitFor(t, log, "started")
		// Another owner takes the key from under the command.
		admin := newMutex(t, client, mutex.Config{Prefix: p, Owner: "admin"})
		info := inspect(t, admin, "k")
		require.True(t, info.Held)
		released, err := admin.ForceUnlock(t.Context(), "k", info.Token)
		require.NoError(t, err)
		require.True(t, released)
		taken, err := admin.TryLock(t.Context(), "k")
		require.NoError(t, err)
		defer taken.Unlock(context.Background())
		stolen := time.Now()

		r := wait(t, cmd, stdout, stderr, stolen)
		assert.Equal(t, exitLeaseLost, r.code)
		assert.Less(t, r.took, 2*time.Second, "the loss was noticed late")
		assert.Contains(t, r.stderr, "lease lost")
		waitFor(t, log, "TERM")
		assert.Equal(t, taken.Token(), inspect(t, admin, "k").Token, "the new holder's lock was touched")
	})

	t.Run("lease lost, command killed after the grace period", func(t *testing.T) {
		t.Parallel()
		p := prefix(t)
		log := filepath.Join(t.TempDir(), "log")
		cmd, stdout, stderr := c.command("run", "--redis", c.url, "--prefix", p, "--key", "k", "--ttl", "600ms", "--grace", "300ms",
			"--", "sh", "-c", `trap '' TERM; echo started >> "$0"; while :; do sleep 0.05; done`, log)
		require.NoError(t, cmd.Start())
		waitFor(t, log, "started")
		require.NoError(t, client.Del(t.Context(), p+":{k}").Err())
		r := wait(t, cmd, stdout, stderr, time.Now())
		assert.Equal(t, exitLeaseLost, r.code)
		assert.GreaterOrEqual(t, r.took, 300*time.Millisecond)
		assert.Contains(t, r.stderr, "killing it")
	})

	t.Run("signals reach the command", func(t *testing.T) {
		t.Parallel()
		for sig, code := range map[syscall.Signal]int{syscall.SIGINT: 3, syscall.SIGTERM: 4} {
			p := prefix(t)
			log := filepath.Join(t.TempDir(), "log")
			script := `trap 'echo INT >> "$0"; exit 3' INT; trap 'echo TERM >> "$0"; exit 4' TERM; ` +
				`echo started >> "$0"; while :; do sleep 0.05; done`
			cmd, stdout, stderr := c.command("run", "--redis", c.url, "--prefix", p, "--key", "k", "--", "sh", "-c", script, log)
			require.NoError(t, cmd.Start())
			waitFor(t, log, "started")
			require.NoError(t, cmd.Process.Signal(sig))
			r := wait(t, cmd, stdout, stderr, time.Now())
			assert.Equal(t, code, r.code, "%v", sig)
			assert.False(t, inspect(t, newMutex(t, client, mutex.Config{Prefix: p}), "k").Held, "key left held")
		}
	})

	t.Run("signal while waiting", func(t *testing.T) {
		t.Parallel()
		p := prefix(t)
		holder := newMutex(t, client, mutex.Config{Prefix: p})
		lease, err := holder.Lock(t.Context(), "k")
		require.NoError(t, err)
		defer lease.Unlock(context.Background())
		log := filepath.Join(t.TempDir(), "ran")
		cmd, stdout, stderr := c.command("run", "--redis", c.url, "--prefix", p, "--key", "k", "--wait", "forever", "--", "touch", log)
		require.NoError(t, cmd.Start())
		time.Sleep(300 * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		r := wait(t, cmd, stdout, stderr, time.Now())
		assert.Equal(t, 128+int(syscall.SIGTERM), r.code)
		assert.NoFileExists(t, log)
	})
}

func testStatusListUnlock(t *testing.T, c cli) {
	redistest.RunBackends(t, func(t *testing.T, b redistest.Backend) {
		url := b.URL(t)
		client := b.Client(t)
		p := prefix(t)
		holder := newMutex(t, client, mutex.Config{Prefix: p, Owner: "host-a:42", TTL: time.Minute})
		held := map[string]mutex.Lease{}
		for _, k := range []string{"job:1", "job:2", "other"} {
			l, err := holder.Lock(t.Context(), k)
			require.NoError(t, err)
			held[k] = l
			t.Cleanup(func() { _ = l.Unlock(context.Background()) })
		}

		r := c.run(t, "status", "--redis", url, "--prefix", p, "job:1", "free")
		require.Equal(t, 0, r.code)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		require.Len(t, lines, 3)
		assert.Regexp(t, `^KEY\s+STATE\s+OWNER\s+FENCE\s+TTL\s+QUEUE$`, lines[0])
		assert.Regexp(t, `^job:1\s+held\s+host-a:42\s+`+strconv.FormatInt(held["job:1"].Fence(), 10)+`\s+[0-9.]+s\s+0$`, lines[1])
		assert.Regexp(t, `^free\s+free\s+-\s+-\s+-\s+0$`, lines[2])

		r = c.run(t, "status", "--json", "--redis", url, "--prefix", p, "job:2")
		require.Equal(t, 0, r.code)
		var infos []map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &infos))
		require.Len(t, infos, 1)
		assert.Equal(t, "job:2", infos[0]["key"])
		assert.Equal(t, true, infos[0]["held"])
		assert.Equal(t, "host-a:42", infos[0]["owner"])
		assert.Equal(t, held["job:2"].Token(), infos[0]["token"])
		assert.InDelta(t, float64(held["job:2"].Fence()), infos[0]["fence"], 0)
		assert.Greater(t, infos[0]["ttl_ms"], float64(50_000))

		// Flags after the pattern work too.
		r = c.run(t, "list", "job:*", "--redis", url, "--prefix", p, "--json")
		require.Equal(t, 0, r.code)
		infos = nil
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &infos))
		var keys []string
		for _, info := range infos {
			keys = append(keys, info["key"].(string))
		}
		assert.Equal(t, []string{"job:1", "job:2"}, keys)
		r = c.run(t, "list", "--redis", url, "--prefix", p)
		require.Equal(t, 0, r.code)
		assert.Len(t, strings.Split(strings.TrimSpace(r.stdout), "\n"), 4)

		r = c.run(t, "unlock", "--redis", url, "--prefix", p, "job:1")
		assert.Equal(t, exitUsage, r.code)
		assert.Contains(t, r.stderr, "--force")
		assert.NoError(t, held["job:1"].Extend(t.Context()), "refused unlock released the key")

		r = c.run(t, "unlock", "--force", "--yes", "--redis", url, "--prefix", p, "job:1")
		assert.Equal(t, 0, r.code)
		assert.Equal(t, `released "job:1" (held by host-a:42, fence `+strconv.FormatInt(held["job:1"].Fence(), 10)+")\n", r.stdout)
		assert.ErrorIs(t, held["job:1"].Extend(t.Context()), mutex.ErrNotHeld)
		r = c.run(t, "unlock", "--force", "--redis", url, "--prefix", p, "job:1")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "not held")
	})
}

func testDemo(t *testing.T, c cli) {
	for name, args := range map[string][]string{
		"embedded": {"demo"},
		"redis":    {"demo", "--redis", c.url, "--prefix", prefix(t)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := c.run(t, args...)
			assert.Equal(t, 0, r.code)
			assert.Less(t, r.took, 10*time.Second)
			for _, want := range []string{
				"one holder at a time",
				"in arrival order",
				"worker-1's lease ended",
				"the store refuses it",
				"no key of the demo is held",
			} {
				assert.Contains(t, r.stdout, want)
			}
		})
	}
}
