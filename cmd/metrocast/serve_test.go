package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestREADMEConfigTable keeps the README's configuration reference and the
// real settings from drifting apart: same keys, same defaults, same keys
// marked live.
func TestREADMEConfigTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9_]+)` \\| `?([^`|]*?)`? \\| (live)? ?\\|")
	type doc struct {
		def  string
		live bool
	}
	documented := map[string]doc{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = doc{m[2], m[3] == "live"}
	}
	c := newConfig("serve")
	live := liveKeys()
	for _, name := range c.names {
		key := keyName(name)
		d, ok := documented[key]
		f := c.fs.Lookup(name)
		switch {
		case !ok:
			t.Errorf("%s is not in the README's configuration table", key)
		case d.def != f.DefValue:
			t.Errorf("README default of %s = %q, real default %q", key, d.def, f.DefValue)
		case d.live != slices.Contains(live, key):
			t.Errorf("README marks %s live: %v; SIGHUP applies it: %v", key, d.live, !d.live)
		}
		delete(documented, key)
	}
	for key := range documented {
		t.Errorf("the README documents %s, which is not a setting", key)
	}
	for _, key := range live {
		if !slices.Contains(c.names, flagName(key)) {
			t.Errorf("live key %s is not a setting", key)
		}
	}
}

// TestExampleConfig checks that deploy/metrocast.yaml sets every key, each
// to its default.
func TestExampleConfig(t *testing.T) {
	const path = "../../deploy/metrocast.yaml"
	c := newConfig("serve")
	if err := c.load(path); err != nil {
		t.Fatal(err)
	}
	for _, name := range c.names {
		if !strings.HasPrefix(c.from[keyName(name)], path+":") {
			t.Errorf("%s does not set %s", path, keyName(name))
		}
	}
	// The one deliberate difference: a node needs a key (or insecure) to
	// start, so the example names a secret file.
	def := newConfig("serve")
	def.gw.AuthHMACSecretFile = "/etc/metrocast/hmac-secret"
	if !reflect.DeepEqual(*c.settings, *def.settings) {
		t.Errorf("%s differs from the defaults:\n%+v\nwant\n%+v", path, *c.settings, *def.settings)
	}
}

// writeConfig writes a config file in a fresh directory and returns its
// path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "metrocast.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigErrors checks that a bad file, variable or flag is reported
// with its key, what it must be, and where it was set.
func TestConfigErrors(t *testing.T) {
	f := func(file string, env map[string]string, want string) {
		t.Helper()
		t.Run("", func(t *testing.T) {
			for k, v := range env {
				t.Setenv(k, v)
			}
			path := writeConfig(t, file)
			err := newConfig("serve").load(path)
			if err == nil || !strings.Contains(err.Error(), strings.ReplaceAll(want, "FILE", path)) {
				t.Fatalf("error %v, want %q", err, want)
			}
		})
	}
	f("ring_size: 1\n", nil, "ring_size (1) must be in [2, 1048576] (set by FILE:1)")
	f("# c\nring_size: lots\n", nil, `FILE:2: ring_size: invalid value "lots": want an integer`)
	f("slow_timeout: 30\n", nil, `FILE:1: slow_timeout: invalid value "30": want a duration such as 500ms, 30s or 2m`)
	f("ring-size: 8\n", nil, `FILE:1: unknown key "ring-size"`)
	f("config: x.yaml\n", nil, `FILE:1: unknown key "config"`)
	f("shutdown_timeout: 1s\n", nil, `FILE:1: unknown key "shutdown_timeout"`)
	f("ring_size: 8\nring_size: 9\n", nil, "FILE:2: ring_size is set twice")
	f("ring_size:\n", nil, "FILE:1: ring_size needs one value (an integer)")
	f("ring_size: [1, 2]\n", nil, "FILE:1: ring_size needs one value")
	f("- ring_size\n", nil, "FILE:1: want a mapping of key: value")
	f("log_format: xml\n", nil, `log_format ("xml") must be text or json (set by FILE:1)`)
	f("log_level: loud\n", nil, `log_level: invalid value "loud": want debug, info, warn or error`)
	f("idle_timeout: 10s\n", nil, "idle_timeout (10s) must be > ping_interval (25s) (set by FILE:1)")
	f("", map[string]string{"METROCAST_RING_SIZE": "lots"}, `METROCAST_RING_SIZE="lots": invalid value: want an integer`)
	f("", map[string]string{"METROCAST_RING_SIZE": "1"}, "ring_size (1) must be in [2, 1048576] (set by METROCAST_RING_SIZE)")
}

// TestREADMEConfigError runs the README's example of an invalid
// configuration and expects its message word for word.
func TestREADMEConfigError(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)metrocast: (invalid configuration: .*?)\n```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("no invalid configuration example in the README")
	}
	t.Chdir(t.TempDir())
	if err := os.WriteFile("metrocast.yaml", []byte("# Two mistakes.\naddr: :8080\nring_size: 1\ninsecure: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("METROCAST_MAX_BACKLOG_BYTES", "100")
	err = newConfig("serve").load("metrocast.yaml")
	if err == nil || "invalid configuration: "+err.Error() != string(m[1]) {
		t.Fatalf("got\n%v\nREADME says\n%s", err, m[1])
	}
}

// TestConfigPrecedence checks defaults < file < environment < flags.
func TestConfigPrecedence(t *testing.T) {
	path := writeConfig(t, "insecure: true\nring_size: 8\nring_bytes: 8192\nrecent_alerts: 8\nmax_cities: 8\n")
	t.Setenv("METROCAST_RING_BYTES", "16384")
	t.Setenv("METROCAST_RECENT_ALERTS", "16")
	c := newConfig("serve")
	if err := c.fs.Parse([]string{"-recent-alerts", "32"}); err != nil {
		t.Fatal(err)
	}
	if err := c.load(path); err != nil {
		t.Fatal(err)
	}
	got := []int{c.gw.MaxCities, c.gw.RingSize, c.gw.RingBytes, c.gw.RecentAlerts, c.gw.MaxSubscriptions}
	if want := []int{8, 8, 16384, 32, 128}; !slices.Equal(got, want) {
		t.Fatalf("max_cities, ring_size, ring_bytes, recent_alerts, max_subscriptions = %v, want %v", got, want)
	}
	if c.from["ring_bytes"] != "METROCAST_RING_BYTES" || c.from["recent_alerts"] != "-recent-alerts" {
		t.Errorf("sources %v", c.from)
	}
}

// TestConfigFileFromEnv checks that METROCAST_CONFIG names the file.
func TestConfigFileFromEnv(t *testing.T) {
	t.Setenv("METROCAST_CONFIG", writeConfig(t, "insecure: true\nring_size: 8\n"))
	c := newConfig("serve")
	if err := c.load(""); err != nil {
		t.Fatal(err)
	}
	if c.gw.RingSize != 8 {
		t.Fatalf("ring_size %d, want 8 from METROCAST_CONFIG's file", c.gw.RingSize)
	}
}

// TestConfigCheck checks that `config check` prints a file that loads back
// to the same settings.
func TestConfigCheck(t *testing.T) {
	path := writeConfig(t, "insecure: true\nring_size: 8\nlog_level: warn\ndrain_window: 90s\naddr: 127.0.0.1:0\n")
	var out bytes.Buffer
	if err := configCheck(&out, path); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ring_size: 8\n") || !strings.Contains(out.String(), "drain_window: 1m30s\n") {
		t.Errorf("output:\n%s", out.String())
	}
	back := newConfig("serve")
	if err := back.load(writeConfig(t, out.String())); err != nil {
		t.Fatalf("the printed config does not load: %s\n%s", err, out.String())
	}
	orig := newConfig("serve")
	if err := orig.load(path); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*back.settings, *orig.settings) {
		t.Errorf("printed config loads as\n%+v\nwant\n%+v", *back.settings, *orig.settings)
	}
	if err := configCheck(&out, writeConfig(t, "ring_size: 1\n")); err == nil {
		t.Errorf("config check of a bad file passed")
	}
}

// TestNATSFlag checks that -nats is -nats-url by a shorter name: it sets
// the key, wins over the file like any flag, and is reported as given.
func TestNATSFlag(t *testing.T) {
	path := writeConfig(t, "insecure: true\nnats_url: nats://file:4222\n")
	c := newConfig("serve")
	if err := c.fs.Parse([]string{"-nats", "nats://flag:4222,nats://flag2:4222"}); err != nil {
		t.Fatal(err)
	}
	if err := c.load(path); err != nil {
		t.Fatal(err)
	}
	if c.cluster.URL != "nats://flag:4222,nats://flag2:4222" || c.from["nats_url"] != "-nats" {
		t.Fatalf("nats_url %q from %q, want the flag's", c.cluster.URL, c.from["nats_url"])
	}
}

// TestSecretNotOnCommandLine checks that a secret's value is refused as a
// flag, with the way to give it instead, and still taken from the file
// and the environment; and that a node whose admin port is beyond
// loopback without an admin token does not start, saying why.
func TestSecretNotOnCommandLine(t *testing.T) {
	secret := strings.Repeat("s", 40)
	c, _, err := serveConfig([]string{"-auth-hmac-secret", secret})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.load(""); err == nil || !strings.Contains(err.Error(), "-auth-hmac-secret-file") ||
		!strings.Contains(err.Error(), "METROCAST_AUTH_HMAC_SECRET") || strings.Contains(err.Error(), secret) {
		t.Fatalf("-auth-hmac-secret on the command line: %v, want a refusal naming -auth-hmac-secret-file", err)
	}
	for _, where := range []string{"file", "env"} {
		c := newConfig("serve")
		file := ""
		if where == "file" {
			file = writeConfig(t, "auth_hmac_secret: "+secret+"\n")
		} else {
			t.Setenv("METROCAST_AUTH_HMAC_SECRET", secret)
		}
		if err := c.load(file); err != nil || c.gw.AuthHMACSecret != secret {
			t.Fatalf("secret from the %s: %v", where, err)
		}
	}

	c, _, err = serveConfig([]string{"-insecure", "-admin-addr", "10.77.0.1:9090"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.load(""); err == nil || !strings.Contains(err.Error(), "admin_token_file") || !strings.Contains(err.Error(), "(set by -admin-addr)") {
		t.Fatalf("admin port beyond loopback without a token: %v", err)
	}

	if err := runPush([]string{"-token", "eyJhbGciOi.x.y"}); err == nil || !strings.Contains(err.Error(), "-token-file") {
		t.Fatalf("push -token: %v, want a refusal naming -token-file", err)
	}
}
