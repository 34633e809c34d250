package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Operation names recorded in a history.
const (
	OpLock   = "lock"
	OpCheck  = "check"
	OpWrite  = "write"
	OpUnlock = "unlock"
	// OpStore is a decision of the fenced store, recorded in its own
	// history under its lock, so store events are totally ordered.
	OpStore = "store"
	// OpFault is a nemesis action.
	OpFault = "fault"
	// OpDone is a client's lease whose Done channel closed (other than by
	// its Unlock), with the lease's Err.
	OpDone = "done"
	// OpExit is a client's last event: Count is the number of goroutines
	// left above the client's starting set once its Mutex and Redis client
	// were closed (Note lists them).
	OpExit = "exit"
	// OpRedis is a change of a lock key seen by the key watcher: Type is
	// the keyspace notification (TypeSet, TypeDel, TypeExpired,
	// TypeEvicted, TypeExpire) or TypePresent; Keys holds the client key
	// name; for set, expire and present, Token and Fence are read from the
	// stored value right after the notification and Expires is when the
	// key will expire (empty Token: the value could not be told, Note says
	// why).
	OpRedis = "redis"
	// OpWatcher marks the start (TypeStart) and end (TypeStop) of the key
	// watcher's view.
	OpWatcher = "watcher"
	// OpWatcherGap is a hole in the key watcher's view: TypeInvoke when
	// its connection broke, TypeOK when it was subscribed again with the
	// notifications enabled; TypePresent events for the lock keys present
	// then follow at the same time.
	OpWatcherGap = "watcher-gap"
	// OpLeftover is a key under the lock prefix still present after a
	// run: Type TypeLock, TypeLockNoTTL, TypeExpiring or TypePersistent;
	// Keys holds the Redis key.
	OpLeftover = "leftover"
	// OpFailoverLost is a lock value the primary held when the nemesis
	// killed it that its replica, about to be promoted, did not hold:
	// Keys holds the client key, Token and Fence the value; T is when the
	// replica's values were read.
	OpFailoverLost = "failover-lost"
)

// Event types, as in Jepsen: an invocation, then ok, fail (surely had no
// effect) or unknown (may have had an effect). A check records one ok or
// fail event whose time was taken before the check ran.
const (
	TypeInvoke  = "invoke"
	TypeOK      = "ok"
	TypeFail    = "fail"
	TypeUnknown = "unknown"
)

// Event types of the key watcher and of leftovers.
const (
	TypeSet        = "set"
	TypeDel        = "del"
	TypeExpired    = "expired"
	TypeEvicted    = "evicted"
	TypeExpire     = "expire"
	TypePresent    = "present"
	TypeStart      = "start"
	TypeStop       = "stop"
	TypeLock       = "lock"
	TypeLockNoTTL  = "lock-no-ttl"
	TypeExpiring   = "expiring"
	TypePersistent = "persistent"
)

// Event is one line of a history.
type Event struct {
	Client int      `json:"client"`
	PID    int      `json:"pid,omitempty"`
	Op     string   `json:"op"`
	Type   string   `json:"type"`
	T      int64    `json:"t"` // wall clock, Unix nanoseconds, shared by all processes of one host
	Keys   []string `json:"keys,omitempty"`
	Fence  int64    `json:"fence,omitempty"`
	// KeyFences are, on a granted Lock, the fence of each of Keys
	// (Lease.FenceOf): on a Cluster, the slot groups of a multi-key lease
	// are granted apart, each under a token and a fence of its own.
	KeyFences []int64 `json:"key_fences,omitempty"`
	Token     string  `json:"token,omitempty"`
	// Deadline is mutex.Deadline of the lease, Unix nanoseconds (0 if unknown).
	Deadline int64  `json:"deadline,omitempty"`
	Err      string `json:"err,omitempty"`
	// Stale marks a store decision about a stale write: rejected (Type
	// fail) or accepted although not newer than a write of another lease
	// (Type ok).
	Stale bool `json:"stale,omitempty"`
	// Expires is when a lock key seen by the watcher expires, Unix
	// nanoseconds; -1 for a key without a TTL, 0 if unknown.
	Expires int64 `json:"expires,omitempty"`
	// Count is a number an event reports (see OpExit).
	Count int    `json:"count,omitempty"`
	Note  string `json:"note,omitempty"`
}

// Recorder appends events to a JSON-lines file, one write per event, so a
// client killed with SIGKILL loses at most the event being written.
type Recorder struct {
	mu     sync.Mutex
	f      *os.File
	client int
	pid    int
}

// NewRecorder creates (or truncates) path and records events of client.
func NewRecorder(path string, client int) (*Recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create history: %w", err)
	}
	return &Recorder{f: f, client: client, pid: os.Getpid()}, nil
}

// Record stamps e with the client, pid and, when zero, the current time,
// and appends it.
func (r *Recorder) Record(e Event) {
	e.Client = r.client
	e.PID = r.pid
	if e.T == 0 {
		e.T = time.Now().UnixNano()
	}
	b, err := json.Marshal(e)
	if err != nil {
		panic(err) // Event always marshals
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = r.f.Write(append(b, '\n'))
}

// Close closes the file.
func (r *Recorder) Close() error { return r.f.Close() }

// ReadHistory reads every *.jsonl file in dir and returns the events sorted
// by time. A truncated last line (a killed writer) is skipped.
func ReadHistory(dir string) ([]Event, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	var events []Event
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			var e Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				events = append(events, e)
			}
		}
		err = sc.Err()
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].T < events[j].T })
	return events, nil
}
