package mutex

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// KeyInfo is the state of one key, as Inspect found it.
type KeyInfo struct {
	// Key is the key as given to Inspect.
	Key string
	// RedisKey is the Redis key that holds the lock on Key; it also names
	// the key's release channel.
	RedisKey string
	// Held reports whether a lease holds the key.
	Held bool
	// Owner is the owner label of the holder's Mutex (its Config.Owner),
	// or empty.
	Owner string
	// Token is the holder's owner token, or empty.
	Token string
	// Fence is the fencing token of the holder's grant, or 0.
	Fence int64
	// TTL is how long Redis keeps the lock without an Extend; zero when
	// the key is not held, negative for a key without expiry, which no
	// Mutex leaves.
	TTL time.Duration
	// Queue is the number of FIFO waiters queued for the key in Redis.
	// Waiters of Mutexes without FIFO wait in their own processes and are
	// not counted.
	Queue int64
}

// Inspect reports the state of each key: whether it is held, by which
// owner (see Config.Owner), with which token and fence, how long the lock
// has left before it expires, and how many FIFO waiters queue for it. It
// reads, for all keys at once, in one pipeline (on a Redis Cluster, one per
// node, sent in parallel), and changes nothing. The answers for one key
// come from three reads that are not atomic together: a lock that changes
// hands meanwhile may show the TTL of its new holder.
//
// Inspect sees every grant under the Mutex's prefix, whichever Mutex made
// it, in either mode. Bad keys give an error wrapping ErrInvalid before any
// Redis call; a Redis failure gives its error. The Redis user needs GET,
// PTTL and ZCARD on the prefix's keys.
func (m *Mutex) Inspect(ctx context.Context, keys ...string) ([]KeyInfo, error) {
	rkeys, err := m.checkKeys(keys)
	if err != nil {
		return nil, err
	}
	type reads struct {
		get   *redis.StringCmd
		pttl  *redis.DurationCmd
		queue *redis.IntCmd
	}
	pipe := m.client.Pipeline()
	rs := make([]reads, len(rkeys))
	for i, k := range rkeys {
		rs[i] = reads{pipe.Get(ctx, k), pipe.PTTL(ctx, k), pipe.ZCard(ctx, queueKey(k))}
	}
	cmds, err := pipe.Exec(ctx)
	if err != nil {
		// A key that is not held answers GET with redis.Nil; any other
		// error is a failure.
		for _, c := range cmds {
			if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
				return nil, fmt.Errorf("inspect: %w", err)
			}
		}
	}
	infos := make([]KeyInfo, len(keys))
	for i, r := range rs {
		infos[i] = KeyInfo{Key: keys[i], RedisKey: rkeys[i], Queue: r.queue.Val()}
		if value, err := r.get.Result(); err == nil {
			infos[i].setValue(value, r.pttl.Val())
		}
	}
	return infos, nil
}

// setValue fills in the holder from the lock value "<token>:<fence>" and
// the PTTL read after it. A value in another form is reported as a held
// key whose token is the whole value.
func (info *KeyInfo) setValue(value string, pttl time.Duration) {
	switch {
	case pttl == -2:
		// Released or expired between the two reads.
		return
	case pttl < 0:
		info.TTL = -1
	default:
		info.TTL = pttl
	}
	info.Held = true
	info.Token = value
	if i := strings.LastIndexByte(value, ':'); i >= 0 {
		if fence, err := strconv.ParseInt(value[i+1:], 10, 64); err == nil {
			info.Token, info.Fence = value[:i], fence
		}
	}
	info.Owner = ownerOf(info.Token)
}

// ForceUnlock releases key if the grant to token (a KeyInfo's Token) still
// holds it, whichever Mutex made the grant, and tells the key's waiters;
// FIFO waiters learn it within FIFOLiveness/3 from their Mutexes'
// renewals. It reports whether it released the key: false when the key is
// not held or is held under another token.
//
// It is for operators who know that a holder is gone. The holder's lease
// learns of the loss only at its next Extend, or when its validity runs
// out: until then it may still act on the resource, and only a fence
// check keeps its writes out. The token is marked revoked as by an acquire
// given up on (see "Lost replies" in the package documentation), so that a
// request of it that reaches Redis later takes nothing.
//
// An empty or oversized key, or an empty token or one with a ':' or a
// space, gives an error wrapping ErrInvalid before any Redis call.
func (m *Mutex) ForceUnlock(ctx context.Context, key, token string) (bool, error) {
	rkeys, err := m.checkKeys([]string{key})
	if err != nil {
		return false, err
	}
	switch {
	case token == "":
		return false, invalidf("empty token")
	case len(token) > MaxKeyLen:
		return false, invalidf("token of %d bytes, longer than %d", len(token), MaxKeyLen)
	case strings.ContainsAny(token, ": "):
		return false, invalidf("token %q contains a ':' or a space", token)
	}
	keys := []string{rkeys[0], markerKey(rkeys[0], token)}
	n, err := releaseTokenScript.Run(ctx, m.client, keys, token, m.revokeTTL(), m.sharded).Int()
	if err != nil {
		return false, fmt.Errorf("force unlock: %w", err)
	}
	return n > 0, nil
}

// scanCount is the COUNT hint of List's SCAN calls.
const scanCount = 1000

// List returns, sorted, the keys under the Mutex's prefix that are held or
// that FIFO waiters queue for, and that match pattern, a glob as in Redis's
// MATCH ('*', '?', "[a-z]", "[^a]", '\' to quote), applied to the key
// itself (not its escaped Redis name); an empty pattern matches every key.
// It walks the keyspace with SCAN (never KEYS), on every primary of a
// Redis Cluster, so it does not block Redis, but takes time in proportion
// to the whole keyspace; a key that is taken or released meanwhile may be
// listed or not. The Redis user needs SCAN.
func (m *Mutex) List(ctx context.Context, pattern string) ([]string, error) {
	head := m.prefix + ":{"
	match := globQuote(head) + "*"
	var (
		mu   sync.Mutex
		seen = make(map[string]bool)
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, match, scanCount).Iterator()
		for iter.Next(ctx) {
			key, ok := lockKeyOf(iter.Val(), head)
			if !ok || (pattern != "" && !globMatch(pattern, key)) {
				continue
			}
			mu.Lock()
			seen[key] = true
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	switch c := m.client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return scan(ctx, n) })
	case *redis.Ring:
		err = c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return scan(ctx, n) })
	default:
		err = scan(ctx, c)
	}
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// lockKeyOf returns the key whose lock key or FIFO queue is the Redis key
// rkey, which starts with head ("<prefix>:{"); false for any other key.
func lockKeyOf(rkey, head string) (string, bool) {
	rest, ok := strings.CutPrefix(rkey, head)
	if !ok {
		return "", false
	}
	escaped, suffix, ok := strings.Cut(rest, "}")
	if !ok || escaped == "" || (suffix != "" && suffix != ":q") {
		return "", false
	}
	return unescapeKey(escaped)
}

// globQuote quotes the characters of s that MATCH patterns treat
// specially.
func globQuote(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// globMatch reports whether s matches pattern, with the glob rules of
// Redis's MATCH, byte by byte: '*' matches any run of bytes, '?' any one
// byte, "[...]" one byte of a set (with ranges "a-z" and a leading '^' to
// negate it), and '\' quotes the next byte.
func globMatch(pattern, s string) bool {
	p, i := 0, 0
	// After a '*', where to resume on a mismatch: the pattern just past
	// the star, and the next position in s for it to swallow.
	starP, starI := -1, 0
	for i < len(s) {
		if p < len(pattern) {
			if pattern[p] == '*' {
				starP, starI = p+1, i
				p++
				continue
			}
			if next, ok := globOne(pattern, p, s[i]); ok {
				p, i = next, i+1
				continue
			}
		}
		if starP < 0 {
			return false
		}
		starI++
		p, i = starP, starI
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// globOne matches the byte c against the pattern element at p (anything
// but '*'), and returns the position after that element.
func globOne(pattern string, p int, c byte) (int, bool) {
	switch pattern[p] {
	case '?':
		return p + 1, true
	case '\\':
		if p+1 < len(pattern) {
			return p + 2, pattern[p+1] == c
		}
		return p + 1, c == '\\'
	case '[':
		return globClass(pattern, p+1, c)
	}
	return p + 1, pattern[p] == c
}

// globClass matches c against the set that starts at p, just past '[', and
// returns the position after its ']' (or the end of an unclosed set).
func globClass(pattern string, p int, c byte) (int, bool) {
	negate := p < len(pattern) && pattern[p] == '^'
	if negate {
		p++
	}
	match := false
	for p < len(pattern) && pattern[p] != ']' {
		switch {
		case pattern[p] == '\\' && p+1 < len(pattern):
			match = match || pattern[p+1] == c
			p += 2
		case p+2 < len(pattern) && pattern[p+1] == '-' && pattern[p+2] != ']':
			lo, hi := pattern[p], pattern[p+2]
			if lo > hi {
				lo, hi = hi, lo
			}
			match = match || (lo <= c && c <= hi)
			p += 3
		default:
			match = match || pattern[p] == c
			p++
		}
	}
	if p < len(pattern) {
		p++ // the ']'
	}
	return p, match != negate
}
