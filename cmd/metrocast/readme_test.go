package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A README doc test runs the fenced blocks of README.md that a marker, an
// HTML comment on the line before the fence, names, in order, as written,
// with bash in the repository's root:
//
//	<!-- doc-test start=NAME [lines=N[-M]] ready=/readyz|TEXT -->
//	    runs the block (or its lines N to M) in the background until the
//	    test ends; waits until the node's /readyz answers 200, or until
//	    its stdout has a line containing TEXT.
//	<!-- doc-test run [lines=N[-M]] -->
//	    runs the block (or its lines N to M); it must exit 0.
//	<!-- doc-test stdout -->
//	    the block is what the last run block printed on stdout.
//	<!-- doc-test output=NAME -->
//	    the block is the first lines the background block NAME printed.
//
// Printed lines are compared as JSON when they are JSON, where a number
// under "epoch" or "timestamp" stands for any number (they differ from
// run to run). The node listens on free loopback ports given to every
// block in METROCAST_ADDR, METROCAST_INGEST_ADDR and METROCAST_ADMIN_ADDR:
// serve listens, and sub and push dial, where these say, so the blocks run
// unchanged beside whatever else holds the default ports.

// docBlock is a fenced block with a doc-test marker.
type docBlock struct {
	line  int // of the opening fence, 1-based
	attrs map[string]string
	text  string
}

var docMarker = regexp.MustCompile(`^<!-- doc-test (.*) -->$`)

// readDocBlocks returns the marked blocks of a Markdown file.
func readDocBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var blocks []docBlock
	for i := 0; i < len(lines); i++ {
		m := docMarker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
			t.Fatalf("%s:%d: a doc-test marker must stand right above a fenced block", path, i+1)
		}
		blk := docBlock{line: i + 2, attrs: map[string]string{}}
		for _, f := range strings.Fields(m[1]) {
			k, v, _ := strings.Cut(f, "=")
			blk.attrs[k] = v
		}
		var body []string
		for i += 2; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: the block never ends", path, blk.line)
		}
		blk.text = strings.Join(body, "\n")
		blocks = append(blocks, blk)
	}
	return blocks
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// docEnv is the environment of the blocks: the test's, as a user's shell
// would have it, without settings of metrocast or of a make that runs this
// test, plus the node's addresses.
func docEnv(addr, ingest, admin string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "METROCAST_") || k == "MAKEFLAGS" || k == "MFLAGS" || k == "MAKELEVEL" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "METROCAST_ADDR="+addr, "METROCAST_INGEST_ADDR="+ingest, "METROCAST_ADMIN_ADDR="+admin,
		// Stopping the node at the end of the test need not take the
		// default 10 s drain.
		"METROCAST_DRAIN_WINDOW=500ms")
}

// TestREADMEDocBlocks runs the README's marked blocks, its first screen
// among them (make run, metrocast sub, metrocast push), against a live
// node, so that the commands a newcomer copies cannot drift from what
// works.
func TestREADMEDocBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the binary with make run")
	}
	for _, tool := range []string{"bash", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README's commands need %s: %v", tool, err)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	readme := filepath.Join(root, "README.md")
	blocks := readDocBlocks(t, readme)
	if len(blocks) == 0 {
		t.Fatal("README.md has no doc-test blocks")
	}
	admin := freeAddr(t)
	env := docEnv(freeAddr(t), freeAddr(t), admin)
	bg := map[string]*docProc{}
	var lastStdout string
	for _, b := range blocks {
		where := fmt.Sprintf("README.md:%d", b.line)
		switch {
		case b.attrs["start"] != "":
			p := startDocProc(t, root, env, b.lines(t, where))
			bg[b.attrs["start"]] = p
			p.waitReady(t, where, b.attrs["ready"], admin)
		case hasAttr(b, "run"):
			lastStdout = runDocBlock(t, where, root, env, b.lines(t, where))
		case hasAttr(b, "stdout"):
			compareDocLines(t, where, strings.Split(strings.TrimSuffix(lastStdout, "\n"), "\n"), b.text)
		case b.attrs["output"] != "":
			p := bg[b.attrs["output"]]
			if p == nil {
				t.Fatalf("%s: output=%s: no block started under that name", where, b.attrs["output"])
			}
			want := strings.Split(b.text, "\n")
			got := p.waitLines(t, where, len(want))
			compareDocLines(t, where, got, b.text)
		default:
			t.Fatalf("%s: a doc-test marker needs start=, run, stdout or output=", where)
		}
	}
}

func hasAttr(b docBlock, k string) bool { _, ok := b.attrs[k]; return ok }

// lines returns the lines of the block its lines= attribute names ("2",
// "1-2"), or all of them.
func (b docBlock) lines(t *testing.T, where string) string {
	t.Helper()
	spec, ok := b.attrs["lines"]
	if !ok {
		return b.text
	}
	ls := strings.Split(b.text, "\n")
	from, to, ranged := strings.Cut(spec, "-")
	if !ranged {
		to = from
	}
	i, err1 := strconv.Atoi(from)
	j, err2 := strconv.Atoi(to)
	if err1 != nil || err2 != nil || i < 1 || j < i || j > len(ls) {
		t.Fatalf("%s: lines=%s: the block has %d lines", where, spec, len(ls))
	}
	return strings.Join(ls[i-1:j], "\n")
}

// runDocBlock runs text with bash and returns its stdout.
func runDocBlock(t *testing.T, where, dir string, env []string, text string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", text)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %s\n%v\nstdout:\n%s\nstderr:\n%s", where, text, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// docProc is a block running in the background, in a process group of its
// own (make run starts the node as its child).
type docProc struct {
	text   string
	cmd    *exec.Cmd
	out    *lines
	stderr *lines
	done   chan struct{}
}

func startDocProc(t *testing.T, dir string, env []string, text string) *docProc {
	t.Helper()
	p := &docProc{text: text, out: &lines{}, stderr: &lines{}, done: make(chan struct{})}
	p.cmd = exec.Command("bash", "-c", text)
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

// fail reports the process's output.
func (p *docProc) fail(t *testing.T, where, why string) {
	t.Helper()
	t.Fatalf("%s: %s: %s\nstdout:\n%s\nstderr:\n%s", where, p.text, why,
		strings.Join(p.out.all(), "\n"), strings.Join(p.stderr.all(), "\n"))
}

// waitReady waits until the node at admin is ready (ready=/readyz) or the
// process printed a line containing ready.
func (p *docProc) waitReady(t *testing.T, where, ready, admin string) {
	t.Helper()
	// make run builds the binary first: give a cold build cache time.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		select {
		case <-p.done:
			p.fail(t, where, "exited before it was ready")
		default:
		}
		if ready == "/readyz" {
			if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
		} else if strings.Contains(strings.Join(p.out.all(), "\n"), ready) {
			return
		}
		if time.Now().After(deadline) {
			p.fail(t, where, "not ready ("+ready+") in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLines waits until the process printed n lines and returns them.
func (p *docProc) waitLines(t *testing.T, where string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got := p.out.all(); len(got) >= n && got[n-1] != "" {
			return got[:n]
		}
		if time.Now().After(deadline) {
			p.fail(t, where, fmt.Sprintf("printed fewer than %d lines in time", n))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// compareDocLines compares printed lines with a block of expected ones.
func compareDocLines(t *testing.T, where string, got []string, want string) {
	t.Helper()
	ws := strings.Split(want, "\n")
	ok := len(got) == len(ws)
	for i := 0; ok && i < len(ws); i++ {
		ok = docLineMatches(got[i], ws[i])
	}
	if !ok {
		t.Errorf("%s: the README shows\n%s\nbut the command printed\n%s", where, want, strings.Join(got, "\n"))
	}
}

// docLineMatches compares a printed line with the README's: as JSON when
// both are, with any number for a number under epoch or timestamp.
func docLineMatches(got, want string) bool {
	var g, w any
	if json.Unmarshal([]byte(got), &g) != nil || json.Unmarshal([]byte(want), &w) != nil {
		return got == want
	}
	return docValueMatches(g, w, "")
}

func docValueMatches(g, w any, key string) bool {
	switch w := w.(type) {
	case map[string]any:
		gm, ok := g.(map[string]any)
		if !ok || len(gm) != len(w) {
			return false
		}
		for k, wv := range w {
			gv, ok := gm[k]
			if !ok || !docValueMatches(gv, wv, k) {
				return false
			}
		}
		return true
	case []any:
		ga, ok := g.([]any)
		if !ok || len(ga) != len(w) {
			return false
		}
		for i := range w {
			if !docValueMatches(ga[i], w[i], key) {
				return false
			}
		}
		return true
	case float64:
		if key == "epoch" || key == "timestamp" {
			_, ok := g.(float64)
			return ok
		}
	}
	return reflect.DeepEqual(g, w)
}

// TestDocLineMatches: the comparison of printed lines with the README's.
func TestDocLineMatches(t *testing.T) {
	f := func(got, want string, match bool) {
		t.Helper()
		if docLineMatches(got, want) != match {
			t.Errorf("docLineMatches(%s, %s) = %v", got, want, !match)
		}
	}
	f(`{"a":1}`, `{"a":1}`, true)
	f(`{"a":1}`, `{"a":2}`, false)
	f(`{"a":1,"b":2}`, `{"a":1}`, false)
	f(`{"epoch":17,"x":[{"timestamp":5}]}`, `{"epoch":1,"x":[{"timestamp":9}]}`, true)
	f(`{"epoch":"17"}`, `{"epoch":1}`, false)
	f(`{"seq":2}`, `{"seq":1}`, false)
	f(`plain`, `plain`, true)
	f(`plain`, `other`, false)
}
