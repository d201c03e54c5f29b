package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// The seams of the module, as its import graph (issue 15): cmd/metrocast
// wires the core (gateway) to its bus (gateway/cluster), ingest
// (gateway/ingest) and auth (gateway/auth); the core owns the interfaces
// and imports none of NATS; the bus reaches the core only through them.
const module = "github.com/metrocast/metrocast"

// Module packages by role.
const (
	pkgCore    = module + "/gateway"
	pkgCluster = module + "/gateway/cluster"
	pkgIngest  = module + "/gateway/ingest"
	pkgAuth    = module + "/gateway/auth"
	pkgCodec   = module + "/codec"
)

// Third-party roots the rules name.
const (
	natsRoot = "github.com/nats-io/"
	gnetRoot = "github.com/panjf2000/gnet"
)

// pkgImports is what go list tells of one package: its own imports and
// all it depends on, test files aside.
type pkgImports struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// within reports whether path is root or a package below it.
func within(path, root string) bool {
	return path == root || strings.HasPrefix(path, strings.TrimSuffix(root, "/")+"/")
}

// importRule says, of one package's direct imports (deps false) or all it
// depends on (deps true), which are forbidden, and why.
type importRule struct {
	pkg     func(string) bool
	deps    bool
	forbids func(string) bool
	why     string
}

var importRules = []importRule{
	{
		pkg:     func(p string) bool { return p == pkgCore },
		deps:    true,
		forbids: func(d string) bool { return within(d, natsRoot) || within(d, pkgCluster) },
		why:     "the core owns the Bus interface (gateway/bus.go) and knows nothing of NATS: that is gateway/cluster's, wired by cmd/metrocast",
	},
	{
		pkg:  func(p string) bool { return p == pkgCluster },
		deps: false,
		forbids: func(d string) bool {
			return within(d, module) && d != pkgCore && d != pkgCodec
		},
		why: "the NATS bus reaches the node only through the core's interface types (gateway) and codec",
	},
	{
		pkg:  func(p string) bool { return within(p, pkgAuth) },
		deps: true,
		forbids: func(d string) bool {
			return within(d, pkgCore) || within(d, gnetRoot) || within(d, natsRoot)
		},
		why: "auth is a leaf the core asks: no gateway, no gnet, no NATS",
	},
	{
		pkg:     func(p string) bool { return within(p, pkgIngest) },
		deps:    true,
		forbids: func(d string) bool { return within(d, natsRoot) || within(d, pkgCluster) },
		why:     "ingest hands lines to the core's bus interface, whatever carries them",
	},
	{
		pkg:     func(p string) bool { return p != pkgCore && within(p, module) },
		deps:    false,
		forbids: func(d string) bool { return within(d, gnetRoot) },
		why:     "only the core imports gnet: its event loops are the core's",
	},
}

// TestImportGraph checks the module's import graph against importRules,
// from go list: a forbidden arrow fails with its two ends and the rule.
func TestImportGraph(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipped: no go command in PATH: %s", err)
	}
	cmd := exec.Command(goBin, "list", "-json=ImportPath,Imports,Deps", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %s\n%s", err, stderr.Bytes())
	}
	pkgs := map[string]pkgImports{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkgImports
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %s", err)
		}
		pkgs[p.ImportPath] = p
	}
	for _, want := range []string{pkgCore, pkgCluster, pkgCodec} {
		if _, ok := pkgs[want]; !ok {
			t.Fatalf("go list does not list %s: the rules below would hold vacuously", want)
		}
	}
	for _, p := range pkgs {
		for _, r := range importRules {
			if r.pkg(p.ImportPath) {
				checkRule(t, pkgs, p, r)
			}
		}
	}
}

// checkRule reports p's forbidden arrows under r, each as the direct
// import that makes it (with, for a rule on dependencies, the forbidden
// package it brings in).
func checkRule(t *testing.T, pkgs map[string]pkgImports, p pkgImports, r importRule) {
	t.Helper()
	for _, d := range p.Imports {
		if r.forbids(d) {
			t.Errorf("forbidden import %s → %s: %s", p.ImportPath, d, r.why)
			continue
		}
		if !r.deps {
			continue
		}
		for _, dd := range pkgs[d].Deps {
			if r.forbids(dd) {
				t.Errorf("forbidden import %s → %s, which depends on %s: %s", p.ImportPath, d, dd, r.why)
				break
			}
		}
	}
}

// TestImportRules checks that each rule catches the arrow it is about, so
// that a rule that matches nothing cannot pass for a kept seam.
func TestImportRules(t *testing.T) {
	f := func(from, to string, deps bool, want bool) {
		t.Helper()
		got := false
		for _, r := range importRules {
			if r.pkg(from) && r.deps == deps && r.forbids(to) {
				got = true
			}
		}
		if got != want {
			t.Errorf("%s → %s (deps %v): forbidden %v, want %v", from, to, deps, got, want)
		}
	}
	f(pkgCore, "github.com/nats-io/nats.go", true, true)
	f(pkgCore, "github.com/nats-io/nats.go/jetstream", true, true)
	f(pkgCore, pkgCluster, true, true)
	f(pkgCore, gnetRoot+"/v2", false, false)
	f(pkgCore, pkgCodec, true, false)
	f(pkgCluster, pkgCore, false, false)
	f(pkgCluster, pkgCodec, false, false)
	f(pkgCluster, "github.com/nats-io/nats.go", false, false)
	f(pkgCluster, pkgAuth, false, true)
	f(pkgCluster, pkgIngest, false, true)
	f(pkgCluster, gnetRoot+"/v2", false, true)
	f(pkgAuth, pkgCore, true, true)
	f(pkgAuth, gnetRoot+"/v2/pkg/logging", true, true)
	f(pkgAuth, "github.com/nats-io/nats.go", true, true)
	f(pkgAuth, pkgCodec, true, false)
	f(pkgIngest, "github.com/nats-io/nats.go", true, true)
	f(pkgIngest, pkgCluster, true, true)
	f(pkgIngest, gnetRoot+"/v2", false, true)
	f(pkgIngest, pkgCore, true, false)
	f(module+"/cmd/metrocast", pkgCluster, false, false)
	f(module+"/cmd/metrocast", gnetRoot+"/v2", false, true)
}
