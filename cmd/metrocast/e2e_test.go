package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestBinaryEndToEnd runs the real binary as a user would: serve with a
// config file and a key, a token from `metrocast token`, a WebSocket client,
// `metrocast push`, a scrape of /metrics, SIGHUP after editing the file and
// rotating the key and revoking a user (whose connection closes), then
// SIGTERM.
func TestBinaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := filepath.Dir(bin)

	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "metrocast ") {
		t.Fatalf("version: %q %v", out, err)
	}

	// No key, no start.
	noKey := exec.Command(bin, "serve", "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0")
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
	token := func(sub string) string {
		t.Helper()
		out, err := exec.Command(bin, "token", "-auth-hmac-secret-file", secret, "-sub", sub, "-cities", "nairobi", "-ttl", "1h").Output()
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	writeSecret("first-secret-first-secret-first-secret")
	firstToken, malloryToken := token("e2e"), token("mallory")
	revoked := filepath.Join(dir, "revoked")
	if err := os.WriteFile(revoked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	adminToken := filepath.Join(dir, "admin-token")
	firstAdmin, secondAdmin := "first-admin-"+strings.Repeat("a", 32), "second-admin-"+strings.Repeat("b", 32)
	if err := os.WriteFile(adminToken, []byte(firstAdmin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cfgPath := filepath.Join(dir, "metrocast.yaml")
	writeFile := func(extra string) {
		t.Helper()
		text := "addr: 127.0.0.1:0\nadmin_addr: 127.0.0.1:0\nloops: 2\ndrain_window: 1s\nlog_format: json\n" +
			"auth_hmac_secret_file: " + secret + "\nauth_revoked_file: " + revoked + "\nadmin_token_file: " + adminToken + "\n" + extra
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile("")
	if out, err := exec.Command(bin, "config", "check", cfgPath).CombinedOutput(); err != nil || !strings.Contains(string(out), "log_format: json") {
		t.Fatalf("config check: %v\n%s", err, out)
	}

	srv, logs := startBinary(t, bin, []string{"METROCAST_INGEST_ADDR=127.0.0.1:0"},
		"serve", "--config", cfgPath, "-ring-size", "64")

	// The first info line names the bound addresses.
	up := logs.wait(t, "metrocast listening")
	wsURL, ingestAddr, adminURL := up["ws"].(string), up["ingest"].(string), up["admin"].(string)

	ws := dialWS(t, wsURL+"?token="+firstToken)
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

	// The binary exposes TYPE lines: the families parse as what they are.
	fams := scrapeFamilies(t, adminURL+"/metrics")
	for name, want := range map[string]dto.MetricType{
		"metrocast_deliveries_total":         dto.MetricType_COUNTER,
		"metrocast_connections":              dto.MetricType_GAUGE,
		"metrocast_delivery_latency_seconds": dto.MetricType_HISTOGRAM,
		"process_cpu_seconds_total":          dto.MetricType_COUNTER,
	} {
		f := fams[name]
		if f == nil || f.GetType() != want {
			t.Errorf("/metrics: %s is %v, want %v", name, f, want)
		}
	}
	if v := fams["metrocast_deliveries_total"].GetMetric()[0].GetCounter().GetValue(); v != 1 {
		t.Errorf("metrocast_deliveries_total = %v, want 1", v)
	}
	// Every family has a HELP text; build_info tells the version that
	// `metrocast version` prints.
	for name, f := range fams {
		if f.GetHelp() == "" {
			t.Errorf("/metrics: %s has no HELP text", name)
		}
	}
	if bi := fams["metrocast_build_info"].GetMetric(); len(bi) != 1 || !slices.ContainsFunc(bi[0].GetLabel(), func(l *dto.LabelPair) bool {
		return l.GetName() == "version" && l.GetValue() == strings.Fields(string(out))[1]
	}) {
		t.Errorf("/metrics: metrocast_build_info = %v, want version=%s", bi, strings.Fields(string(out))[1])
	}

	// SIGHUP applies a live key at once and warns about one that needs a
	// restart.
	writeFile("max_client_errors: 2\nrecent_alerts: 8\n")
	if err := srv.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if l := logs.wait(t, "reloaded the configuration"); !slices.Contains(strs(l["changed_since_start"]), "max_client_errors") {
		t.Errorf("reload log %v does not list max_client_errors", l)
	}
	if l := logs.wait(t, "settings changed that take a restart; they keep their start-up values"); !slices.Equal(strs(l["keys"]), []string{"recent_alerts"}) {
		t.Errorf("restart warning %v, want keys [recent_alerts]", l)
	}
	logs.wait(t, "auth keys reloaded") // every SIGHUP re-reads the keys too
	bad := dialWS(t, wsURL+"?token="+firstToken)
	sent := 0
	for ; sent < 10; sent++ {
		if err := bad.WriteMessage(websocket.TextMessage, []byte(`{"type":"nope"}`)); err != nil {
			break
		}
		if _, _, err := bad.ReadMessage(); websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
			break
		}
	}
	// The loops pick the new limit up at once; allow one message of slack.
	if sent > 2 {
		t.Errorf("closed after %d bad messages, want 2 (max_client_errors reloaded)", sent+1)
	}

	// Rotate the secret and the admin token and revoke mallory: after
	// SIGHUP new tokens pass, old ones fail, and mallory's open connection
	// is closed.
	mallory := dialWS(t, wsURL+"?cities=nairobi&token="+malloryToken)
	expectType(t, mallory, "subscribed")
	adminStatus(t, adminURL, firstAdmin, http.StatusOK)
	writeSecret("second-secret-second-secret-second-secret")
	secondToken := token("e2e")
	if err := os.WriteFile(revoked, []byte("sub mallory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(adminToken, []byte(secondAdmin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, "auth keys reloaded")
	for {
		_, b, err := mallory.ReadMessage()
		if err != nil {
			t.Fatalf("mallory after the revocation: %v, want auth_error token_revoked", err)
		}
		if strings.Contains(string(b), `"auth_error"`) {
			if !strings.Contains(string(b), `"token_revoked"`) {
				t.Fatalf("mallory got %s", b)
			}
			break
		}
	}
	if _, _, err := mallory.ReadMessage(); !websocket.IsCloseError(err, 4001) {
		t.Fatalf("mallory's connection after auth_error: %v, want close 4001", err)
	}
	if c, _, err := websocket.DefaultDialer.Dial(wsURL+"?token="+secondToken, nil); err != nil {
		t.Fatalf("new token after the rotation: %v", err)
	} else {
		c.Close()
	}
	if _, resp, err := websocket.DefaultDialer.Dial(wsURL+"?token="+firstToken, nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("old token after the rotation: %v %v, want 401", resp, err)
	}
	adminStatus(t, adminURL, firstAdmin, http.StatusUnauthorized)
	adminStatus(t, adminURL, secondAdmin, http.StatusOK)

	stopped := time.Now()
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m := expectType(t, ws, "reconnect"); m["after_ms"] == nil {
		t.Fatalf("reconnect hint without after_ms: %v", m)
	}
	_, _, err = ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after SIGTERM: %v, want close 1001", err)
	}
	if err := srv.Wait(); err != nil {
		t.Fatalf("serve exited with %v; logs:\n%s", err, logs.all())
	}
	// The drain window is 1s; allow for a loaded machine.
	if d := time.Since(stopped); d > 3*time.Second {
		t.Errorf("serve took %s to exit after SIGTERM with a 1s drain window", d)
	}
}

func dialWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	return ws
}

// buildBinary builds cmd/metrocast into a directory of the test's own.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "metrocast")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startBinary starts bin with args and env (added to the test's
// environment), kills it when the test ends, and returns it with its logs
// (which must be JSON: -log-format json).
func startBinary(t *testing.T, bin string, env []string, args ...string) (*exec.Cmd, *jsonLogs) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	// Killed with the test binary too when it dies without its cleanups
	// (a panic, -timeout): no node outlives the run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, readLogs(t, stderr)
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

func scrapeFamilies(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("cannot parse %s: %s", url, err)
	}
	return fams
}

func strs(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, s := range list {
		if s, ok := s.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// jsonLogs reads the server's JSON log lines as they come.
type jsonLogs struct {
	lines chan map[string]any
	mu    sync.Mutex
	raw   strings.Builder
}

func readLogs(t *testing.T, r io.Reader) *jsonLogs {
	l := &jsonLogs{lines: make(chan map[string]any, 100)}
	go func() {
		defer close(l.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.raw.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"msg": "NOT JSON: " + sc.Text()}
			}
			l.lines <- m
		}
	}()
	return l
}

// wait returns the next log line whose msg is msg, failing the test on a
// line that is not JSON or after 10 s.
func (l *jsonLogs) wait(t *testing.T, msg string) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-l.lines:
			if !ok {
				t.Fatalf("the server's log ended before %q:\n%s", msg, l.all())
			}
			if s, _ := m["msg"].(string); strings.HasPrefix(s, "NOT JSON") {
				t.Fatalf("log_format json wrote %s", s)
			}
			if m["msg"] == msg {
				return m
			}
		case <-timeout:
			t.Fatalf("no log %q within 10s:\n%s", msg, l.all())
		}
	}
}

func (l *jsonLogs) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// adminStatus checks the status of GET /api/stats on the admin port with
// the admin token tok.
func adminStatus(t *testing.T, adminURL, tok string, want int) {
	t.Helper()
	req, err := http.NewRequest("GET", adminURL+"/api/stats", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Errorf("/api/stats with the admin token %.16q…: %d, want %d", tok, resp.StatusCode, want)
	}
}
