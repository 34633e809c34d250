// Command distlock runs commands under distributed locks and shows who
// holds them: a flock(1) for processes on many machines that share one
// Redis.
//
//	distlock run --key KEY [flags] [--] COMMAND [ARG...]
//	distlock status [--json] KEY...
//	distlock list [--json] [PATTERN]
//	distlock unlock --force [--yes] KEY
//	distlock demo
//
// Every command takes --redis URL, in any form that package redisurl
// accepts (standalone, TLS, Unix socket, Cluster, Sentinel); without it,
// REDIS_URL, and without that, redis://localhost:6379/0. --prefix sets the
// key prefix (mutex.Config.Prefix, "distlock" by default): distlock sees
// the locks of every program that uses the same prefix with package mutex.
// Flags may follow the arguments of status, list and unlock; those of run
// come before the command.
//
// # run
//
// run holds KEY while COMMAND runs, then releases it:
//
//	distlock run --key nightly-report --wait 10m -- ./report.sh --full
//
// Flags: --ttl (30s by default) is the lease's time-to-live; the lease is
// extended each time a third of it has passed, so a distlock that dies
// leaves the key held for at most the TTL. --wait is how long to wait for
// a key that is held: 0 by default (fail at once), a duration, or
// "forever"; on a terminal, a line on stderr shows the time waited and the
// holder. --fifo queues for the key in Redis, so that waiters get it in the
// order they asked (every holder of the key must use it). --owner is the
// label that status and list show (by default "<hostname>:<pid>" of
// distlock). --grace (10s) is the time COMMAND gets to stop after SIGTERM
// once the lease is lost.
//
// COMMAND gets DISTLOCK_KEY (the key) and DISTLOCK_FENCE (the lease's
// fencing token, a number greater than that of every earlier grant of the
// key) in its environment: pass the fence to the storage it writes, so that
// a late write of a holder whose lease ran out can be refused.
//
// COMMAND runs in a process group of its own. SIGINT, SIGTERM, SIGHUP,
// SIGUSR1 and SIGUSR2 sent to distlock go to that group; distlock then
// waits for COMMAND to exit and releases the key. distlock ignores SIGTSTP
// (Ctrl-Z), since a stopped distlock would stop extending the lease while
// COMMAND runs on. If the lease is lost (an
// extension found the key taken, or Redis could not be reached until the
// lease ran out), distlock sends SIGTERM to the group, SIGKILL after
// --grace, and exits with 112. Being out of the terminal's foreground
// group, COMMAND reads an empty input instead of a terminal; input from a
// file or a pipe reaches it. On Linux, COMMAND is killed if distlock
// itself is killed.
//
// # status, list and unlock
//
// status prints, for each KEY, whether it is held, the holder's owner
// label, the fence of its grant, the time left before the lock expires
// without an extension, and the number of FIFO waiters; --json prints the
// same as a JSON array of objects with the fields key, held, owner, token,
// fence, ttl_ms and queue. list does the same for every key of the prefix
// that is held or queued for, found with SCAN (never KEYS), on every
// primary of a Cluster; PATTERN is a glob as in Redis's MATCH ('*', '?',
// "[a-z]"), applied to the keys.
//
// unlock --force releases a key whatever process holds it, for a holder
// known to be gone: it reads the holder's token and releases the key only
// if that grant still holds it, then announces the release so that waiters
// take the key without waiting for its TTL (FIFO waiters within 0.4s). It
// asks for confirmation when its input is a terminal, unless --yes is
// given. Without --force it refuses: a holder still at work would learn of
// the loss only at its next extension.
//
// # demo
//
// demo shows, in about three seconds, workers taking turns on a key with
// increasing fences, FIFO waiters granted in arrival order, and a worker
// that stalls past its lease's validity: its lease reports the loss,
// another worker takes the key, and a store that checks fences refuses the
// stalled worker's late write. Without --redis or REDIS_URL it runs an
// embedded, in-memory Redis (miniredis).
//
// # Exit codes
//
//	0      success (run: COMMAND exited 0)
//	1-255  run: COMMAND's own exit code, or 128+N when signal N killed it
//	1      unlock: nothing released (the key is not held, changed hands, or
//	       the confirmation was declined)
//	2      bad flags or arguments, refused before any Redis call
//	111    run: the key was held, and still was after --wait
//	112    run: the lease was lost while COMMAND ran; COMMAND was stopped
//	113    Redis could not be reached or failed
//	126    run: COMMAND could not be started
//	127    run: COMMAND was not found
//	128+N  run: distlock got signal N while waiting for the key
//
// run passes COMMAND's exit code on unchanged, so a COMMAND that itself
// exits with 111, 112 or 113 cannot be told from distlock's outcomes by the
// code alone; distlock's own outcomes always come with a message on stderr.
package main
