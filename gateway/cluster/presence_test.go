package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// maxListed is how many users a presence message names at most (README:
// the others are counted in "more").
const maxListed = 100

// view is what one presence subscriber knows of a city's watchers from
// the presence messages it has read.
type view struct {
	t     testing.TB
	c     nodetest.Client
	users map[string]bool
	count int
	more  int
	// left is every user a user_left message named.
	left map[string]bool
	msgs int // presence messages read
}

// watch connects to s as sub, subscribed to city with presence, and reads
// the subscribed answer.
func watch(t testing.TB, s *node, sub, city string) *view {
	t.Helper()
	c := nodetest.MustDialAuth(t, s.ws(""), nodetest.Bearer(token(t, sub)))
	nodetest.Send(t, c, `{"type":"subscribe","cities":["`+city+`"],"presence":true}`)
	nodetest.ReadType(t, c, "subscribed")
	return &view{t: t, c: c, users: map[string]bool{}, left: map[string]bool{}}
}

// next reads the next presence message and applies it.
func (v *view) next() nodetest.PresenceMsg {
	v.t.Helper()
	for {
		b, err := v.c.Next(clusterTimeout)
		if err != nil {
			v.t.Fatalf("waiting for a presence message (have %v, count %d): %s", v.names(), v.count, err)
		}
		var m nodetest.PresenceMsg
		if err := json.Unmarshal(b, &m); err != nil {
			v.t.Fatal(err)
		}
		switch m.Type {
		case "presence":
			clear(v.users)
			fallthrough
		case "user_joined":
			for _, u := range m.Users {
				v.users[u] = true
			}
		case "user_left":
			for _, u := range m.Users {
				delete(v.users, u)
				v.left[u] = true
			}
		default:
			continue
		}
		v.msgs++
		v.count, v.more = m.Count, m.More
		return m
	}
}

func (v *view) names() []string { return slices.Sorted(maps.Keys(v.users)) }

// until reads presence messages until the subscriber knows exactly users
// and count.
func (v *view) until(count int, users ...string) {
	v.t.Helper()
	for !slices.Equal(v.names(), users) || v.count != count {
		v.next()
	}
}

// watchBoth connects user1 to a and user2 to b, both watching city, and
// waits until each sees the two of them.
func watchBoth(t testing.TB, a, b *node, city, user1, user2 string) (*view, *view) {
	t.Helper()
	v1, v2 := watch(t, a, user1, city), watch(t, b, user2, city)
	both := []string{min(user1, user2), max(user1, user2)}
	v1.until(2, both...)
	v2.until(2, both...)
	return v1, v2
}

// presenceCluster starts a NATS server and two nodes on it that check
// tokens and share presence with ttl, their configuration changed by tune.
func presenceCluster(t testing.TB, ttl time.Duration, tune ...func(*gateway.Config)) (ns *natsNode, a, b *node) {
	t.Helper()
	ns = startNATS(t)
	cfg := secureConfig(t)
	for _, f := range tune {
		f(&cfg)
	}
	cc := Config{URL: ns.url(), PresenceTTL: ttl}
	return ns, startNode(t, cc, cfg), startNode(t, cc, cfg)
}

// presenceKV opens s's presence bucket on its own connection to ns.
func presenceKV(t testing.TB, ns *natsNode, s *node) jetstream.KeyValue {
	t.Helper()
	return ns.bucket(t, presenceBucket(s.bus.cfg.Stream))
}

// TestClusterPresence: watchers on two nodes see each other; a user
// watching through both counts once and does not leave while one of its
// connections remains; a node that stops withdraws its watchers at once
// (the TTL is far off).
func TestClusterPresence(t *testing.T) {
	t.Parallel()
	_, a, b := presenceCluster(t, 10*time.Minute)

	alice := watch(t, a, "alice", "pc")
	alice.until(1, "alice")
	bob := watch(t, b, "bob", "pc")
	bob.until(2, "alice", "bob")
	alice.until(2, "alice", "bob")

	// Alice's second tab, on the other node: no change anywhere.
	alice2 := watch(t, b, "alice", "pc")
	alice2.until(2, "alice", "bob")
	// Carol joins b after it: once a's watchers see her, a holds a share
	// of b's that has alice too (a share lists every watcher of its node).
	carol := watch(t, b, "carol", "pc")
	alice.until(3, "alice", "bob", "carol")

	// Her first tab closes: she still watches through b. Dave, who comes
	// to a after that, finds her there, and nobody is told she left.
	alice.c.Close()
	nodetest.WaitFor(t, clusterTimeout, func() bool { return a.Stats().Connections == 0 })
	dave := watch(t, a, "dave", "pc")
	for _, v := range []*view{dave, bob, alice2, carol} {
		v.until(4, "alice", "bob", "carol", "dave")
		if len(v.left) > 0 {
			t.Fatalf("told %v left, want no one", v.left)
		}
	}

	// b stops: its watchers leave a at once, not after the TTL.
	if err := b.Drain(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	dave.until(1, "dave")
}

// TestClusterPresenceCutOff: a node that loses NATS without a word (here
// its connection is closed under it) stops refreshing its share, and the
// other nodes forget its watchers after nats_presence_ttl.
func TestClusterPresenceCutOff(t *testing.T) {
	t.Parallel()
	// Refreshed every second: a refresher held back on a loaded machine
	// for up to two of them keeps its share.
	ns, a, c := presenceCluster(t, 3*time.Second)

	erin, _ := watchBoth(t, a, c, "pk", "erin", "dave")
	// Refreshes keep a share: after three of c's (a TTL), dave is still
	// there when frank joins.
	kv := presenceKV(t, ns, c)
	key := "pk." + c.bus.id
	revs := map[uint64]bool{}
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		if e, err := kv.Get(t.Context(), key); err == nil {
			revs[e.Revision()] = true
		}
		return len(revs) > 3
	})
	watch(t, a, "frank", "pk")
	erin.until(3, "dave", "erin", "frank")
	if len(erin.left) > 0 {
		t.Fatalf("erin told %v left", erin.left)
	}

	c.bus.nc.Close()
	// c's last refresh: none is stored after the cut but one that was on
	// its way, which only makes the bound below looser.
	last, err := kv.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	erin.until(2, "erin", "frank")
	// a dates a share from when it read it, when NATS had stored it: dave
	// cannot leave before the TTL has passed since c's last refresh.
	if d, ttl := time.Since(last.Created()), a.bus.cfg.PresenceTTL; d < ttl {
		t.Fatalf("dave left %s after c's last refresh, before the TTL (%s) could pass", d, ttl)
	}
}

// TestClusterPresenceNATSRestart: while NATS is away the nodes cannot
// vouch for each other's watchers, which leave after the TTL; when it is
// back (same store), the shares are put again and the watchers return.
func TestClusterPresenceNATSRestart(t *testing.T) {
	t.Parallel()
	ns, a, b := presenceCluster(t, time.Second)
	alice, bob := watchBoth(t, a, b, "pn", "alice", "bob")

	ns.stop()
	alice.until(1, "alice")
	bob.until(1, "bob")
	ns.start()
	alice.until(2, "alice", "bob")
	bob.until(2, "alice", "bob")
}

// TestClusterPresenceShares: shares in the bucket, as another node would
// put them, are counted with their unlisted watchers; a change of count
// alone sends a snapshot; malformed shares and keys are counted as errors
// and change nothing.
func TestClusterPresenceShares(t *testing.T) {
	t.Parallel()
	ns, a, _ := presenceCluster(t, 10*time.Minute)
	kv := presenceKV(t, ns, a)
	ctx := t.Context()
	put := func(key string, v []byte) {
		t.Helper()
		if _, err := kv.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}

	alice := watch(t, a, "alice", "ps")
	alice.until(1, "alice")
	users := make([]string, codec.MaxShareUsers)
	for i := range users {
		users[i] = fmt.Sprintf("u%04d", i)
	}
	put("ps.othernode", codec.AppendPresenceShare(nil, users, 5))
	// 1 + 1000 + 5 watchers: more joins than a list holds, so a snapshot
	// of the first 100 by name (alice's own join may come before).
	m := alice.next()
	for m.Count == 1 {
		m = alice.next()
	}
	if m.Type != "presence" || m.Count != 1006 || len(m.Users) != maxListed || m.Users[0] != "alice" || m.More != 906 {
		t.Fatalf("got %s count %d, %d users, more %d; want presence 1006, %d, 906", m.Type, m.Count, len(m.Users), m.More, maxListed)
	}
	// The same users, two more unlisted: a snapshot with the new count.
	put("ps.othernode", codec.AppendPresenceShare(nil, users, 7))
	m = alice.next()
	if m.Type != "presence" || m.Count != 1008 || len(m.Users) != maxListed || m.More != 908 {
		t.Fatalf("got %s count %d, %d users, more %d; want presence 1008, %d, 908", m.Type, m.Count, len(m.Users), m.More, maxListed)
	}

	// Malformed: not JSON, a user listed twice, a key without a node, a
	// key of an invalid city. Each is an error and changes nothing.
	before := a.bus.presence.errors.Load()
	put("ps.badnode", []byte(`{"users":[`))
	put("ps.dupnode", []byte(`{"users":["x","x"]}`))
	put("ps", []byte(`{"users":["y"]}`))
	put("Not_A_City.node", []byte(`{"users":["z"]}`))
	nodetest.WaitFor(t, clusterTimeout, func() bool { return a.bus.presence.errors.Load() == before+4 })

	// The node's share is deleted: its users leave (a snapshot again),
	// and the count is alice's alone: no malformed share's x or y counts.
	if err := kv.Delete(ctx, "ps.othernode"); err != nil {
		t.Fatal(err)
	}
	m = alice.next()
	if m.Type != "presence" || m.Count != 1 || !slices.Equal(m.Users, []string{"alice"}) || m.More != 0 {
		t.Fatalf("got %s count %d, %v, more %d; want presence 1 [alice]", m.Type, m.Count, m.Users, m.More)
	}

	// The node's own key holds alice alone.
	e, err := kv.Get(ctx, "ps."+a.bus.id)
	if err != nil {
		t.Fatal(err)
	}
	if got, more, err := codec.ParsePresenceShare(e.Value()); err != nil || !slices.Equal(got, []string{"alice"}) || more != 0 {
		t.Fatalf("a's share: %q %d %v", got, more, err)
	}
	// Closing alice deletes the key.
	alice.c.Close()
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		_, err := kv.Get(context.Background(), "ps."+a.bus.id)
		return err != nil
	})
}
