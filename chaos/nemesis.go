package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"time"
)

// nemesis injects one kind of fault until its context ends, and leaves
// every process running when it returns.
type nemesis struct {
	fault   string
	ttl     time.Duration
	rec     *Recorder
	clients *clients
	redis   *RedisServer
	store   *Store
	rng     *rand.Rand
}

func (n *nemesis) run(ctx context.Context) (faults int) {
	if n.fault == FaultNone {
		<-ctx.Done()
		return 0
	}
	pause := 2*n.ttl + n.ttl/2
	period := 3 * n.ttl
	for {
		select {
		case <-ctx.Done():
			return faults
		case <-time.After(period):
		}
		var err error
		switch n.fault {
		case FaultPauseHolder:
			p := n.clients.byPID(n.store.NextWriter(ctx, HotKey))
			if p == nil {
				continue
			}
			err = n.stop(p.cmd.Process, "client", pause)
		case FaultKillClient:
			p := n.clients.random(n.rng)
			if p == nil {
				continue
			}
			n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: "SIGKILL client pid " + strconv.Itoa(p.cmd.Process.Pid)})
			err = errors.Join(p.cmd.Process.Kill(), waitDone(p.done), n.clients.start())
			n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: "client replaced"})
		case FaultPauseRedis:
			err = n.stop(n.redis.cmd.Process, "redis", pause)
		default:
			err = fmt.Errorf("unknown fault %q", n.fault)
		}
		if err != nil {
			n.rec.Record(Event{Op: OpFault, Type: TypeFail, Err: err.Error()})
			continue
		}
		faults++
	}
}

func waitDone(done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("process did not exit after SIGKILL")
	}
}

// stop pauses p with SIGSTOP for d, then resumes it, whatever happens.
func (n *nemesis) stop(p *os.Process, what string, d time.Duration) error {
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: "SIGSTOP " + what + " pid " + strconv.Itoa(p.Pid)})
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	time.Sleep(d)
	err := p.Signal(syscall.SIGCONT)
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: "SIGCONT " + what + " pid " + strconv.Itoa(p.Pid)})
	return err
}
