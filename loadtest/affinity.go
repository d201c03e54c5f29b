package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/loadtest/result"
)

// On a machine of few cores the load generator and the node share them,
// and a frame's fanout is then the node's writes and the load generator's
// reads of it together. -cpus pins the load generator (and the worker
// processes it starts) to some CPUs and -spawn-cpus starts the spawned
// nodes on others, so that the node's figures are its own: the hot city against
// its bound (README Performance, issue 13.4), as taskset would, without a
// wrapper script around the node.

// parseCPUs reads a CPU list as taskset -c takes it: "1", "0,2", "0-3".
func parseCPUs(s string) (unix.CPUSet, error) {
	var set unix.CPUSet
	cpus, err := result.CPUs(s)
	for _, cpu := range cpus {
		set.Set(cpu)
	}
	return set, err
}

// usableCPUs parses a CPU list and checks that this process may run on
// each of its CPUs (the kernel would quietly leave out the others).
func usableCPUs(s string) (unix.CPUSet, error) {
	set, err := parseCPUs(s)
	if err != nil {
		return set, err
	}
	var avail unix.CPUSet
	if err := unix.SchedGetaffinity(0, &avail); err != nil {
		return set, err
	}
	for cpu := range 1024 {
		if set.IsSet(cpu) && !avail.IsSet(cpu) {
			return set, fmt.Errorf("CPU %d is not one this process may run on (%s)", cpu, cpuList(avail))
		}
	}
	return set, nil
}

// cpuList writes set as taskset -c takes it: "0-3,6".
func cpuList(set unix.CPUSet) string {
	var b strings.Builder
	for cpu := 0; cpu < 1024; cpu++ {
		if !set.IsSet(cpu) {
			continue
		}
		end := cpu
		for end+1 < 1024 && set.IsSet(end+1) {
			end++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpu))
		if end > cpu {
			b.WriteString("-" + strconv.Itoa(end))
		}
		cpu = end
	}
	return b.String()
}

// startOn starts cmd on cpus, or anywhere when cpus is nil: it forks from
// a thread of this process pinned to them for the moment, so that every
// thread of the child has them from its first instruction (a node sizes
// its loops by the CPUs it sees at start).
func startOn(cmd *exec.Cmd, cpus *unix.CPUSet) error {
	if cpus == nil {
		return cmd.Start()
	}
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	if err := unix.SchedSetaffinity(0, cpus); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	err := cmd.Start()
	// A thread whose affinity cannot be restored stays locked to this
	// goroutine (and ends with it) rather than go back to the pool
	// pinned. That is no reason to fail: the child has started, and an
	// error here would leave it running with nobody to stop it.
	if unix.SchedSetaffinity(0, &old) == nil {
		runtime.UnlockOSThread()
	}
	return err
}

// pin sets the CPU affinity of every thread of process pid to set. A
// thread inherits its maker's, so threads made afterwards are pinned too;
// one made from a thread not pinned yet while pin ran is caught by the
// next pass, until a pass finds every thread pinned.
func pin(pid int, set unix.CPUSet) error {
	for range 10 {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return err
		}
		changed := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			var cur unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &cur); errors.Is(err, unix.ESRCH) {
				continue // the thread has ended
			} else if err != nil {
				return err
			}
			if cur == set {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("cannot pin thread %d of process %d: %w", tid, pid, err)
			}
			changed = true
		}
		if !changed {
			return nil
		}
	}
	return fmt.Errorf("process %d makes threads faster than they can be pinned", pid)
}
