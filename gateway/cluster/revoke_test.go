package cluster

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/auth"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// TestClusterRevoke: one POST /api/revoke on node a revokes a user on
// every node: node b closes its connections at once and refuses its new
// tokens, and a node started afterwards reads the revocation before it
// serves anyone. The bucket entry ends with the revocation's expiry.
func TestClusterRevoke(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	cfg := secureConfig(t)
	a, b := startClusterNode(t, ns.url(), cfg), startClusterNode(t, ns.url(), cfg)
	open := func(s *node, sub string) nodetest.Client {
		t.Helper()
		c := nodetest.MustDialAuth(t, s.ws("cities=cr"), nodetest.Bearer(token(t, sub)))
		nodetest.ReadType(t, c, "subscribed")
		nodetest.ReadType(t, c, "initial_data")
		return c
	}
	onB, otherOnB := open(b, "mallory"), open(b, "walter")

	code, _, body := nodetest.AdminDo(t, a.AdminAddr().String(), http.MethodPost, "/api/revoke", "", `{"sub":"mallory","ttl":"2s"}`)
	if code != http.StatusOK || !strings.Contains(string(body), `"cluster":true`) {
		t.Fatalf("revoke on a: %d %s", code, body)
	}
	b2, err := onB.Next(clusterTimeout)
	if m, _ := nodetest.ParseMsg(b2); err != nil || m.Type != "auth_error" || m.Code != auth.CodeRevoked {
		t.Fatalf("mallory on b: %s %v, want auth_error %s", b2, err, auth.CodeRevoked)
	}
	nodetest.ExpectClose(t, onB, ws.StatusCode(4001))
	nodetest.Send(t, otherOnB, `{"type":"ping"}`)
	nodetest.ReadType(t, otherOnB, "pong")
	for _, s := range []*node{a, b} {
		if code := s.tokenStatus(t, token(t, "mallory")); code != http.StatusUnauthorized {
			t.Fatalf("mallory's new token: %d, want 401", code)
		}
	}
	// A node that starts now knows it before it listens.
	c := startClusterNode(t, ns.url(), cfg)
	if code := c.tokenStatus(t, token(t, "mallory")); code != http.StatusUnauthorized {
		t.Fatalf("mallory's token on a node started after the revocation: %d, want 401", code)
	}

	// The entry is in the bucket until the expiry, then gone: mallory is
	// admitted again everywhere.
	kv := revocationKV(t, ns, a)
	if _, err := kv.Get(t.Context(), revocationKey(gateway.Revocation{Kind: "sub", ID: "mallory"})); err != nil {
		t.Fatalf("the revocation is not in the bucket: %v", err)
	}
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		_, err := kv.Get(t.Context(), revocationKey(gateway.Revocation{Kind: "sub", ID: "mallory"}))
		return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
	})
	for _, s := range []*node{a, b, c} {
		nodetest.WaitFor(t, clusterTimeout, func() bool { return s.tokenStatus(t, token(t, "mallory")) == http.StatusSwitchingProtocols })
	}
}

// TestClusterRevokeLift: deleting a bucket key (nats kv del) lifts the
// revocation on every node; an entry that is not a revocation is ignored
// and counted.
func TestClusterRevokeLift(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	cfg := secureConfig(t)
	a, b := startClusterNode(t, ns.url(), cfg), startClusterNode(t, ns.url(), cfg)
	if err := a.Revoke("sub", "trudy", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	tok := token(t, "trudy")
	nodetest.WaitFor(t, clusterTimeout, func() bool { return b.tokenStatus(t, tok) == http.StatusUnauthorized })
	kv := revocationKV(t, ns, a)
	if _, err := kv.Put(t.Context(), "nonsense", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(t.Context(), revocationKey(gateway.Revocation{Kind: "sub", ID: "trudy"})); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*node{a, b} {
		nodetest.WaitFor(t, clusterTimeout, func() bool { return s.tokenStatus(t, tok) == http.StatusSwitchingProtocols })
		if m := s.metrics(t); m["metrocast_cluster_revocation_errors_total"] != 1 {
			t.Errorf("metrocast_cluster_revocation_errors_total %v, want 1", m["metrocast_cluster_revocation_errors_total"])
		}
	}
}

// revocationKV opens s's revocation bucket on its own connection to ns.
func revocationKV(t testing.TB, ns *natsNode, s *node) jetstream.KeyValue {
	t.Helper()
	return ns.bucket(t, revocationBucket(s.bus.cfg.Stream))
}

func TestParseRevocationEntry(t *testing.T) {
	until := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r := gateway.Revocation{Kind: "jti", ID: "3f2b 9c/é", Until: until}
	got, err := parseRevocationEntry(revocationKey(r), true, []byte(until.Format(time.RFC3339Nano)))
	if err != nil || got.Kind != r.Kind || got.ID != r.ID || !got.Until.Equal(until) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if got, err := parseRevocationEntry(revocationKey(r), false, nil); err != nil || !got.Until.IsZero() {
		t.Fatalf("deletion: %+v %v", got, err)
	}
	for _, bad := range []struct {
		key, value string
	}{
		{"sub", "2026-12-01T00:00:00Z"},
		{"sub.", "2026-12-01T00:00:00Z"},
		{"kid.YQ", "2026-12-01T00:00:00Z"},
		{"sub.YQ==", "2026-12-01T00:00:00Z"},
		{"sub.Y!", "2026-12-01T00:00:00Z"},
		{"sub.YQ", "tomorrow"},
		{"sub.YQ", ""},
		{"sub.00", "2026-12-01T00:00:00Z"},   // non-zero trailing bits: "0w" names the same id
		{"sub.0w\r", "2026-12-01T00:00:00Z"}, // base64 skips \r and \n
	} {
		if _, err := parseRevocationEntry(bad.key, true, []byte(bad.value)); !errors.Is(err, errRevocationEntry) {
			t.Errorf("%s → %q: %v, want errRevocationEntry", bad.key, bad.value, err)
		}
	}
}

// FuzzParseRevocationEntry: what parses round-trips through revocationKey.
func FuzzParseRevocationEntry(f *testing.F) {
	f.Add("sub.YWxpY2U", "2026-12-01T00:00:00Z")
	f.Add("jti.eA", "2026-12-01T00:00:00.5+01:00")
	f.Add("sub.", "")
	f.Fuzz(func(t *testing.T, key, value string) {
		r, err := parseRevocationEntry(key, true, []byte(value))
		if err != nil {
			if !errors.Is(err, errRevocationEntry) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if revocationKey(r) != key || !r.Valid() {
			t.Fatalf("%q parsed as %+v", key, r)
		}
	})
}
