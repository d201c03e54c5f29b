package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

// sseStatus sends a GET for target and returns the status and body of a
// response that is not a stream.
func sseStatus(t testing.TB, addr, target string, header ...string) (*http.Response, string) {
	t.Helper()
	_, resp := sseGet(t, addr, target, header...)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: cannot read the body: %s", target, err)
	}
	return resp, string(b)
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// needTool returns the path of an external program a test runs. Plain go
// test skips without it; make test, which installs it, sets
// METROCAST_REQUIRE_TOOLS so that a missing one fails instead.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("METROCAST_REQUIRE_TOOLS") != "" {
		t.Fatalf("%s is not installed (apt-get install %s)", name, name)
	}
	t.Skipf("%s is not installed (apt-get install %s; make test does)", name, name)
	return ""
}

// sameEvent checks that f's Server-Sent Event, read as an EventSource reads
// it, is one event named by the message's type, with the id of f's city
// and seq, whose data decodes (encoding/json) to what the WebSocket frame
// does.
func sameEvent(t *testing.T, f *frame, epoch uint64, city string) {
	t.Helper()
	ev := f.event(epoch, city, nil)
	lines := strings.Split(string(ev), "\n")
	if len(lines) != 5 || lines[3] != "" || lines[4] != "" || strings.ContainsRune(string(ev), '\r') {
		t.Fatalf("event %q: want id, event and data lines, then a blank one", ev)
	}
	var ws, sse map[string]any
	decodeFrame(t, f.b, &ws)
	data, ok := strings.CutPrefix(lines[2], "data: ")
	if err := json.Unmarshal([]byte(data), &sse); !ok || err != nil {
		t.Fatalf("event %q: its data does not decode: %v", ev, err)
	}
	if want := fmt.Sprintf("id: %d/%s:%d", epoch, city, f.seq); lines[0] != want || lines[1] != "event: "+ws["type"].(string) || !reflect.DeepEqual(ws, sse) {
		t.Fatalf("event %q, want %s, the type %v and the data of the frame %q", ev, want, ws["type"], f.b)
	}
}
