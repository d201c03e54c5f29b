package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/producer"
)

// TestK6SpeaksTheProtocol holds the k6 scripts to the protocol of the node
// built from this tree: the messages in k6/lib/protocol.ts subscribe, its
// URL form subscribes, the message types the scripts handle are ones the
// node sends, and the members they read are in those messages. (CI also
// type-checks the scripts against k6's API with TypeScript; k6 itself is not
// installable here.)
func TestK6SpeaksTheProtocol(t *testing.T) {
	proto := readK6(t, "lib/protocol.ts")
	var scripts strings.Builder
	for _, name := range []string{"lib/protocol.ts", "connect.ts", "latency.ts"} {
		scripts.WriteString(readK6(t, name))
	}

	// The default URL is a local node's default endpoint.
	m := regexp.MustCompile(`DEFAULT_URL = "([^"]+)"`).FindStringSubmatch(proto)
	if m == nil {
		t.Fatal("protocol.ts: no DEFAULT_URL")
	}
	def := gateway.Config{}.WithDefaults()
	u, err := url.Parse(m[1])
	if err != nil || u.Scheme != "ws" || u.Path != def.Path || ":"+u.Port() != def.Addr {
		t.Errorf("DEFAULT_URL %s: want ws://…%s%s", m[1], def.Addr, def.Path)
	}

	n, err := spawnNode(nodeBinary(t), "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.stop)
	seen := map[string]map[string]any{} // message type → a message of it

	// Each message the scripts send subscribes a connection.
	msgs := regexp.MustCompile(`JSON\.stringify\((\{[^)]*\})\)`).FindAllStringSubmatch(proto, -1)
	if len(msgs) < 2 {
		t.Fatalf("protocol.ts: %d messages found, want auth and subscribe", len(msgs))
	}
	for i, m := range msgs {
		city := fmt.Sprintf("k6-%d", i)
		msg := asJSON(m[1], city)
		c := dialNode(t, n, "")
		send(t, c, msg)
		expectSubscribed(t, c, city, seen)
	}

	// So does the URL form, with the query parameter the scripts use.
	q := regexp.MustCompile(`"\?(\w+)="`).FindStringSubmatch(proto)
	if q == nil {
		t.Fatal("protocol.ts: no ?param= in subscribeURL")
	}
	c := dialNode(t, n, "?"+q[1]+"=k6-url")
	expectSubscribed(t, c, "k6-url", seen)

	// Frames of every kind reach it; a ping is answered.
	p, err := producer.Dial(context.Background(), n.ingest, producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, line := range []string{
		fmt.Sprintf(`{"city":"k6-url","type":"data_update","data":{"t":%d}}`, time.Now().UnixNano()),
		`{"city":"k6-url","type":"alerts","alerts":[{"severity":"info","message":"k6"}]}`,
		`{"city":"k6-url","type":"snapshot","data":{"pm25":1}}`,
	} {
		if _, err := p.Send(ctx, []byte(line)); err != nil {
			t.Fatalf("publish %s: %v", line, err)
		}
	}
	send(t, c, `{"type":"ping"}`)
	for range 4 {
		// The snapshot arrives as an initial_data (resumed:true): keep
		// the subscription's one.
		m := readMsg(t, c)
		if typ := m["type"].(string); seen[typ] == nil {
			seen[typ] = m
		}
	}

	// Every type the scripts handle is one the node sends, and the ones
	// that carry the stream are handled.
	handled := map[string]bool{}
	for _, m := range regexp.MustCompile(`case "(\w+)":|type === "(\w+)"`).FindAllStringSubmatch(scripts.String(), -1) {
		handled[m[1]+m[2]] = true
	}
	for typ := range handled {
		if seen[typ] == nil {
			t.Errorf("the scripts handle %q, which the node did not send (it sent %v)", typ, keys(seen))
		}
	}
	for _, typ := range []string{"initial_data", "data_update", "alerts"} {
		if !handled[typ] {
			t.Errorf("the scripts do not handle %q", typ)
		}
	}
	// Every member they read is in the stream's messages.
	for _, m := range regexp.MustCompile(`msg\.(\w+)`).FindAllStringSubmatch(proto, -1) {
		field := m[1]
		found := false
		for _, typ := range []string{"initial_data", "data_update", "alerts"} {
			_, ok := seen[typ][field]
			found = found || ok
		}
		if !found {
			t.Errorf("protocol.ts reads msg.%s, which no city message has", field)
		}
	}
	if r, ok := seen["initial_data"]["resumed"].(bool); !ok || r {
		t.Errorf("initial_data after subscribing: resumed = %v, want false", seen["initial_data"]["resumed"])
	}
	if d, _ := seen["data_update"]["data"].(map[string]any); d["t"] == nil {
		t.Error("data_update: the publisher's data.t did not come through")
	}
}

func readK6(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("k6", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	jsIdentValue = regexp.MustCompile(`:\s*([A-Za-z_]\w*)\s*([,}])`)
	jsIdentArray = regexp.MustCompile(`\[\s*([A-Za-z_]\w*)\s*\]`)
)

// asJSON turns a JavaScript object literal with quoted keys and variables
// as values into JSON: every variable becomes city (a valid token and
// city name both).
func asJSON(lit, city string) string {
	lit = jsIdentValue.ReplaceAllString(lit, fmt.Sprintf(`: %q$2`, city))
	return jsIdentArray.ReplaceAllString(lit, fmt.Sprintf(`[%q]`, city))
}

func dialNode(t *testing.T, n *node, query string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, "ws://"+n.ws+n.path+query)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if br != nil {
		// What came behind the 101 (subscribed, initial_data) is buffered
		// there: keep reading through it.
		return bufferedConn{c, br}
	}
	return c
}

type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func send(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if !json.Valid([]byte(msg)) {
		t.Fatalf("not JSON: %s", msg)
	}
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func readMsg(t *testing.T, c net.Conn) map[string]any {
	t.Helper()
	b, err := wsutil.ReadServerText(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

// expectSubscribed reads subscribed then initial_data for city.
func expectSubscribed(t *testing.T, c net.Conn, city string, seen map[string]map[string]any) {
	t.Helper()
	for _, typ := range []string{"subscribed", "initial_data"} {
		m := readMsg(t, c)
		if m["type"] != typ {
			t.Fatalf("got %v, want %s for %s", m, typ, city)
		}
		if typ == "initial_data" && m["city"] != city {
			t.Fatalf("initial_data for %v, want %s", m["city"], city)
		}
		seen[typ] = m
	}
}

func keys(m map[string]map[string]any) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}
