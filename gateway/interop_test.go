package gateway

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
)

// dialGorillaDeflate is a gorilla client that offers permessage-deflate,
// as browsers do; the server declines it.
func dialGorillaDeflate(t testing.TB, url string) client {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: readTimeout, EnableCompression: true}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("gorilla: cannot dial %s: %s", url, err)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("server accepted extension %q", ext)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &gorillaClient{C: c}
}

// TestInterop runs one client's whole life with each library: join by URL,
// live data, a second city by message, alerts, a frame too large for a
// 16-bit length, unsubscribe, ping, and the close handshake.
func TestInterop(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	p := dialProducer(t, s)
	all := append(dialers[:len(dialers):len(dialers)], dialer{"gorilla-deflate", dialGorillaDeflate})
	for i, d := range all {
		t.Run(d.name, func(t *testing.T) {
			a, b := "io-a-"+d.name, "io-b-"+d.name
			c := d.dial(t, wsURL(s, "cities="+a))
			readType(t, c, "subscribed")
			readType(t, c, "initial_data")

			p.Publish(t, dataLine(a, "data_update", `{"pm25":12.5}`))
			if m := readType(t, c, "data_update"); m.City != a || m.Seq != 1 || string(m.Data) != `{"pm25":12.5}` {
				t.Fatalf("got %s", m.Raw)
			}

			send(t, c, fmt.Sprintf(`{"type":"subscribe","cities":[%q]}`, b))
			readType(t, c, "subscribed")
			readType(t, c, "initial_data")
			p.Publish(t, alertLine(b, "critical"))
			if m := readType(t, c, "alerts"); m.City != b || m.Seq != 1 || !strings.Contains(string(m.Alerts), `"critical"`) {
				t.Fatalf("got %s", m.Raw)
			}

			// 100 KB: the frame has a 64-bit length.
			big := `{"blob":"` + strings.Repeat("0123456789", 10_000) + `"}`
			p.Publish(t, dataLine(a, "data_update", big))
			if m := readType(t, c, "data_update"); m.Seq != 2 || string(m.Data) != big {
				t.Fatalf("got a data_update of %d bytes at seq %d, want %d bytes at seq 2", len(m.Data), m.Seq, len(big))
			}
			p.Publish(t, dataLine(a, "snapshot", `{"reset":true}`))
			if m := readType(t, c, "initial_data"); m.Seq != 3 || string(m.Data) != `{"reset":true}` {
				t.Fatalf("got %s, want the snapshot at seq 3", m.Raw)
			}

			send(t, c, fmt.Sprintf(`{"type":"unsubscribe","cities":[%q]}`, a))
			readType(t, c, "unsubscribed")
			p.Publish(t, dataLine(a, "data_update", `{"gone":1}`))
			p.Publish(t, dataLine(b, "data_update", `{"here":1}`))
			if m := readType(t, c, "data_update"); m.City != b || m.Seq != 2 {
				t.Fatalf("got %s, want %s seq 2", m.Raw, b)
			}
			expectPong(t, c)

			if err := c.SendClose(ws.StatusNormalClosure, "bye"); err != nil {
				t.Fatal(err)
			}
			expectClose(t, c, ws.StatusNormalClosure)
			waitCloses(t, s, ClosePeer, uint64(i+1))
		})
	}
}
