package main

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// TestBinaryCluster runs two real binaries in cluster mode (-nats, as the
// issue spells it) on an embedded NATS JetStream server: a line pushed to
// one node reaches a client of the other with the seq its producer was
// acked, and both nodes stop on SIGTERM.
func TestBinaryCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}

	bin := buildBinary(t)
	type node struct {
		cmd        *exec.Cmd
		logs       *jsonLogs
		ws, ingest string
	}
	start := func() node {
		t.Helper()
		srv, logs := startBinary(t, bin, nil, "serve", "-nats", ns.ClientURL(), "-addr", "127.0.0.1:0",
			"-ingest-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-loops", "1", "-drain-window", "1s",
			"-log-format", "json", "-insecure")
		up := logs.wait(t, "metrocast listening")
		if up["cluster"] != true {
			t.Fatalf("listening log %v: not in cluster mode", up)
		}
		return node{srv, logs, up["ws"].(string), up["ingest"].(string)}
	}
	a, b := start(), start()

	ws := dialWS(t, b.ws+"?cities=lagos")
	sub := expectType(t, ws, "subscribed")
	expectType(t, ws, "initial_data")

	push := exec.Command(bin, "push", "-addr", a.ingest)
	push.Stdin = strings.NewReader(`{"city":"lagos","type":"data_update","data":{"pm25":7}}` + "\n")
	out, err := push.Output()
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	m := expectType(t, ws, "data_update")
	if m["city"] != "lagos" || m["data"].(map[string]any)["pm25"] != 7.0 ||
		!strings.Contains(string(out), fmt.Sprintf(`"seq":%v`, m["seq"])) {
		t.Fatalf("data_update %v after push answered %q", m, out)
	}
	if sub["epoch"] == nil || sub["epoch"] == 0.0 {
		t.Fatalf("subscribed %v: no epoch", sub)
	}
	for _, n := range []node{a, b} {
		if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := n.cmd.Wait(); err != nil {
			t.Fatalf("serve exited with %v; logs:\n%s", err, n.logs.all())
		}
	}
}
