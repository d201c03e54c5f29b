package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestServeHelp checks that `serve -h` lists every flag once, grouped under
// the topics of deploy/metrocast.yaml, each key under its section there.
func TestServeHelp(t *testing.T) {
	c, _, err := serveConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	serveUsage(&b, c)

	flagLine := regexp.MustCompile(`^  -([a-z0-9-]+)`)
	seen := map[string]int{}
	topicOf := map[string]string{}
	var topics []string
	for sc := bufio.NewScanner(&b); sc.Scan(); {
		line := sc.Text()
		if title, ok := strings.CutSuffix(line, ":"); ok && !strings.HasPrefix(line, " ") {
			topics = append(topics, title)
		}
		if m := flagLine.FindStringSubmatch(line); m != nil {
			seen[m[1]]++
			if len(topics) > 0 {
				topicOf[keyName(m[1])] = topics[len(topics)-1]
			}
		}
	}
	c.fs.VisitAll(func(f *flag.Flag) {
		if seen[f.Name] != 1 {
			t.Errorf("serve -h lists -%s %d times, want once", f.Name, seen[f.Name])
		}
	})

	yml, err := os.ReadFile("../../deploy/metrocast.yaml")
	if err != nil {
		t.Fatal(err)
	}
	section := regexp.MustCompile(`^# --- ([a-z -]+?) -+$`)
	key := regexp.MustCompile(`^([a-z0-9_]+):`)
	var sections []string
	for line := range strings.Lines(string(yml)) {
		line = strings.TrimSuffix(line, "\n")
		if m := section.FindStringSubmatch(line); m != nil {
			sections = append(sections, m[1])
		} else if m := key.FindStringSubmatch(line); m != nil && len(sections) > 0 {
			if got := topicOf[m[1]]; got != sections[len(sections)-1] {
				t.Errorf("serve -h lists -%s under %q, deploy/metrocast.yaml under %q", flagName(m[1]), got, sections[len(sections)-1])
			}
		}
	}
	if strings.Join(topics, ",") != strings.Join(sections, ",") {
		t.Errorf("serve -h topics %q, deploy/metrocast.yaml sections %q", topics, sections)
	}
}

func TestNearestFlag(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	for _, name := range []string{"ring-size", "ring-bytes", "addr", "admin-addr", "token", "sub", "max-conns", "max-conns-per-ip"} {
		fs.Bool(name, false, "")
	}
	f := func(in, want string) {
		t.Helper()
		if got := nearestFlag(fs, in); got != want {
			t.Errorf("nearestFlag(%q) = %q, want %q", in, got, want)
		}
	}
	f("ring-size", "ring-size")
	f("ring-sise", "ring-size")
	f("ringsize", "ring-size")
	f("ring_size", "ring-size")
	f("RING_SIZE", "ring-size")
	f("ring-byte", "ring-bytes")
	f("adr", "addr")
	f("tokn", "token")
	f("sbu", "sub")
	f("max-conn-per-ip", "max-conns-per-ip")
	// Nothing close: no guess.
	f("zzz", "")
	f("x", "")
	f("listen", "")
	f("ingest-address", "")
}

// TestCLIHelp runs the binary: -h prints the help to stdout and exits 0 for
// every command; a mistake is one line on stderr with a hint, exit 2.
func TestCLIHelp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir() // no file named -h here
	run := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%v: %v", args, err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}
	for _, args := range [][]string{
		{"serve", "-h"}, {"serve", "--help"}, {"token", "-h"}, {"push", "-h"}, {"sub", "-h"},
		{"config", "check", "-h"}, {"config", "-h"}, {"-h"}, {"help"},
	} {
		out, errOut, code := run(args...)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "usage: metrocast") {
			t.Errorf("%v: exit %d, stdout %q…, stderr %q; want the help on stdout, exit 0", args, code, firstLine(out), errOut)
		}
	}
	out, _, _ := run("serve", "-h")
	for _, want := range []string{"\nlisteners:\n", "\nsecurity:\n", "\ncluster:\n", "  -ring-size int", "(default 1024)"} {
		if !strings.Contains(out, want) {
			t.Errorf("serve -h has no %q", want)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "-ring-sise", "5"}, "metrocast: serve: unknown flag -ring-sise (did you mean -ring-size? metrocast serve -h lists the flags)\n"},
		{[]string{"serve", "-RING_SIZE", "5"}, "did you mean -ring-size?"},
		{[]string{"token", "-sbu", "alice"}, "did you mean -sub?"},
		{[]string{"push", "-tokn-file", "x"}, "did you mean -token-file?"},
		{[]string{"sub", "-fliter", "{}", "nairobi"}, "did you mean -filter?"},
		{[]string{"sub"}, "name at least one city"},
		{[]string{"serve", "-zzz"}, "metrocast: serve: unknown flag -zzz (metrocast serve -h lists the flags)\n"},
		{[]string{"serve", "-ring-size", "many"}, `invalid value "many" for flag -ring-size`},
		{[]string{"serve", "extra"}, `unexpected argument "extra"`},
		{[]string{"config", "check"}, "metrocast config check FILE"},
	} {
		out, errOut, code := run(tc.args...)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
