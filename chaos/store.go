package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// StoreClient is the client id under which the store records its decisions.
const StoreClient = -1

// Store is the fenced store: per key it keeps the highest fence it accepted
// and rejects a write whose fence is lower. A write whose fence equals the
// highest but comes from another lease (token) cannot be told apart from a
// newer write, so the store accepts it and counts it as a stale write
// accepted.
type Store struct {
	mu            sync.Mutex
	hi            map[string]storeEntry
	accepted      int
	rejected      int
	staleAccepted int
	rec           *Recorder
	writers       chan storeWrite // accepted writes, offered without blocking
}

type storeWrite struct {
	key string
	pid int
}

type storeEntry struct {
	fence int64
	token string
	pid   int
}

// StoreStats are the store's counters.
type StoreStats struct {
	Accepted      int `json:"accepted"`
	Rejected      int `json:"rejected"`
	StaleAccepted int `json:"stale_accepted"`
}

// NewStore returns an empty store that records its decisions with rec
// (nil records nothing).
func NewStore(rec *Recorder) *Store {
	return &Store{hi: make(map[string]storeEntry), rec: rec, writers: make(chan storeWrite, 1)}
}

// Write applies a write of key by the lease with fence and token from
// process pid, and reports whether it was accepted.
func (s *Store) Write(key string, fence int64, token string, pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, seen := s.hi[key]
	e := Event{Op: OpStore, Keys: []string{key}, Fence: fence, Token: token, Note: "pid " + strconv.Itoa(pid)}
	switch {
	case seen && fence < cur.fence:
		s.rejected++
		e.Type, e.Stale = TypeFail, true
		e.Err = fmt.Sprintf("fence %d below %d", fence, cur.fence)
	case seen && fence == cur.fence && token != cur.token:
		s.accepted++
		s.staleAccepted++
		e.Type, e.Stale = TypeOK, true
		e.Err = fmt.Sprintf("fence %d equals that of token %s", fence, cur.token)
		s.hi[key] = storeEntry{fence: fence, token: token, pid: pid}
	default:
		s.accepted++
		e.Type = TypeOK
		s.hi[key] = storeEntry{fence: fence, token: token, pid: pid}
	}
	if s.rec != nil {
		s.rec.Record(e)
	}
	if e.Type == TypeOK {
		select {
		case s.writers <- storeWrite{key: key, pid: pid}:
		default:
		}
	}
	return e.Type == TypeOK
}

// Stats returns the counters.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreStats{Accepted: s.accepted, Rejected: s.rejected, StaleAccepted: s.staleAccepted}
}

// LastWriter returns the pid of the process whose write of key was last
// accepted, or 0.
func (s *Store) LastWriter(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hi[key].pid
}

// NextWriter waits for a write of key accepted after the call and returns
// the writer's pid: a process that, a moment ago, held the key. It returns
// 0 when ctx ends first.
func (s *Store) NextWriter(ctx context.Context, key string) int {
	// Drop a write offered before the call.
	select {
	case <-s.writers:
	default:
	}
	for {
		select {
		case <-ctx.Done():
			return 0
		case w := <-s.writers:
			if w.key == key {
				return w.pid
			}
		}
	}
}

// ServeHTTP handles POST /write?key=&fence=&token=&pid=: 204 accepted,
// 409 rejected, 400 bad request.
func (s *Store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fence, err1 := strconv.ParseInt(q.Get("fence"), 10, 64)
	pid, err2 := strconv.Atoi(q.Get("pid"))
	if r.Method != http.MethodPost || q.Get("key") == "" || err1 != nil || err2 != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if s.Write(q.Get("key"), fence, q.Get("token"), pid) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusConflict)
}

// StoreServer serves a Store on a loopback port.
type StoreServer struct {
	URL string
	srv *http.Server
	ln  net.Listener
	err chan error
}

// ServeStore serves s on 127.0.0.1 on a free port.
func ServeStore(s *Store) (*StoreServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ss := &StoreServer{URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}, ln: ln, err: make(chan error, 1)}
	go func() { ss.err <- ss.srv.Serve(ln) }()
	return ss, nil
}

// Close stops the server and waits for it.
func (ss *StoreServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := ss.srv.Shutdown(ctx)
	if serr := <-ss.err; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// ErrRejected is returned by StoreWriter.Write when the store refused the
// write as stale.
var ErrRejected = errors.New("chaos: write rejected")

// StoreWriter writes to a store served by ServeStore.
type StoreWriter struct {
	base   string
	client *http.Client
}

// NewStoreWriter returns a writer for the store at base.
func NewStoreWriter(base string) *StoreWriter {
	return &StoreWriter{base: base, client: &http.Client{Timeout: 5 * time.Second}}
}

// Write sends one write; nil means accepted, ErrRejected rejected, any
// other error an unknown outcome.
func (w *StoreWriter) Write(ctx context.Context, key string, fence int64, token string, pid int) error {
	q := url.Values{"key": {key}, "fence": {strconv.FormatInt(fence, 10)}, "token": {token}, "pid": {strconv.Itoa(pid)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.base+"/write?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil
	case http.StatusConflict:
		return ErrRejected
	}
	return fmt.Errorf("store: status %d", resp.StatusCode)
}
