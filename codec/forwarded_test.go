package codec

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// inProxies trusts the test's proxies: 10.0.0.0/8 and 2001:db8:ff::/48.
func inProxies(a netip.Addr) bool {
	return netip.MustParsePrefix("10.0.0.0/8").Contains(a) || netip.MustParsePrefix("2001:db8:ff::/48").Contains(a)
}

func TestClientAddr(t *testing.T) {
	f := func(xff, want string) {
		t.Helper()
		got, err := ClientAddr(xff, inProxies)
		if err != nil || got != netip.MustParseAddr(want) {
			t.Fatalf("ClientAddr(%q) = %s, %v; want %s", xff, got, err, want)
		}
	}
	f("203.0.113.7", "203.0.113.7")
	f(" 203.0.113.7 ", "203.0.113.7")
	// The rightmost entry no trusted proxy vouches for: what the client
	// wrote itself, to the left, is not believed.
	f("198.51.100.1, 203.0.113.7", "203.0.113.7")
	f("198.51.100.1, 203.0.113.7, 10.1.2.3", "203.0.113.7")
	f("203.0.113.7,10.1.2.3,10.9.9.9", "203.0.113.7")
	// Every hop trusted: the leftmost.
	f("10.0.0.5, 10.1.2.3", "10.0.0.5")
	f("203.0.113.7:4711", "203.0.113.7")
	f("[2001:db8::1]:443", "2001:db8::1")
	f("2001:db8::1, 2001:db8:ff::9", "2001:db8::1")
	f("::ffff:203.0.113.7", "203.0.113.7")
	// Garbage left of the client's entry is never read.
	f("not an address, 203.0.113.7", "203.0.113.7")
}

func TestClientAddrMalformed(t *testing.T) {
	for _, xff := range []string{
		"",
		" ",
		",",
		"203.0.113.7,",
		"203.0.113.7, ,10.1.2.3",
		"unknown",
		"203.0.113.256",
		"203.0.113.7:99999",
		"fe80::1%eth0",
		"[fe80::1%eth0]:80",
		"203.0.113.7 10.1.2.3",
		"garbage, 10.1.2.3",
		"10.1.2.3, " + strings.Repeat("x", 100),
	} {
		if got, err := ClientAddr(xff, inProxies); !errors.Is(err, ErrForwardedFor) {
			t.Errorf("ClientAddr(%q) = %s, %v; want ErrForwardedFor", xff, got, err)
		} else if len(err.Error()) > 120 {
			t.Errorf("ClientAddr(%q): error of %d bytes", xff, len(err.Error()))
		}
	}
}

// TestUpgradeForwardedFor: the header's lines are joined in order.
func TestUpgradeForwardedFor(t *testing.T) {
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"X-Forwarded-For: 198.51.100.1\r\nx-forwarded-for: 203.0.113.7, 10.1.2.3\r\n\r\n"
	up, _, err := testUpgrader.Upgrade([]byte(req), nil, nil)
	if err != nil || up.ForwardedFor != "198.51.100.1,203.0.113.7, 10.1.2.3" {
		t.Fatalf("ForwardedFor = %q (%v)", up.ForwardedFor, err)
	}
}

// FuzzClientAddr: an accepted value yields a valid address that is one
// of its entries, the rightmost untrusted one (or the leftmost).
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "198.51.100.1, 203.0.113.7, 10.1.2.3", "[2001:db8::1]:443", "10.0.0.1", ",", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, xff string) {
		a, err := ClientAddr(xff, inProxies)
		if err != nil {
			if !errors.Is(err, ErrForwardedFor) {
				t.Fatalf("ClientAddr(%q): unexpected error %v", xff, err)
			}
			return
		}
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			t.Fatalf("ClientAddr(%q) = %s", xff, a)
		}
		entries := strings.Split(xff, ",")
		for i := len(entries) - 1; i >= 0; i-- {
			e, err := parseForwardedAddr(strings.TrimSpace(entries[i]))
			if err != nil {
				t.Fatalf("ClientAddr(%q) accepted entry %q: %v", xff, entries[i], err)
			}
			if !inProxies(e) || i == 0 {
				if e != a {
					t.Fatalf("ClientAddr(%q) = %s, want %s", xff, a, e)
				}
				return
			}
		}
	})
}
