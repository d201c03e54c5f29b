package gateway

import (
	"fmt"
	"strings"
	"testing"
)

// TestResume checks `since` in a subscribe message and in the URL: a
// position the ring still holds is replayed exactly (since+1 .. head, then
// live), anything else (out of the ring, ahead of the head, another epoch)
// gets initial_data with "resumed":false.
func TestResume(t *testing.T) {
	t.Parallel()
	// 8 frames per ring; "big" frames of ~600 bytes fill RingBytes after 6.
	s := startServer(t, Config{RingSize: 8, RingBytes: 4096})
	p := dialProducer(t, s)
	heads := map[string]uint64{}
	state := map[string]string{}
	pub := func(city string, n int) {
		t.Helper()
		for range n {
			heads[city]++
			data := fmt.Sprintf(`{"n":%d}`, heads[city])
			if city == "big" {
				data = fmt.Sprintf(`{"n":%d,"pad":"%s"}`, heads[city], strings.Repeat("x", 600))
			}
			if seq := p.Publish(t, dataLine(city, "data_update", data)); seq != heads[city] {
				t.Fatalf("%s: ack seq %d, want %d", city, seq, heads[city])
			}
			state[city] = data
		}
	}
	pub("res", 20)
	pub("big", 20)

	const (
		replay = iota
		initial
	)
	type tc struct {
		city  string
		join  string // "subscribe" or "url"
		since int64  // relative to the head
		epoch string // "", "same" or "other"
		cityN bool   // since in the URL as city:N
		want  int
	}
	epochOf := func(e string) uint64 {
		switch e {
		case "same":
			return s.Epoch()
		case "other":
			return s.Epoch() + 1
		}
		return 0
	}
	f := func(c tc) {
		t.Helper()
		for _, d := range dialers {
			head := heads[c.city]
			since := uint64(int64(head) + c.since)
			epoch := epochOf(c.epoch)
			var cl client
			if c.join == "url" {
				q := fmt.Sprintf("cities=%s&since=%d", c.city, since)
				if c.cityN {
					q = fmt.Sprintf("cities=%s&since=%s:%d", c.city, c.city, since)
				}
				if epoch != 0 {
					q += fmt.Sprintf("&epoch=%d", epoch)
				}
				cl = d.dial(t, wsURL(s, q))
			} else {
				cl = d.dial(t, wsURL(s, ""))
				e := ""
				if epoch != 0 {
					e = fmt.Sprintf(`,"epoch":%d`, epoch)
				}
				send(t, cl, fmt.Sprintf(`{"type":"subscribe","cities":[%q],"since":{%q:%d}%s}`, c.city, c.city, since, e))
			}
			who := fmt.Sprintf("%s %+v (since %d, head %d)", d.name, c, since, head)
			sub := readType(t, cl, "subscribed")
			if len(sub.Cities) != 1 || sub.Cities[0].City != c.city {
				t.Fatalf("%s: got %s", who, sub.Raw)
			}
			switch c.want {
			case replay:
				if sub.Cities[0].Seq != since || !sub.Cities[0].Resumed {
					t.Fatalf("%s: got %s, want seq %d resumed", who, sub.Raw, since)
				}
				for seq := since + 1; seq <= head; seq++ {
					if m := readType(t, cl, "data_update"); m.Seq != seq {
						t.Fatalf("%s: got %s, want seq %d", who, m.Raw, seq)
					}
				}
			case initial:
				if sub.Cities[0].Seq != head || sub.Cities[0].Resumed {
					t.Fatalf("%s: got %s, want seq %d not resumed", who, sub.Raw, head)
				}
				m := readType(t, cl, "initial_data")
				if m.Seq != head || m.Resumed || m.Epoch != s.Epoch() || !jsonEqual(t, m.Data, []byte(state[c.city])) {
					t.Fatalf("%s: got %s, want the state %s at seq %d", who, m.Raw, state[c.city], head)
				}
			}
			// Then live, from exactly the next seq.
			pub(c.city, 1)
			if m := readType(t, cl, "data_update"); m.Seq != head+1 {
				t.Fatalf("%s: got %s, want the live seq %d", who, m.Raw, head+1)
			}
			expectPong(t, cl)
			cl.Close()
		}
	}
	f(tc{city: "res", join: "subscribe", since: -5, want: replay})
	f(tc{city: "res", join: "subscribe", since: -8, want: replay})  // the oldest frame held is since+1
	f(tc{city: "res", join: "subscribe", since: -9, want: initial}) // since+1 was just evicted
	f(tc{city: "res", join: "subscribe", since: -5, epoch: "same", want: replay})
	f(tc{city: "res", join: "subscribe", since: -5, epoch: "other", want: initial})
	f(tc{city: "res", join: "subscribe", since: 0, want: replay})
	f(tc{city: "res", join: "subscribe", since: 3, want: initial}) // ahead of the head
	f(tc{city: "res", join: "subscribe", since: -15, want: initial})
	f(tc{city: "res", join: "url", since: -5, want: replay})
	f(tc{city: "res", join: "url", since: -5, cityN: true, want: replay})
	f(tc{city: "res", join: "url", since: -5, epoch: "same", want: replay})
	f(tc{city: "res", join: "url", since: -5, epoch: "other", want: initial})
	f(tc{city: "res", join: "url", since: -15, want: initial})
	f(tc{city: "big", join: "subscribe", since: -3, want: replay})
	f(tc{city: "big", join: "subscribe", since: -7, want: initial}) // evicted by RingBytes
	f(tc{city: "big", join: "url", since: -7, want: initial})

	// since 0 on a fresh city replays from its first frame.
	pub("fresh", 3)
	c := dialers[0].dial(t, wsURL(s, "cities=fresh&since=0"))
	readType(t, c, "subscribed")
	for seq := uint64(1); seq <= 3; seq++ {
		if m := readType(t, c, "data_update"); m.Seq != seq {
			t.Fatalf("got %s, want seq %d", m.Raw, seq)
		}
	}
}

// TestResumeSeveralCities resumes two cities in one subscribe: one from the
// ring, one that has to start over.
func TestResumeSeveralCities(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{RingSize: 8})
	p := dialProducer(t, s)
	for n := 1; n <= 20; n++ {
		p.Publish(t, dataLine("rs-a", "data_update", fmt.Sprintf(`{"n":%d}`, n)))
		p.Publish(t, dataLine("rs-b", "data_update", fmt.Sprintf(`{"n":%d}`, n)))
	}
	for _, d := range dialers {
		c := d.dial(t, wsURL(s, "cities=rs-a,rs-b&since=rs-a:17,rs-b:3"))
		sub := readType(t, c, "subscribed")
		if len(sub.Cities) != 2 || sub.Cities[0].Seq != 17 || !sub.Cities[0].Resumed || sub.Cities[1].Seq != 20 || sub.Cities[1].Resumed {
			t.Fatalf("%s: got %s, want rs-a resumed at 17, rs-b fresh at 20", d.name, sub.Raw)
		}
		got, err := collect(c, map[string]uint64{"rs-a": 17, "rs-b": 19}, map[string]uint64{"rs-a": 20, "rs-b": 20})
		if err != nil {
			t.Fatalf("%s: %s", d.name, err)
		}
		for _, m := range got {
			want := "data_update"
			if m.City == "rs-b" {
				want = "initial_data"
			}
			if m.Type != want {
				t.Fatalf("%s: got %s, want %s", d.name, m.Raw, want)
			}
		}
	}
}

// TestRecentAlerts checks that initial_data carries the latest alerts,
// oldest first, even after they left the ring.
func TestRecentAlerts(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{RingSize: 8, RecentAlerts: 3})
	p := dialProducer(t, s)

	// No alert yet: no recent_alerts member.
	p.Publish(t, dataLine("ra", "data_update", `{"n":0}`)) // 1
	c := dialers[0].dial(t, wsURL(s, ""))
	if _, m := subscribeAuth(t, c, "ra"); m.Recent != nil || strings.Contains(string(m.Raw), "recent_alerts") {
		t.Fatalf("got %s, want no recent_alerts", m.Raw)
	}

	type alert struct {
		seq  uint64
		json string
	}
	var alerts []alert
	pubAlert := func(sev string) {
		t.Helper()
		l := alertLine("ra", sev)
		seq := p.Publish(t, l)
		_, rest, _ := strings.Cut(l, `"alerts":`)
		alerts = append(alerts, alert{seq, strings.TrimSuffix(rest, "}")})
	}
	pubAlert("warning")                                    // 2
	p.Publish(t, dataLine("ra", "data_update", `{"n":3}`)) // 3
	pubAlert("critical")                                   // 4
	pubAlert("info")                                       // 5
	pubAlert("critical")                                   // 6
	for n := 7; n <= 30; n++ {
		p.Publish(t, dataLine("ra", "data_update", fmt.Sprintf(`{"n":%d}`, n)))
	}

	for _, d := range dialers {
		c := d.dial(t, wsURL(s, ""))
		_, m := subscribeAuth(t, c, "ra")
		want := alerts[len(alerts)-3:]
		if m.Seq != 30 || len(m.Recent) != len(want) || string(m.Data) != `{"n":30}` {
			t.Fatalf("%s: got %s, want seq 30, data {\"n\":30} and %d recent alerts", d.name, m.Raw, len(want))
		}
		for i, r := range m.Recent {
			if r.Seq != want[i].seq || string(r.Alerts) != want[i].json || r.Timestamp == 0 {
				t.Fatalf("%s: recent alert %d: seq %d alerts %s ts %d, want seq %d alerts %s", d.name, i, r.Seq, r.Alerts, r.Timestamp, want[i].seq, want[i].json)
			}
		}
		// Resuming from an out-of-ring position brings them too.
		c2 := d.dial(t, wsURL(s, "cities=ra&since=3"))
		readType(t, c2, "subscribed")
		if m := readType(t, c2, "initial_data"); len(m.Recent) != 3 || m.Recent[0].Seq != want[0].seq {
			t.Fatalf("%s: got %s, want the 3 recent alerts", d.name, m.Raw)
		}
	}
}

// TestSnapshotEpochResume checks that an ingested snapshot, delivered
// in-stream as initial_data, carries the node's epoch like every other
// initial_data, so that a client that keeps the epoch from it (as the
// README says) resumes after it.
func TestSnapshotEpochResume(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	p := dialProducer(t, s)
	for _, d := range dialers {
		c := d.dial(t, wsURL(s, "cities=se"))
		readType(t, c, "subscribed")
		readType(t, c, "initial_data")
		seq := p.Publish(t, dataLine("se", "snapshot", `{"a":1}`))
		m := readType(t, c, "initial_data")
		if m.Seq != seq || m.Epoch != s.Epoch() || !m.Resumed {
			t.Fatalf("%s: snapshot delivered as %s, want seq %d, epoch %d, resumed", d.name, m.Raw, seq, s.Epoch())
		}
		c.Close()
		next := p.Publish(t, dataLine("se", "data_update", `{"b":2}`))
		// Back with what the snapshot frame said.
		c = d.dial(t, wsURL(s, fmt.Sprintf("cities=se&since=%d&epoch=%d", m.Seq, m.Epoch)))
		if sub := readType(t, c, "subscribed"); len(sub.Cities) != 1 || !sub.Cities[0].Resumed {
			t.Fatalf("%s: %s, want resumed", d.name, sub.Raw)
		}
		if u := readType(t, c, "data_update"); u.Seq != next {
			t.Fatalf("%s: %s, want the data_update at seq %d", d.name, u.Raw, next)
		}
	}
}
