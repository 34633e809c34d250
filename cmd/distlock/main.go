package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

// Exit codes of distlock's own outcomes. A command run by "distlock run"
// exits with its own code, which distlock passes on.
const (
	exitOK = 0
	// exitNo: unlock released nothing (the key is free or changed hands,
	// or the release was declined).
	exitNo = 1
	// exitUsage: bad flags or arguments, or a value the library refused
	// before any Redis call.
	exitUsage = 2
	// exitNotObtained: the key was held, and stayed held for --wait.
	exitNotObtained = 111
	// exitLeaseLost: the lease ended before the command did; the command
	// was terminated.
	exitLeaseLost = 112
	// exitFailure: Redis could not be reached, or answered with an error.
	exitFailure = 113
	// exitCannotRun and exitNotFound are the shell's codes for a command
	// that cannot be run or is not found.
	exitCannotRun = 126
	exitNotFound  = 127
	// exitSignal plus a signal's number is the code of a command killed by
	// that signal, or of distlock stopped by it while waiting for a key.
	exitSignal = 128
)

// defaultRedisURL is used when neither --redis nor REDIS_URL is set.
const defaultRedisURL = "redis://localhost:6379/0"

const usage = `distlock: distributed locks on Redis

Usage:
  distlock run --key KEY [flags] -- COMMAND [ARG...]
  distlock status [--json] KEY...
  distlock list [--json] [PATTERN]
  distlock unlock --force [--yes] KEY
  distlock demo

Every command takes --redis URL (default: $REDIS_URL, then
` + defaultRedisURL + `) and --prefix P (default "` + mutex.DefaultPrefix + `").
Run "distlock COMMAND -h" for the flags of a command.
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// dispatch runs the command named by args[0] and returns the exit code.
func dispatch(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return runCmd(args, stderr)
	case "status":
		return statusCmd(args, stdout, stderr)
	case "list":
		return listCmd(args, stdout, stderr)
	case "unlock":
		return unlockCmd(args, stdin, stdout, stderr)
	case "demo":
		return demoCmd(args, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "distlock: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

// common holds the flags every command has.
type common struct {
	redisURL string
	prefix   string
}

// newFlags returns the flag set of command name, with the common flags.
func newFlags(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet("distlock "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: distlock %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	c := &common{}
	fs.StringVar(&c.redisURL, "redis", "", "Redis URL (default: $REDIS_URL, then "+defaultRedisURL+")")
	fs.StringVar(&c.prefix, "prefix", mutex.DefaultPrefix, "key prefix of the locks (mutex.Config.Prefix)")
	return fs, c
}

// parseArgs parses flags that may come before, between or after the
// positional arguments, and returns the positional arguments; "--" ends
// the flags. On an error, or -h, the flag package has printed what to
// say, and code is the exit code.
func parseArgs(fs *flag.FlagSet, args []string) (pos []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, exitOK, true
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), exitOK, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// url returns the Redis URL to use: --redis, REDIS_URL or the default.
func (c *common) url() string {
	if c.redisURL != "" {
		return c.redisURL
	}
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return defaultRedisURL
}

// open returns a Mutex with cfg and the --prefix on a client of the URL,
// and a function that closes both; or, after reporting bad input, nil and
// exitUsage. It makes no Redis call.
func (c *common) open(cfg mutex.Config, stderr io.Writer) (*mutex.Mutex, func(), int) {
	client, err := redisurl.Open(c.url())
	if err != nil {
		fmt.Fprintf(stderr, "distlock: %v\n", err)
		return nil, nil, exitUsage
	}
	cfg.Prefix = c.prefix
	m, err := mutex.New(client, cfg)
	if err != nil {
		_ = client.Close()
		fmt.Fprintf(stderr, "distlock: %v\n", err)
		return nil, nil, exitUsage
	}
	return m, func() { _ = m.Close(); _ = client.Close() }, exitOK
}

// failed reports err and returns its exit code: exitUsage for input the
// library refused, exitFailure otherwise.
func failed(stderr io.Writer, what string, err error) int {
	fmt.Fprintf(stderr, "distlock: %s: %v\n", what, err)
	if errors.Is(err, mutex.ErrInvalid) {
		return exitUsage
	}
	return exitFailure
}

// isTerminal reports whether f looks like a terminal: a character device
// other than /dev/null.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

// background is the context of the commands that stop on SIGINT or
// SIGTERM.
func background() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
