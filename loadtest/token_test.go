package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// writeSecret writes an HMAC secret file and returns its path.
func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hmac-secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// secureArgs are the flags of a smoke run against a node of its own that
// checks tokens with secret.
func secureArgs(bin, secret string, more ...string) []string {
	return append([]string{"-spawn", bin, "-auth-hmac-secret-file", secret, "-conns", "60", "-cities", "3",
		"-rate", "10", "-duration", "1s", "-warmup", "300ms", "-progress", "0"}, more...)
}

// TestSmokeSecureNode: against a node with a secret, loadtest mints its
// token with the same secret and every check of accounting passes, on the
// URL and with the dashboards' auth message.
func TestSmokeSecureNode(t *testing.T) {
	bin := nodeBinary(t)
	secret := writeSecret(t, "0123456789abcdef0123456789abcdef")
	for _, sub := range []string{"url", "auth"} {
		o, err := parseFlags("steady", secureArgs(bin, secret, "-subscribe", sub), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		mustPass(t, runScenario(t, o), accountingChecks...)
	}
}

// TestRefusalsReported: a run the node refuses says how, by HTTP status
// and code, and where a token comes from.
func TestRefusalsReported(t *testing.T) {
	bin := nodeBinary(t)
	secret := writeSecret(t, "0123456789abcdef0123456789abcdef")
	t.Chdir(t.TempDir()) // no bin/demo-hmac-secret here
	t.Setenv("METROCAST_TOKEN", "")
	t.Setenv("METROCAST_AUTH_HMAC_SECRET", "")
	bad := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(bad, []byte("not.a.token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := func(want string, args ...string) {
		t.Helper()
		o, err := parseFlags("steady", args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		o.SecretFile = secret // the node's: the spawned node checks tokens
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err = run(ctx, o, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "-token-file") {
			t.Errorf("loadtest %v: %v, want it to say %q and where a token comes from", args, err, want)
		}
	}
	base := []string{"-spawn", bin, "-conns", "20", "-cities", "2", "-duration", "1s", "-progress", "0"}
	f("the node refused 20 with 401 auth_required", base...)
	f("the node refused 20 with 401 invalid_token", append(base, "-token-file", bad)...)
}

// TestResolveTokens: where the tokens come from, in order.
func TestResolveTokens(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("METROCAST_TOKEN", "")
	t.Setenv("METROCAST_INGEST_TOKEN", "")
	t.Setenv("METROCAST_AUTH_HMAC_SECRET", "")
	tokFile := filepath.Join(dir, "tok")
	if err := os.WriteFile(tokFile, []byte(" from-file \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) *options {
		t.Helper()
		o, err := parseFlags("steady", args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return o
	}
	if o := parse(); o.Token != "" || o.IngestToken != "" {
		t.Errorf("no token anywhere: %q %q, want none", o.Token, o.IngestToken)
	}
	if o := parse("-token-file", tokFile); o.Token != "from-file" {
		t.Errorf("-token-file: %q", o.Token)
	}
	t.Setenv("METROCAST_TOKEN", "from-env")
	t.Setenv("METROCAST_INGEST_TOKEN", "producer")
	if o := parse(); o.Token != "from-env" || o.IngestToken != "producer" {
		t.Errorf("METROCAST_TOKEN: %q %q", o.Token, o.IngestToken)
	}
	t.Setenv("METROCAST_TOKEN", "")
	t.Setenv("METROCAST_INGEST_TOKEN", "")

	// The demo secret of make run, in the directory loadtest runs in.
	if err := os.Mkdir("bin", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(demoSecret, []byte("demo secret of 32 bytes or more.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	claims := func(tok, secret string) jwt.MapClaims {
		t.Helper()
		c := jwt.MapClaims{}
		if _, err := jwt.ParseWithClaims(tok, c, func(*jwt.Token) (any, error) { return []byte(secret), nil }); err != nil {
			t.Fatalf("minted token: %v", err)
		}
		return c
	}
	o := parse()
	c := claims(o.Token, "demo secret of 32 bytes or more.")
	if c["sub"] != "loadtest" || !strings.Contains(strings.Join(claimList(c["cities"]), ","), "*") ||
		!strings.Contains(strings.Join(claimList(c["publish"]), ","), "*") {
		t.Errorf("minted claims %v: want sub loadtest, every city to follow and publish", c)
	}
	if o.IngestToken != "" {
		t.Errorf("a loopback ingest port takes no token, got %q", o.IngestToken)
	}
	if o := parse("-ingest", "10.0.0.5:7070"); o.IngestToken != o.Token {
		t.Errorf("ingest beyond loopback: producer token %q, want the minted one", o.IngestToken)
	}
	other := writeSecret(t, "another secret of 32 bytes or more")
	claims(parse("-auth-hmac-secret-file", other).Token, "another secret of 32 bytes or more")
	if _, err := parseFlags("steady", []string{"-auth-hmac-secret-file", filepath.Join(dir, "missing")}, io.Discard); err == nil {
		t.Error("a missing -auth-hmac-secret-file: no error")
	}
	if _, err := parseFlags("steady", []string{"-token", "x"}, io.Discard); err == nil || !strings.Contains(err.Error(), "-token-file") {
		t.Errorf("-token on the command line: %v, want a refusal naming -token-file", err)
	}
}

// claimList returns a claim's list of strings.
func claimList(v any) []string {
	var s []string
	l, _ := v.([]any)
	for _, e := range l {
		if str, ok := e.(string); ok {
			s = append(s, str)
		}
	}
	return s
}
