package mutex

import (
	"strings"
)

const (
	// MaxKeyLen is the longest key, in bytes, that the package accepts.
	MaxKeyLen = 512
	// MaxKeys is the largest number of keys one call may lock together.
	MaxKeys = 256
	// MaxPrefixLen is the longest Config.Prefix, in bytes.
	MaxPrefixLen = 128
	// DefaultPrefix is the key prefix used when Config.Prefix is empty.
	DefaultPrefix = "distlock"
)

const hexDigits = "0123456789ABCDEF"

// escapeKey percent-encodes the bytes of a key that could break a Redis
// Cluster hash tag or make two keys collide: '%', '{', '}', ':' and every byte
// outside printable ASCII. The encoding is injective.
func escapeKey(key string) string {
	n := 0
	for i := 0; i < len(key); i++ {
		if mustEscape(key[i]) {
			n++
		}
	}
	if n == 0 {
		return key
	}
	var b strings.Builder
	b.Grow(len(key) + 2*n)
	for i := 0; i < len(key); i++ {
		c := key[i]
		if mustEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func mustEscape(c byte) bool {
	return c <= ' ' || c >= 0x7f || c == '%' || c == '{' || c == '}' || c == ':'
}

// redisKey returns the Redis key that holds the lock on key. The escaped key
// is the hash tag, so every Redis key of one resource lives in one Cluster
// slot.
func (m *Mutex) redisKey(key string) string {
	return m.prefix + ":{" + escapeKey(key) + "}"
}

// checkKeys validates the keys of one call and maps them to Redis keys.
func (m *Mutex) checkKeys(keys []string) ([]string, error) {
	if len(keys) == 0 {
		return nil, invalidf("no keys")
	}
	if len(keys) > MaxKeys {
		return nil, invalidf("%d keys, more than %d", len(keys), MaxKeys)
	}
	for i, k := range keys {
		if k == "" {
			return nil, invalidf("empty key")
		}
		if len(k) > MaxKeyLen {
			return nil, invalidf("key of %d bytes, longer than %d", len(k), MaxKeyLen)
		}
		for _, prev := range keys[:i] {
			if prev == k {
				return nil, invalidf("key %q given twice", k)
			}
		}
	}
	// One more for the revocation marker of an acquire (see attempt).
	rkeys := make([]string, len(keys), len(keys)+1)
	for i, k := range keys {
		rkeys[i] = m.redisKey(k)
	}
	return rkeys, nil
}
