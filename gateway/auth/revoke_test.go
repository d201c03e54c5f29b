package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRevocations(t *testing.T) {
	r, err := parseRevocations([]byte("# leaked\r\nsub alice\n\njti 3f2b 9c\nsub bob\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sub, jti string
		want     bool
	}{
		{"alice", "", true}, {"bob", "x", true}, {"carol", "3f2b 9c", true},
		{"carol", "3f2b", false}, {"carol", "", false}, {"", "", false},
	} {
		if got := r.revokes(c.sub, c.jti); got != c.want {
			t.Errorf("revokes(%q, %q) = %v, want %v", c.sub, c.jti, got, c.want)
		}
	}
	if r, err := parseRevocations(nil); err != nil || !r.empty() {
		t.Fatalf("empty file: %v %v", r, err)
	}
	for _, bad := range []string{
		"alice",
		"sub",
		"sub ",
		"SUB alice",
		" sub alice",
		"sub\talice",
		"kid k1",
		"sub " + strings.Repeat("x", MaxRevokedIDLen+1),
		"sub ok\n\xff",
		strings.Repeat("sub x\n", MaxRevokedBytes/6+1),
		strings.Repeat("#", MaxRevokedBytes+1),
	} {
		if _, err := parseRevocations([]byte(bad)); !errors.Is(err, errRevocations) {
			name := bad
			if len(name) > 40 {
				name = name[:40] + "…"
			}
			t.Errorf("parseRevocations(%q): %v, want errRevocations", name, err)
		}
	}
	var many strings.Builder
	for i := range maxRevokedEntries + 1 {
		fmt.Fprintf(&many, "jti %d\n", i)
	}
	if _, err := parseRevocations([]byte(many.String())); err == nil || !strings.Contains(err.Error(), "entries") {
		t.Fatalf("%d entries: %v", maxRevokedEntries+1, err)
	}
}

// FuzzParseRevocations: whatever parses revokes exactly its lines' values.
func FuzzParseRevocations(f *testing.F) {
	for _, s := range []string{"sub alice\njti x\n", "# c\n\nsub a b\r\n", "sub", "jti \n", "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRevocations(b)
		if err != nil {
			if !errors.Is(err, errRevocations) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSuffix(line, "\r")
			if strings.TrimSpace(line) == "" || line[0] == '#' {
				continue
			}
			n++
			kind, id, _ := strings.Cut(line, " ")
			if kind == "sub" && !r.revokes(id, "") || kind == "jti" && !r.revokes("\x00none", id) {
				t.Fatalf("line %q parsed but not revoked", line)
			}
		}
		if len(r.subs)+len(r.jtis) > n {
			t.Fatalf("%d entries from %d lines", len(r.subs)+len(r.jtis), n)
		}
	})
}

func TestParseRevokeRequest(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	f := func(body string, want Revocation) {
		t.Helper()
		got, err := ParseRevokeRequest([]byte(body), now)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", body, got, err, want)
		}
	}
	f(`{"sub":"alice","ttl":"24h"}`, Revocation{"sub", "alice", now.Add(24 * time.Hour)})
	f(`{"jti":"3f2b 9c","exp":1800003600}`, Revocation{"jti", "3f2b 9c", time.Unix(1_800_003_600, 0)})
	f(` {"exp":1800000001, "sub":"é"} `, Revocation{"sub", "é", time.Unix(1_800_000_001, 0)})
	for _, bad := range []string{
		``, `null`, `[]`, `{}`, `{"sub":null,"ttl":"1h"}`, `{"sub":1,"ttl":"1h"}`,
		`{"sub":"a","ttl":"0s"}`, `{"sub":"a","ttl":"1"}`, `{"sub":"a","exp":1800000000}`,
		`{"sub":"a","exp":1.5}`, `{"sub":"a","exp":1e20}`, `{"sub":"` + strings.Repeat("x", MaxRevokedIDLen+1) + `","ttl":"1h"}`,
		`{"sub":"a","ttl":"1h"} x`, `{"sub":"a","ttl":"1h","sub":"b","jti":"c"}`,
	} {
		if _, err := ParseRevokeRequest([]byte(bad), now); !errors.Is(err, errRevokeRequest) {
			t.Errorf("%.60s: %v, want errRevokeRequest", bad, err)
		}
	}
}

// FuzzParseRevokeRequest: a revocation that parses is a sub or a jti of
// 1-MaxRevokedIDLen bytes, expiring within maxRevokeTTL.
func FuzzParseRevokeRequest(f *testing.F) {
	for _, s := range []string{`{"sub":"alice","ttl":"24h"}`, `{"jti":"x","exp":1800003600}`, `{"sub":"a","ttl":"1h"}{}`, `{"exp":-1}`} {
		f.Add([]byte(s))
	}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRevokeRequest(b, now)
		if err != nil {
			if !errors.Is(err, errRevokeRequest) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if r.Kind != "sub" && r.Kind != "jti" || len(r.ID) == 0 || len(r.ID) > MaxRevokedIDLen ||
			!r.Until.After(now) || r.Until.After(now.Add(maxRevokeTTL)) {
			t.Fatalf("%q parsed as %+v", b, r)
		}
	})
}

func TestTimedRevocations(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	var tr *timedRevocations
	if tr.revokes("a", "", now.UnixNano()) || tr.size() != 0 {
		t.Fatal("nil revokes")
	}
	tr, err := tr.with([]Revocation{{"sub", "a", at(time.Hour)}, {"jti", "j", at(time.Minute)}, {"sub", "gone", at(-time.Second)}}, now.UnixNano())
	if err != nil || tr.size() != 2 {
		t.Fatalf("%v %v", tr, err)
	}
	f := func(sub, jti string, when time.Duration, want bool) {
		t.Helper()
		if got := tr.revokes(sub, jti, at(when).UnixNano()); got != want {
			t.Errorf("revokes(%q, %q) at +%s = %v, want %v", sub, jti, when, got, want)
		}
	}
	f("a", "", 0, true)
	f("a", "", time.Hour, false)
	f("b", "j", 0, true)
	f("b", "j", 2*time.Minute, false)
	f("b", "", 0, false)
	f("gone", "", 0, false)
	// Lifted (a zero until), and the expired dropped on the next change.
	next, err := tr.with([]Revocation{{Kind: "sub", ID: "a"}}, at(2*time.Minute).UnixNano())
	if err != nil || next.size() != 0 {
		t.Fatalf("after lifting a and j's expiry: %d entries, %v", next.size(), err)
	}
	f("a", "", 0, true) // tr itself is unchanged
	many := make([]Revocation, maxRevokedEntries+1)
	for i := range many {
		many[i] = Revocation{"jti", fmt.Sprint(i), at(time.Hour)}
	}
	if _, err := tr.with(many, now.UnixNano()); !errors.Is(err, errRevocationsFull) {
		t.Fatalf("%d entries: %v", len(many)+2, err)
	}
}

// TestRevokeRefusesInvalid: Authenticator.Revoke takes only what every
// node of a cluster takes from the revocation bucket (Revocation.Valid):
// a kind "sbu" revoked subject x on the node that was asked, and the
// others refused its bucket entry.
func TestRevokeRefusesInvalid(t *testing.T) {
	a, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	for _, r := range []Revocation{{"sbu", "x", until}, {"sub", "", until}, {"jti", strings.Repeat("j", MaxRevokedIDLen+1), until}} {
		if err := a.Revoke(r); err == nil {
			t.Errorf("Revoke(%q %q) took it", r.Kind, r.ID)
		}
	}
	if err := a.Revoke(Revocation{"sub", "ok", until}, Revocation{"sbu", "x", until}); err == nil {
		t.Error("Revoke of a valid and an invalid revocation took them")
	}
	if ks := a.Keys(); ks.Revokes("x", "", time.Now().UnixNano()) || ks.Revokes("ok", "", time.Now().UnixNano()) {
		t.Error("a refused Revoke revoked something")
	}
	if err := a.Revoke(Revocation{"sub", "ok", until}); err != nil || !a.Keys().Revokes("ok", "", time.Now().UnixNano()) {
		t.Errorf("valid revocation: %v", err)
	}
}

// TestWatchFilesChangeBeforeFirstLook: a revocation file changed after New
// read it but before WatchFiles first looked at it is reloaded. The
// watcher used to take the files as they were when it started as its
// reference, and so missed such a change until the next one (seen as a
// flaky TestAuthFileWatch).
func TestWatchFilesChangeBeforeFirstLook(t *testing.T) {
	cfg := testConfig(t)
	cfg.RevokedFile = filepath.Join(t.TempDir(), "revoked")
	cfg.ReloadInterval = 10 * time.Millisecond
	if err := os.WriteFile(cfg.RevokedFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.RevokedFile, []byte("sub eve\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go a.WatchFiles(stop)
	deadline := time.Now().Add(10 * time.Second)
	for !a.Keys().Revokes("eve", "", time.Now().UnixNano()) {
		if time.Now().After(deadline) {
			t.Fatal("the change made before the watcher started was not reloaded")
		}
		time.Sleep(cfg.ReloadInterval)
	}
}
