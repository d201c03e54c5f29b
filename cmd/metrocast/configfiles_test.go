package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestConfigCheckOpensFiles: config check fails on a file the node could
// not read, naming the key and where it was set, and on a key file the
// node could not use.
func TestConfigCheckOpensFiles(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "hmac-secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("too short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "broken.pem"), []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	f := func(text string, env map[string]string, want ...string) {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		err := configCheck(&bytes.Buffer{}, writeConfig(t, text))
		for k := range env {
			t.Setenv(k, "")
		}
		if len(want) == 0 {
			if err != nil {
				t.Errorf("%q: %v", text, err)
			}
			return
		}
		if err == nil {
			t.Fatalf("%q: config check passed", text)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v, want it to say %q", text, err, w)
			}
		}
	}
	f("auth_hmac_secret_file: "+secret+"\n", nil)
	f("auth_hmac_secret_file: "+missing+"\n", nil, "auth_hmac_secret_file: open "+missing, "no such file", "metrocast.yaml:1")
	f("auth_hmac_secret_file: "+dir+"\n", nil, "auth_hmac_secret_file", "is a directory")
	f("auth_hmac_secret_file: "+secret+"\n", map[string]string{"METROCAST_AUTH_REVOKED_FILE": missing},
		"auth_revoked_file: open", "set by METROCAST_AUTH_REVOKED_FILE")
	f("auth_hmac_secret_file: "+secret+"\nadmin_token_file: "+missing+"\n", nil, "admin_token_file")
	f("auth_hmac_secret_file: "+secret+"\nauth_keys: ["+keys+"]\n", nil, "cannot load the auth keys", "broken.pem")
	f("insecure: true\nnats_url: nats://127.0.0.1:4222\nnats_creds: "+missing+"\nnats_tls_ca: "+missing+"\n", nil, "nats_creds", "nats_tls_ca")
	f("auth_hmac_secret_file: "+short+"\n", nil, "cannot load the auth keys")
}

// TestFileKeys: every setting that names a file is opened by config check.
func TestFileKeys(t *testing.T) {
	c := newConfig("serve")
	for _, name := range c.names {
		if key := keyName(name); strings.HasSuffix(key, "_file") && !slices.Contains(fileKeys, key) {
			t.Errorf("%s names a file: add it to fileKeys", key)
		}
	}
	for _, key := range fileKeys {
		if c.fs.Lookup(flagName(key)) == nil {
			t.Errorf("fileKeys: %s is not a setting", key)
		}
		c.filesOf(key) // panics on a key it does not know
	}
}
