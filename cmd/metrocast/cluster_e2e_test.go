package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

// TestBinaryCluster runs two real binaries in cluster mode (-nats, as the
// issue spells it) on an embedded NATS JetStream server: a line pushed to
// one node reaches a client of the other with the seq its producer was
// acked; that other node is killed (SIGKILL), and its client, back on the
// first node with since, gets the frames it missed and nothing else; the
// first node stops on SIGTERM.
func TestBinaryCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	url := startNATSServer(t)
	bin := buildBinary(t)
	a, b := startClusterBinary(t, bin, url, "-insecure"), startClusterBinary(t, bin, url, "-insecure")

	ws := dialWS(t, b.ws+"?cities=lagos")
	sub := expectType(t, ws, "subscribed")
	expectType(t, ws, "initial_data")

	push := func(lines string) string {
		t.Helper()
		cmd := exec.Command(bin, "push", "-addr", a.ingest)
		cmd.Stdin = strings.NewReader(lines)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("push: %v\n%s", err, out)
		}
		return string(out)
	}
	out := push(`{"city":"lagos","type":"data_update","data":{"pm25":7}}` + "\n")
	m := expectType(t, ws, "data_update")
	if m["city"] != "lagos" || m["data"].(map[string]any)["pm25"] != 7.0 ||
		!strings.Contains(out, fmt.Sprintf(`"seq":%v`, m["seq"])) {
		t.Fatalf("data_update %v after push answered %q", m, out)
	}
	if sub["epoch"] == nil || sub["epoch"] == 0.0 {
		t.Fatalf("subscribed %v: no epoch", sub)
	}

	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = b.cmd.Wait()
	push(`{"city":"lagos","type":"data_update","data":{"n":1}}` + "\n" +
		`{"city":"lagos","type":"alerts","alerts":[{"severity":"critical","message":"flood"}]}` + "\n" +
		`{"city":"lagos","type":"data_update","data":{"n":3}}` + "\n")
	ws = dialWS(t, fmt.Sprintf("%s?cities=lagos&since=%.0f&epoch=%.0f", a.ws, m["seq"], sub["epoch"]))
	r := expectType(t, ws, "subscribed")
	if cities, _ := r["cities"].([]any); len(cities) != 1 || cities[0].(map[string]any)["resumed"] != true {
		t.Fatalf("resume on the other node: %v", r)
	}
	last := m["seq"].(float64)
	for _, typ := range []string{"data_update", "alerts", "data_update"} {
		f := expectType(t, ws, typ)
		if seq := f["seq"].(float64); seq <= last {
			t.Fatalf("%v after seq %v", f, last)
		} else {
			last = seq
		}
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v; logs:\n%s", err, a.logs.all())
	}
}

// startNATSServer starts an embedded NATS server with JetStream for the
// test and returns its URL.
func startNATSServer(t *testing.T) string {
	t.Helper()
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
	return ns.ClientURL()
}

// clusterNode is a metrocast binary in cluster mode.
type clusterNode struct {
	cmd        *exec.Cmd
	logs       *jsonLogs
	ws, ingest string
}

// startClusterBinary starts bin in cluster mode on natsURL, with args
// added, and waits until it listens.
func startClusterBinary(t *testing.T, bin, natsURL string, args ...string) clusterNode {
	t.Helper()
	args = append([]string{"serve", "-nats", natsURL, "-addr", "127.0.0.1:0",
		"-ingest-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-loops", "1", "-drain-window", "1s",
		"-log-format", "json"}, args...)
	srv, logs := startBinary(t, bin, nil, args...)
	up := logs.wait(t, "metrocast listening")
	if node, _ := up["node"].(string); up["cluster"] != true || node == "" {
		t.Fatalf("listening log %v: not in cluster mode", up)
	}
	return clusterNode{srv, logs, up["ws"].(string), up["ingest"].(string)}
}

// TestBinaryClusterPresenceKill: presence across two real binaries, and
// a node killed with SIGKILL (no drain, no goodbye to NATS): its watchers
// leave the other node's presence within nats_presence_ttl.
func TestBinaryClusterPresenceKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	url := startNATSServer(t)
	bin := buildBinary(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("presence-secret-presence-secret-presence\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	token := func(sub string) string {
		t.Helper()
		out, err := exec.Command(bin, "token", "-auth-hmac-secret-file", secret, "-sub", sub, "-cities", "oslo", "-ttl", "1h").Output()
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	args := []string{"-auth-hmac-secret-file", secret, "-nats-presence-ttl", "1s"}
	a, b := startClusterBinary(t, bin, url, args...), startClusterBinary(t, bin, url, args...)

	watch := func(n clusterNode, sub string) *websocket.Conn {
		t.Helper()
		ws := dialWS(t, n.ws+"?token="+token(sub))
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","cities":["oslo"],"presence":true}`)); err != nil {
			t.Fatal(err)
		}
		expectType(t, ws, "subscribed")
		return ws
	}
	// until reads ws's presence messages until one of typ names user.
	until := func(ws *websocket.Conn, typ, user string) map[string]any {
		t.Helper()
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %s %s: %v", typ, user, err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if m["type"] == typ && slices.Contains(strs(m["users"]), user) {
				return m
			}
		}
	}
	ana := watch(a, "ana")
	watch(b, "ben")
	if m := until(ana, "user_joined", "ben"); m["count"] != 2.0 {
		t.Fatalf("ana told %v, want a count of 2", m)
	}
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = b.cmd.Wait()
	if m := until(ana, "user_left", "ben"); m["count"] != 1.0 {
		t.Fatalf("ana told %v, want a count of 1", m)
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v; logs:\n%s", err, a.logs.all())
	}
}
