package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestBinaryEndToEnd runs the real binary as a user would: serve with a
// key, a token from `metrocast token`, a WebSocket client, `metrocast push`,
// a key rotation by SIGHUP, then SIGTERM.
func TestBinaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "metrocast")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "metrocast ") {
		t.Fatalf("version: %q %v", out, err)
	}

	// No key, no start.
	noKey := exec.Command(bin, "serve", "-addr", "127.0.0.1:0")
	noKey.Env = append(os.Environ(), "METROCAST_INGEST_ADDR=127.0.0.1:0")
	if out, err := noKey.CombinedOutput(); err == nil || !strings.Contains(string(out), "no auth key configured") {
		t.Fatalf("serve without a key: %v\n%s", err, out)
	}

	secret := filepath.Join(dir, "secret")
	writeSecret := func(s string) {
		t.Helper()
		if err := os.WriteFile(secret, []byte(s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	token := func() string {
		t.Helper()
		out, err := exec.Command(bin, "token", "-auth-hmac-secret-file", secret, "-sub", "e2e", "-cities", "nairobi", "-ttl", "1h").Output()
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	writeSecret("first-secret-first-secret-first-secret")
	firstToken := token()

	srv := exec.Command(bin, "serve", "-addr", "127.0.0.1:0", "-loops", "2", "-auth-hmac-secret-file", secret)
	srv.Env = append(os.Environ(), "METROCAST_INGEST_ADDR=127.0.0.1:0")
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	// The first log line names the bound addresses.
	logs := bufio.NewScanner(stderr)
	addrs := regexp.MustCompile(`ws=(ws://\S+) ingest=(\S+)`)
	var wsURL, ingestAddr string
	for logs.Scan() {
		if m := addrs.FindStringSubmatch(logs.Text()); m != nil {
			wsURL, ingestAddr = m[1], m[2]
			break
		}
	}
	if wsURL == "" {
		t.Fatalf("no listening line in the logs (%v)", logs.Err())
	}
	rest := make(chan string, 1)
	go func() {
		var b strings.Builder
		for logs.Scan() {
			b.WriteString(logs.Text() + "\n")
		}
		rest <- b.String()
	}()

	ws, _, err := websocket.DefaultDialer.Dial(wsURL+"?token="+firstToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth","token":"`+firstToken+`","cityId":"nairobi"}`)); err != nil {
		t.Fatal(err)
	}
	expectType(t, ws, "subscribed")
	expectType(t, ws, "initial_data")
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","cities":["lagos"]}`)); err != nil {
		t.Fatal(err)
	}
	if m := expectType(t, ws, "error"); m["code"] != "forbidden" {
		t.Fatalf("subscribe outside the token: %v", m)
	}
	expectType(t, ws, "subscribed")

	push := exec.Command(bin, "push", "-addr", ingestAddr)
	push.Stdin = strings.NewReader(`{"city":"nairobi","type":"data_update","data":{"pm25":12}}` + "\n")
	pushOut, err := push.Output()
	if err != nil {
		t.Fatalf("push: %v\n%s", err, pushOut)
	}
	if !strings.Contains(string(pushOut), `"seq":1`) {
		t.Fatalf("push output %q has no seq 1", pushOut)
	}
	m := expectType(t, ws, "data_update")
	if m["city"] != "nairobi" || m["seq"] != 1.0 || m["data"].(map[string]any)["pm25"] != 12.0 {
		t.Fatalf("data_update = %v", m)
	}

	// Rotate the secret: after SIGHUP new tokens pass and old ones fail.
	writeSecret("second-secret-second-secret-second-secret")
	secondToken := token()
	if err := srv.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, _, err := websocket.DefaultDialer.Dial(wsURL+"?token="+secondToken, nil)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new key is not in force 10 s after SIGHUP: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, resp, err := websocket.DefaultDialer.Dial(wsURL+"?token="+firstToken, nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("old token after the rotation: %v %v, want 401", resp, err)
	}

	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after SIGTERM: %v, want close 1001", err)
	}
	if err := srv.Wait(); err != nil {
		t.Fatalf("serve exited with %v; logs:\n%s", err, <-rest)
	}
	if logs := <-rest; !strings.Contains(logs, "auth keys reloaded") {
		t.Fatalf("no reload in the logs:\n%s", logs)
	}
}

func expectType(t *testing.T, ws *websocket.Conn, typ string) map[string]any {
	t.Helper()
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("waiting for %s: %v", typ, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m["type"] != typ {
		t.Fatalf("got %s, want a %s message", b, typ)
	}
	return m
}
