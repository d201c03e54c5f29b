package main

import (
	"os"
	"os/exec"
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

// TestPin: pin sets the CPUs of every thread of another process.
func TestPin(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var set unix.CPUSet
	set.Set(0)
	if err := pin(cmd.Process.Pid, set); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Cpus_allowed_list:\t0\n") {
		t.Errorf("after pin to CPU 0, /proc/<pid>/status says:\n%s", b)
	}
}

// TestSmokePinned: a run with the load generator and the node pinned (to
// CPU 0, which every machine has) is a run like any other.
func TestSmokePinned(t *testing.T) {
	o := smoke(t, "steady")
	o.Spawn = nodeBinary(t)
	o.CPUs, o.SpawnCPUs = "0", "0"
	res := runScenario(t, o)
	mustPass(t, res, accountingChecks...)
	o.Spawn = ""
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "-spawn-cpus needs -spawn") {
		t.Errorf("-spawn-cpus without -spawn: %v", err)
	}
}
