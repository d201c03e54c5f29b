package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which is 100 on every Linux ABI Go supports (sysconf(_SC_CLK_TCK) needs
// cgo; `getconf CLK_TCK` confirms it on the machine at hand).
const clockTick = 10 * time.Millisecond

// rss returns the resident set size of pids (VmRSS), together, in bytes.
func rss(pids ...int) (int64, error) { return sumOver(pids, rssOf) }

// cpuTime returns the user+system CPU time pids have used, all threads,
// together.
func cpuTime(pids ...int) (time.Duration, error) { return sumOver(pids, cpuTimeOf) }

// sumOver adds up f of each pid.
func sumOver[T int64 | time.Duration](pids []int, f func(int) (T, error)) (T, error) {
	var sum T
	for _, pid := range pids {
		v, err := f(pid)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read RSS: %w", err)
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(v) // "123456 kB"
			if len(f) != 2 || string(f[1]) != "kB" {
				break
			}
			kb, err := strconv.ParseInt(string(f[0]), 10, 64)
			if err != nil {
				break
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("cannot parse VmRSS in /proc/%d/status", pid)
}

func cpuTimeOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read CPU time: %w", err)
	}
	// The command name (field 2) may hold spaces: count from the ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("cannot parse /proc/%d/stat", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("cannot parse /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cannot parse utime/stime in /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// machineBusy returns the CPU time all processes have used (everything in
// the cpu line of /proc/stat but idle and iowait), to tell how much of a
// run's window other programs took.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("cannot read /proc/stat: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return 0, fmt.Errorf("cannot parse /proc/stat")
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cannot parse /proc/stat: %w", err)
		}
		if i < 8 { // guest time is already counted in user
			busy += n
		}
	}
	return time.Duration(busy) * clockTick, nil
}
