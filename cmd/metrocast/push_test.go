package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/cluster"
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

// TestPushResendsOverBusOutage: with the node's NATS down, push's lines are
// answered "retry"; push backs off and resends them with their ids, keeps
// its connection, and exits 0 once NATS is back and every line is stored.
func TestPushResendsOverBusOutage(t *testing.T) {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	var ns *natsserver.Server
	startNATS := func() {
		t.Helper()
		var err error
		if ns, err = natsserver.NewServer(opts); err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("NATS server not ready")
		}
		opts.Port = ns.Addr().(*net.TCPAddr).Port
	}
	startNATS()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	bus, err := cluster.New(cluster.Config{URL: ns.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := gateway.New(gateway.Config{
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", Loops: 1,
		Bus: bus, IngestMaxErrors: 1, Insecure: true, DrainWindow: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })

	ns.Shutdown()
	ns.WaitForShutdown()
	const lines = `{"city":"po","type":"data_update","data":{"n":1}}
{"city":"po","type":"data_update","data":{"n":2}}
{"city":"po","type":"data_update","data":{"n":3}}
`
	var out, errOut bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- push(context.Background(), func() {}, strings.NewReader(lines), &out, &errOut, s.IngestAddr().String(), 5*time.Second, "")
	}()
	// Every line answered "retry" at least once, past IngestMaxErrors.
	deadline := time.Now().Add(20 * time.Second)
	for s.Stats().IngestErrors < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("ingest errors %d: the lines were not refused while NATS was down", s.Stats().IngestErrors)
		}
		time.Sleep(5 * time.Millisecond)
	}
	startNATS()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("push: %v\n%s\n%s", err, out.String(), errOut.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("push did not finish after NATS came back")
	}
	if strings.Count(out.String(), `"seq":`) != 3 || !strings.Contains(errOut.String(), "3 acked") {
		t.Fatalf("push answers\n%s%s, want 3 acked", out.String(), errOut.String())
	}
	if st := s.Stats(); st.IngestDropped != 0 || st.IngestConns > 1 {
		t.Fatalf("stats %+v: the producer was dropped or reconnected", st)
	}
}
