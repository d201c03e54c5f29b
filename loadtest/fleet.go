package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// fleet is the coordinator's side of the worker processes.
type fleet struct {
	mu    sync.Mutex // one command at a time, to every worker
	procs []*workerProc
}

type workerProc struct {
	n       int
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	enc     *json.Encoder
	replies chan reply // closed when the worker's stdout ends
	exited  chan struct{}
}

// callTimeout bounds one command's round trip: every command is quick (the
// long work runs in the background and is polled).
const callTimeout = 30 * time.Second

// startFleet starts o.Procs workers, each with its share of the clients.
func startFleet(o *options) (*fleet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find my own executable to start workers: %w", err)
	}
	f := &fleet{}
	per := (o.Conns + o.Procs - 1) / o.Procs
	for n := range o.Procs {
		lo, hi := n*per, min((n+1)*per, o.Conns)
		p, err := startWorker(exe, n)
		if err != nil {
			f.close()
			return nil, err
		}
		f.procs = append(f.procs, p)
		s := spec{Opts: *o, Token: o.Token, Lo: lo, Hi: hi, Proc: n, Limit: int64(o.limit())}
		if _, err := f.callOne(p, command{Op: "start", Spec: &s}); err != nil {
			f.close()
			return nil, err
		}
	}
	return f, nil
}

func startWorker(exe string, n int) (*workerProc, error) {
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start worker %d: %w", n, err)
	}
	p := &workerProc{n: n, cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin),
		replies: make(chan reply, 1), exited: make(chan struct{})}
	go func() {
		dec := json.NewDecoder(bufio.NewReader(stdout))
		for {
			var r reply
			if err := dec.Decode(&r); err != nil {
				break
			}
			p.replies <- r
		}
		close(p.replies)
		// Only now: Wait closes stdout, and the last reply (to close) may
		// still have been unread before EOF.
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// call sends c to every worker and returns their replies, in worker order.
func (f *fleet) call(c command) ([]reply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.procs {
		if err := p.enc.Encode(&c); err != nil {
			return nil, fmt.Errorf("worker %d: cannot send %s: %w", p.n, c.Op, err)
		}
	}
	out := make([]reply, len(f.procs))
	var errs []error
	for i, p := range f.procs {
		r, err := p.await(c.Op)
		out[i] = r
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

func (f *fleet) callOne(p *workerProc, c command) (reply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := p.enc.Encode(&c); err != nil {
		return reply{}, fmt.Errorf("worker %d: cannot send %s: %w", p.n, c.Op, err)
	}
	return p.await(c.Op)
}

func (p *workerProc) await(op string) (reply, error) {
	select {
	case r, ok := <-p.replies:
		switch {
		case !ok:
			return r, fmt.Errorf("worker %d exited during %s", p.n, op)
		case r.Err != "":
			return r, fmt.Errorf("worker %d: %s: %s", p.n, op, r.Err)
		}
		return r, nil
	case <-time.After(callTimeout):
		return reply{}, fmt.Errorf("worker %d: no answer to %s in %s", p.n, op, callTimeout)
	}
}

// close ends every worker: closing stdin makes a worker close its
// connections and exit; one that does not within a bound is killed.
func (f *fleet) close() {
	for _, p := range f.procs {
		_ = p.stdin.Close()
	}
	for _, p := range f.procs {
		select {
		case <-p.exited:
		case <-time.After(callTimeout):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
}

// pids are the workers' process ids, for their CPU time.
func (f *fleet) pids() []int {
	var pids []int
	for _, p := range f.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}
