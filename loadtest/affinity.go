package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// On a machine of few cores the load generator and the node share them,
// and a frame's fanout is then the node's writes and the load generator's
// reads of it together. -cpus pins the load generator (and the worker
// processes it starts) to some CPUs and -spawn-cpus the spawned nodes to
// others, so that the node's figures are its own: the hot city against
// its bound (README Performance, issue 13.4), as taskset would, without a
// wrapper script around the node.

// parseCPUs reads a CPU list as taskset -c takes it: "1", "0,2", "0-3".
func parseCPUs(s string) (unix.CPUSet, error) {
	var set unix.CPUSet
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= 1024 {
			return set, fmt.Errorf("cannot parse CPU list %q: want CPU numbers and ranges, as in 0,2-3", s)
		}
		for cpu := a; cpu <= b; cpu++ {
			set.Set(cpu)
		}
	}
	return set, nil
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
