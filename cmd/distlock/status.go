package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/distlock/distlock/mutex"
)

// keyJSON is the JSON form of a mutex.KeyInfo.
type keyJSON struct {
	Key   string `json:"key"`
	Held  bool   `json:"held"`
	Owner string `json:"owner"`
	Token string `json:"token"`
	Fence int64  `json:"fence"`
	TTLMS int64  `json:"ttl_ms"`
	Queue int64  `json:"queue"`
}

func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs, c := newFlags("status", "status [--json] KEY...", stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	keys, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(keys) == 0 {
		fmt.Fprintln(stderr, "distlock status: no keys")
		return exitUsage
	}
	m, closeAll, code := c.open(mutex.Config{}, stderr)
	if code != exitOK {
		return code
	}
	defer closeAll()
	ctx, cancel := background()
	defer cancel()
	infos, err := m.Inspect(ctx, keys...)
	if err != nil {
		return failed(stderr, "status", err)
	}
	return printInfos(stdout, stderr, infos, *asJSON)
}

func listCmd(args []string, stdout, stderr io.Writer) int {
	fs, c := newFlags("list", "list [--json] [PATTERN]", stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 1 {
		fmt.Fprintf(stderr, "distlock list: one pattern at most, got %d arguments\n", len(pos))
		return exitUsage
	}
	pattern := ""
	if len(pos) == 1 {
		pattern = pos[0]
	}
	m, closeAll, code := c.open(mutex.Config{}, stderr)
	if code != exitOK {
		return code
	}
	defer closeAll()
	ctx, cancel := background()
	defer cancel()
	keys, err := m.List(ctx, pattern)
	if err != nil {
		return failed(stderr, "list", err)
	}
	var infos []mutex.KeyInfo
	for len(keys) > 0 {
		n := min(len(keys), mutex.MaxKeys)
		batch, err := m.Inspect(ctx, keys[:n]...)
		if err != nil {
			return failed(stderr, "list", err)
		}
		keys = keys[n:]
		// A key released since the scan is left out.
		for _, info := range batch {
			if info.Held || info.Queue > 0 {
				infos = append(infos, info)
			}
		}
	}
	return printInfos(stdout, stderr, infos, *asJSON)
}

// printInfos prints infos as a table, or as a JSON array.
func printInfos(stdout, stderr io.Writer, infos []mutex.KeyInfo, asJSON bool) int {
	if asJSON {
		out := make([]keyJSON, len(infos))
		for i, info := range infos {
			out[i] = keyJSON{
				Key: info.Key, Held: info.Held, Owner: info.Owner, Token: info.Token,
				Fence: info.Fence, TTLMS: info.TTL.Milliseconds(), Queue: info.Queue,
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return failed(stderr, "write", err)
		}
		return exitOK
	}
	if len(infos) == 0 {
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATE\tOWNER\tFENCE\tTTL\tQUEUE")
	for _, info := range infos {
		state, owner, fence, ttl := "free", "-", "-", "-"
		switch {
		case info.Held:
			state = "held"
			fence = strconv.FormatInt(info.Fence, 10)
			ttl = formatTTL(info.TTL)
			if info.Owner != "" {
				owner = info.Owner
			}
		case info.Queue > 0:
			state = "queued"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", displayKey(info.Key), state, owner, fence, ttl, info.Queue)
	}
	if err := tw.Flush(); err != nil {
		return failed(stderr, "write", err)
	}
	return exitOK
}

func formatTTL(d time.Duration) string {
	if d < 0 {
		return "none"
	}
	return d.Round(time.Millisecond).String()
}

// displayKey shows a key in a table cell: quoted as in Go, without the
// quotes, so that no byte of it breaks the table.
func displayKey(k string) string {
	q := strconv.Quote(k)
	return q[1 : len(q)-1]
}

// holder says who holds the key of info, and since which grant.
func holder(info mutex.KeyInfo) string {
	by := ""
	if info.Owner != "" {
		by = "by " + info.Owner + ", "
	}
	return fmt.Sprintf("(%sfence %d, expires in %s)", by, info.Fence, formatTTL(info.TTL))
}

func unlockCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, c := newFlags("unlock", "unlock --force [--yes] KEY", stderr)
	force := fs.Bool("force", false, "release the key whoever holds it (required)")
	yes := fs.Bool("yes", false, "do not ask for confirmation on a terminal")
	keys, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(keys) != 1 {
		fmt.Fprintf(stderr, "distlock unlock: want one key, got %d\n", len(keys))
		return exitUsage
	}
	key := keys[0]
	if !*force {
		fmt.Fprintf(stderr, "distlock unlock: refusing to release %q without --force: its holder may still be at work, "+
			"and would lose its lock only at its next extension; once sure it is gone, run: distlock unlock --force %s\n",
			key, shellQuote(key))
		return exitUsage
	}
	m, closeAll, code := c.open(mutex.Config{}, stderr)
	if code != exitOK {
		return code
	}
	defer closeAll()
	ctx, cancel := background()
	defer cancel()
	infos, err := m.Inspect(ctx, key)
	if err != nil {
		return failed(stderr, "unlock", err)
	}
	info := infos[0]
	if !info.Held {
		fmt.Fprintf(stderr, "distlock: %q is not held\n", key)
		return exitNo
	}
	if f, ok := stdin.(*os.File); ok && !*yes && isTerminal(f) {
		fmt.Fprintf(stderr, "%q is held %s.\nRelease it? [y/N] ", key, holder(info))
		answer, _ := bufio.NewReader(stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			fmt.Fprintln(stderr, "distlock: not released")
			return exitNo
		}
	}
	released, err := m.ForceUnlock(ctx, key, info.Token)
	if err != nil {
		return failed(stderr, "unlock", err)
	}
	if !released {
		fmt.Fprintf(stderr, "distlock: %q changed hands meanwhile; nothing released\n", key)
		return exitNo
	}
	by := ""
	if info.Owner != "" {
		by = "by " + info.Owner + ", "
	}
	fmt.Fprintf(stdout, "released %q (held %sfence %d)\n", key, by, info.Fence)
	return exitOK
}

// shellQuote quotes s for a POSIX shell, when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/@%+=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
