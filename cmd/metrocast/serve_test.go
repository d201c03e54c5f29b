package main

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/metrocast/metrocast/gateway"
)

// TestREADMEConfigTable keeps the README's configuration reference and the
// real flags from drifting apart: same names, same defaults.
func TestREADMEConfigTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `-([a-z0-9-]+)` \\| `?([^`|]*?)`? \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = m[2]
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	bindConfig(fs, new(gateway.Config))
	fs.VisitAll(func(f *flag.Flag) {
		doc, ok := documented[f.Name]
		switch {
		case !ok:
			t.Errorf("flag -%s is not in the README's configuration table", f.Name)
		case f.Name == "loops":
			if doc != "CPUs" {
				t.Errorf("README default of -loops = %q, want CPUs", doc)
			}
		case doc != f.DefValue:
			t.Errorf("README default of -%s = %q, flag default %q", f.Name, doc, f.DefValue)
		}
		delete(documented, f.Name)
	})
	for name := range documented {
		t.Errorf("README documents -%s, which is not a flag", name)
	}
}

func TestEnvOverrides(t *testing.T) {
	// Each case runs in its own subtest: t.Setenv restores at its end.
	f := func(env map[string]string, args []string, wantAddr string, wantRing int, wantErr string) {
		t.Helper()
		t.Run("", func(t *testing.T) { envCase(t, env, args, wantAddr, wantRing, wantErr) })
	}
	f(nil, nil, "127.0.0.1:7070", 1024, "")
	f(map[string]string{"METROCAST_INGEST_ADDR": "127.0.0.1:9999", "METROCAST_RING_SIZE": "64"}, nil, "127.0.0.1:9999", 64, "")
	// The command line wins over the environment.
	f(map[string]string{"METROCAST_RING_SIZE": "64"}, []string{"-ring-size", "32"}, "127.0.0.1:7070", 32, "")
	f(map[string]string{"METROCAST_RING_SIZE": "lots"}, nil, "", 0, "METROCAST_RING_SIZE")
}

func envCase(t *testing.T, env map[string]string, args []string, wantAddr string, wantRing int, wantErr string) {
	for k, v := range env {
		t.Setenv(k, v)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var cfg gateway.Config
	bindConfig(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	err := applyEnv(fs)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("err = %v, want %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IngestAddr != wantAddr || cfg.RingSize != wantRing {
		t.Fatalf("ingest addr %q ring %d, want %q %d", cfg.IngestAddr, cfg.RingSize, wantAddr, wantRing)
	}
}
