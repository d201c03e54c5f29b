package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway"
)

// TestPushRefused: against an ingest port that wants a token, push reports
// every line as refused (never "may or may not have been stored"), stops
// sending, and says how to give a token.
func TestPushRefused(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.New(gateway.Config{
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Loops: 1,
		IngestAddr:         "0.0.0.0:0", // beyond loopback: tokens wanted (dialled on 127.0.0.1)
		AuthHMACSecretFile: secret,
		DrainWindow:        time.Millisecond,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	addr := fmt.Sprintf("127.0.0.1:%d", portOf(t, s.IngestAddr().String()))

	var tok bytes.Buffer
	if err := runToken([]string{"-auth-hmac-secret-file", secret, "-sub", "p", "-publish", "*"}, &tok); err != nil {
		t.Fatal(err)
	}
	const lines = `{"city":"pr","type":"data_update","data":{"n":1}}
{"city":"pr","type":"data_update","data":{"n":2}}
`
	run := func(token string) (string, string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := push(context.Background(), func() {}, strings.NewReader(lines), &out, &errOut, addr, 5*time.Second, token)
		return out.String(), errOut.String(), err
	}
	for _, tc := range []struct{ token, want string }{
		{"", "wants a token"},
		{"not.a.token", "refused the token"},
	} {
		out, errOut, err := run(tc.token)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "-token-file") ||
			!strings.Contains(err.Error(), "metrocast token -sub NAME -publish CITIES > FILE") {
			t.Errorf("token %q: err %v, want it to say %q and suggest -token-file", tc.token, err, tc.want)
		}
		if strings.Contains(out+errOut, "may or may not") || strings.Count(out, "gateway refused the connection: authentication failed") == 0 {
			t.Errorf("token %q: answers\n%s\nwant refusals, none \"may or may not\"", tc.token, out)
		}
		if !strings.Contains(errOut, "0 acked") || !strings.Contains(errOut, "0 not known to be stored") {
			t.Errorf("token %q: summary %q, want the lines counted as rejected", tc.token, errOut)
		}
	}
	if st := s.Stats(); st.IngestFrames != 0 {
		t.Fatalf("IngestFrames %d after refusals, want 0", st.IngestFrames)
	}
	out, _, err := run(strings.TrimSpace(tok.String()))
	if err != nil || strings.Count(out, `"seq":`) != 2 {
		t.Fatalf("with a token: %v\n%s", err, out)
	}
}
