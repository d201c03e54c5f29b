package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCPUs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"0", []int{0}},
		{"1,3", []int{1, 3}},
		{"0-2,5", []int{0, 1, 2, 5}},
		{"4-4", []int{4}},
	} {
		set, err := parseCPUs(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if set.Count() != len(tc.want) {
			t.Errorf("%q: %d CPUs, want %v", tc.in, set.Count(), tc.want)
		}
		for _, c := range tc.want {
			if !set.IsSet(c) {
				t.Errorf("%q: CPU %d not in the set", tc.in, c)
			}
		}
	}
	for _, bad := range []string{"", ",", "a", "-1", "1-", "-", "3-1", "0,,1", "1024", "0-99999", " 1", "1.5"} {
		if _, err := parseCPUs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestPin: pin sets the CPUs of every thread of another process, and
// startOn starts one on them.
func TestPin(t *testing.T) {
	var set unix.CPUSet
	set.Set(0)
	allowed := func(pid int) string {
		t.Helper()
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		_, v, _ := strings.Cut(string(b), "Cpus_allowed_list:\t")
		v, _, _ = strings.Cut(v, "\n")
		return v
	}
	for _, started := range []bool{false, true} {
		cmd := exec.Command("sleep", "30")
		var err error
		if started {
			err = startOn(cmd, &set)
		} else if err = cmd.Start(); err == nil {
			err = pin(cmd.Process.Pid, set)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := allowed(cmd.Process.Pid); got != "0" {
			t.Errorf("started on CPU 0: %t; its CPUs: %s, want 0", started, got)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	// This process's own threads are as they were.
	var self unix.CPUSet
	if err := unix.SchedGetaffinity(0, &self); err != nil || self.Count() != runtime.NumCPU() {
		t.Errorf("after startOn this thread may run on %d CPUs, want %d (%v)", self.Count(), runtime.NumCPU(), err)
	}
}

// TestUsableCPUs: a CPU this process may not run on is refused by name
// (the kernel would leave it out of the set without a word).
func TestUsableCPUs(t *testing.T) {
	if _, err := usableCPUs("0"); err != nil {
		t.Errorf("CPU 0: %v", err)
	}
	_, err := usableCPUs("0,1000")
	if err == nil || !strings.Contains(err.Error(), "CPU 1000 is not one this process may run on") {
		t.Errorf("CPU 1000: %v", err)
	}
	var set unix.CPUSet
	set.Set(0)
	set.Set(1)
	set.Set(2)
	set.Set(5)
	if got := cpuList(set); got != "0-2,5" {
		t.Errorf("cpuList = %q, want 0-2,5", got)
	}
}

// TestSmokePinned: a run with the load generator and the node pinned
// apart (on a machine of one CPU, together) is a run like any other: the
// worker processes, pinned with the load generator, take the options too.
func TestSmokePinned(t *testing.T) {
	o := smoke(t, "steady")
	o.Spawn = nodeBinary(t)
	var avail unix.CPUSet
	if err := unix.SchedGetaffinity(0, &avail); err != nil {
		t.Fatal(err)
	}
	var cpus []string
	for cpu := 0; cpu < 1024; cpu++ {
		if avail.IsSet(cpu) {
			cpus = append(cpus, strconv.Itoa(cpu))
		}
	}
	o.CPUs, o.SpawnCPUs = cpus[len(cpus)-1], cpus[0]
	res := runScenario(t, o)
	mustPass(t, res, accountingChecks...)
	o.Spawn = ""
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "-spawn-cpus needs -spawn") {
		t.Errorf("-spawn-cpus without -spawn: %v", err)
	}
}
