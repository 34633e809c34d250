package lockcore

import (
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/mutex"
)

// Invalidf returns an error wrapping mutex.ErrInvalid.
func Invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{mutex.ErrInvalid}, args...)...)
}

// CheckPrefix validates a key prefix as mutex.New does and returns it, or
// def when it is empty.
func CheckPrefix(prefix, def string) (string, error) {
	if prefix == "" {
		prefix = def
	}
	if len(prefix) > mutex.MaxPrefixLen {
		return "", Invalidf("prefix of %d bytes, longer than %d", len(prefix), mutex.MaxPrefixLen)
	}
	if strings.ContainsAny(prefix, "{}") {
		return "", Invalidf("prefix %q contains a brace", prefix)
	}
	return prefix, nil
}

// CheckName validates one key or name, as mutex does its keys.
func CheckName(what, name string) error {
	if name == "" {
		return Invalidf("empty %s", what)
	}
	if len(name) > mutex.MaxKeyLen {
		return Invalidf("%s of %d bytes, longer than %d", what, len(name), mutex.MaxKeyLen)
	}
	return nil
}

// Escape percent-encodes the bytes of a key that could break a Redis
// Cluster hash tag or make two keys collide: '%', '{', '}', ':' and every
// byte outside printable ASCII. The encoding is injective, and the same as
// package mutex's.
func Escape(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c <= ' ' || c >= 0x7f || c == '%' || c == '{' || c == '}' || c == ':' {
			const hex = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// RedisKey returns "<prefix>:{<escaped key>}", whose hash tag is the whole
// escaped key.
func RedisKey(prefix, key string) string {
	return prefix + ":{" + Escape(key) + "}"
}

// Slot returns the Redis Cluster hash slot of a hash tag.
func Slot(tag string) int {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc ^= uint16(tag[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// checkKeys validates the keys of one call and maps them to the Redis keys
// of their resources. With oneSlot, on a Redis Cluster, the keys must share
// a hash slot, as one script takes them all.
func (c *Core) checkKeys(keys []string, oneSlot bool) ([]string, error) {
	if len(keys) == 0 {
		return nil, Invalidf("no keys")
	}
	if len(keys) > mutex.MaxKeys {
		return nil, Invalidf("%d keys, more than %d", len(keys), mutex.MaxKeys)
	}
	for i, k := range keys {
		if err := CheckName("key", k); err != nil {
			return nil, err
		}
		for _, prev := range keys[:i] {
			if prev == k {
				return nil, Invalidf("key %q given twice", k)
			}
		}
	}
	if _, ok := c.client.(*redis.ClusterClient); ok && oneSlot {
		slot := Slot(Escape(keys[0]))
		for _, k := range keys[1:] {
			if Slot(Escape(k)) != slot {
				return nil, Invalidf("keys %q and %q are in different Cluster hash slots", keys[0], k)
			}
		}
	}
	rkeys := make([]string, len(keys))
	for i, k := range keys {
		rkeys[i] = RedisKey(c.prefix, k)
	}
	return rkeys, nil
}

// resourceKeys returns the five keys of each resource, in the order of
// lib.lua, with room for one more.
func resourceKeys(rkeys []string) []string {
	out := make([]string, 0, 5*len(rkeys)+1)
	for _, k := range rkeys {
		out = append(out, k, k+":f", k+":q", k+":d", k+":qw")
	}
	return out
}

// markerKey names the revocation marker of a token, in the hash slot of
// rkey.
func markerKey(rkey, token string) string { return rkey + ":x:" + token }
