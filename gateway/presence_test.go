package gateway

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

// nextPresence reads c's messages until one of the presence types.
func nextPresence(t *testing.T, c client) presenceMsg {
	t.Helper()
	for {
		b, err := c.Next(readTimeout)
		if err != nil {
			t.Fatalf("waiting for a presence message: %s", err)
		}
		var m presenceMsg
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		switch m.Type {
		case "presence", "user_joined", "user_left":
			return m
		}
	}
}

// TestPresence: the snapshot counts users, not connections; joins and
// leaves reach presence subscribers only, coalesced per tick, and a user's
// leave and rejoin within a tick cancel out.
func TestPresence(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	s := startServer(t, cfg)
	dial := func(sub string, presence bool) client {
		t.Helper()
		c := mustDialAuth(t, wsURL(s, ""), bearer(hs256(t, claims(sub, time.Hour, "*"))))
		send(t, c, fmt.Sprintf(`{"type":"subscribe","cities":["pr"],"presence":%v}`, presence))
		readType(t, c, "subscribed")
		return c
	}
	alice := dial("alice", true)
	if m := nextPresence(t, alice); m.Type != "presence" || m.Count != 1 || !slices.Equal(m.Users, []string{"alice"}) {
		t.Fatalf("alice's snapshot: %+v", m)
	}
	plain := dial("carol", false) // no presence: not counted, told nothing
	bob1 := dial("bob", true)
	if m := nextPresence(t, bob1); m.Count != 2 || !slices.Equal(m.Users, []string{"alice", "bob"}) {
		t.Fatalf("bob's snapshot: %+v", m)
	}
	// Alice's and bob's joins may share a tick, and alice may see her own.
	for {
		m := nextPresence(t, alice)
		if m.Type != "user_joined" {
			t.Fatalf("alice told %+v, want joins", m)
		}
		if slices.Contains(m.Users, "bob") {
			if m.Count != 2 {
				t.Fatalf("alice told %+v, want a count of 2", m)
			}
			break
		}
	}

	// A second tab is the same user: no event, the same count.
	bob2 := dial("bob", true)
	if m := nextPresence(t, bob2); m.Count != 2 {
		t.Fatalf("bob's second snapshot: %+v", m)
	}
	// One tab closes: bob stays. The other unsubscribes: bob left.
	bob1.Close()
	send(t, bob2, `{"type":"unsubscribe","cities":["pr"]}`)
	readType(t, bob2, "unsubscribed")
	m := nextPresence(t, alice)
	if m.Type != "user_left" || !slices.Equal(m.Users, []string{"bob"}) || m.Count != 1 {
		t.Fatalf("alice told %+v, want bob left", m)
	}
	// carol's connection saw no presence message: after a frame published
	// now, the next message is that frame.
	dialProducer(t, s).Publish(t, dataLine("pr", "data_update", `{"x":1}`))
	for {
		m := read(t, plain)
		if m.Type == "data_update" {
			break
		}
		if m.Type != "initial_data" {
			t.Fatalf("carol got %s", m.Raw)
		}
	}
}

// TestPresenceCoalesced: a join and a leave of one user within one tick
// cancel out; more joins in a tick than presenceMaxListed make a snapshot
// that lists that many and counts the rest.
func TestPresenceCoalesced(t *testing.T) {
	p := &presence{}
	p.join("c", "u1")
	p.leave("u1")
	p.flush("c")
	if p.gen.Load() != 0 {
		t.Fatalf("a join and a leave in one tick flushed a batch")
	}
	for i := range presenceMaxListed + 5 {
		p.join("c", fmt.Sprintf("user%03d", i))
	}
	p.flush("c")
	frames, g := p.since("c", 0)
	if g != 1 {
		t.Fatalf("gen %d, want 1", g)
	}
	var m presenceMsg
	// Skip the 4-byte header of a 126-extended-length frame.
	if err := json.Unmarshal(frames[4:], &m); err != nil {
		t.Fatalf("%s: %s", frames, err)
	}
	// More than presenceMaxListed joined: a snapshot, not a list cut short.
	if m.Type != "presence" || len(m.Users) != presenceMaxListed || m.More != 5 || m.Count != presenceMaxListed+5 {
		t.Fatalf("batch: type %s, %d users, more %d, count %d", m.Type, len(m.Users), m.More, m.Count)
	}
	// A subscriber behind the kept batches gets a snapshot.
	for i := range presenceBatches + 1 {
		p.leave(fmt.Sprintf("user%03d", i))
		p.flush("c")
	}
	frames, _ = p.since("c", 1)
	if err := json.Unmarshal(frames[4:], &m); err != nil || m.Type != "presence" {
		t.Fatalf("lapped subscriber got %s (%v), want a presence snapshot", frames, err)
	}
}

// TestPresenceRemote: shares of other nodes count each user once with the
// local connections, and an expired share leaves.
func TestPresenceRemote(t *testing.T) {
	p := &presence{}
	now := time.Now()
	p.join("c", "u1")
	if !p.setRemote("n1", []string{"u1", "u2"}, 3, 1, now) {
		t.Fatal("a new share changed nothing")
	}
	if p.setRemote("n1", []string{"u1", "u2"}, 3, 1, now.Add(time.Second)) {
		t.Fatal("a refresh changed the watchers")
	}
	if !p.renew("n1", 1, now.Add(time.Second)) || p.renew("n1", 2, now) || p.renew("n3", 1, now) {
		t.Fatal("renew: want true for a known node's same share only")
	}
	p.setRemote("n2", []string{"u2"}, 0, 2, now)
	p.mu.Lock()
	if p.count() != 5 || p.members["u1"] != 2 || p.members["u2"] != 2 {
		t.Fatalf("count %d, members %v", p.count(), p.members)
	}
	p.mu.Unlock()
	if share := string(p.localShare()); share != `{"users":["u1"],"more":0}` {
		t.Fatalf("local share %s", share)
	}
	// n2's share is older than the cut-off, n1's refresh is not.
	nodes, changed, left := p.expire(now.Add(time.Millisecond))
	if !slices.Equal(nodes, []string{"n2"}) || !changed || !left {
		t.Fatalf("expire: %v, changed %v, left %v", nodes, changed, left)
	}
	p.mu.Lock()
	if p.count() != 5 || p.members["u2"] != 1 || len(p.remote) != 1 {
		t.Fatalf("after n2 expired: count %d, members %v", p.count(), p.members)
	}
	p.mu.Unlock()
	p.leave("u1")
	if _, changed, left := p.expire(now.Add(time.Hour)); !changed || left {
		t.Fatalf("expire all: changed %v, left %v", changed, left)
	}
	if p.localShare() != nil {
		t.Fatal("a share without local watchers")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.count() != 0 || len(p.members) != 0 {
		t.Fatalf("count %d, members %v", p.count(), p.members)
	}
}
