package mutex

import (
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxOwnerLen is the longest Config.Owner, in bytes.
const MaxOwnerLen = 128

// ownerSep separates the owner label from the rest of a token. The Mutex
// id and the random part are base64url, which has no '~', so the first
// '~' of a token starts the label.
const ownerSep = "~"

// checkOwner returns the owner label of cfg: cfg.Owner, or the default
// "<hostname>:<pid>" when it is empty. A label longer than MaxOwnerLen
// bytes, not valid UTF-8, or with control characters is an error wrapping
// ErrInvalid.
func checkOwner(owner string) (string, error) {
	if owner == "" {
		return defaultOwner(), nil
	}
	if len(owner) > MaxOwnerLen {
		return "", invalidf("owner of %d bytes, longer than %d", len(owner), MaxOwnerLen)
	}
	if !utf8.ValidString(owner) {
		return "", invalidf("owner %q is not valid UTF-8", owner)
	}
	if strings.ContainsFunc(owner, unicode.IsControl) {
		return "", invalidf("owner %q contains a control character", owner)
	}
	return owner, nil
}

// defaultOwner returns "<hostname>:<pid>", with the host name cut so that
// the label fits in MaxOwnerLen bytes.
func defaultOwner() string {
	pid := ":" + strconv.Itoa(os.Getpid())
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	host = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(host, ""))
	if n := MaxOwnerLen - len(pid); len(host) > n {
		host = strings.ToValidUTF8(host[:n], "")
	}
	return host + pid
}

// ownerTail returns what every token of a Mutex with owner label owner ends
// with: ownerSep and the label escaped like a key, so that it has no ':'
// (which ends the token in a lock value), no space (which ends it in a FIFO
// wake-up message), no braces and no '%' but as escapes.
func ownerTail(owner string) string {
	return ownerSep + escapeKey(owner)
}

// ownerOf returns the owner label recorded in token, or "" if it has none.
func ownerOf(token string) string {
	_, tail, ok := strings.Cut(token, ownerSep)
	if !ok {
		return ""
	}
	owner, ok := unescapeKey(tail)
	if !ok {
		return tail
	}
	return owner
}

// unescapeKey reverses escapeKey. It reports false for a string that
// escapeKey cannot have returned.
func unescapeKey(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, escapeKey(s) == s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, lo := strings.IndexByte(hexDigits, s[i+1]), strings.IndexByte(hexDigits, s[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		b = append(b, byte(hi<<4|lo))
		i += 2
	}
	out := string(b)
	return out, escapeKey(out) == s
}
