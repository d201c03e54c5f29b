package codec

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrForwardedFor is wrapped by ClientAddr's errors.
var ErrForwardedFor = errors.New("invalid X-Forwarded-For")

// ClientAddr returns the client's address from an X-Forwarded-For value
// (comma-separated addresses, each proxy appending the one it received
// from) received from a trusted proxy: the rightmost address that trusted
// does not vouch for, so that entries a client wrote itself, to the left
// of those the proxies appended, are never believed. When every entry is
// trusted it is the leftmost. Entries are IPv4 or IPv6 addresses,
// optionally with a port (1.2.3.4:80, [2001:db8::1]:80); an empty value,
// an empty entry or one that is not an address is an error.
func ClientAddr(forwardedFor string, trusted func(netip.Addr) bool) (netip.Addr, error) {
	var addr netip.Addr
	rest := forwardedFor
	for {
		i := strings.LastIndexByte(rest, ',')
		entry := strings.TrimSpace(rest[i+1:])
		a, err := parseForwardedAddr(entry)
		if err != nil {
			return netip.Addr{}, err
		}
		addr = a
		if !trusted(a) || i < 0 {
			return addr, nil
		}
		rest = rest[:i]
	}
}

// parseForwardedAddr parses one X-Forwarded-For entry.
func parseForwardedAddr(entry string) (netip.Addr, error) {
	if entry == "" {
		return netip.Addr{}, fmt.Errorf("%w: empty entry", ErrForwardedFor)
	}
	if a, err := netip.ParseAddr(entry); err == nil && a.Zone() == "" {
		return a.Unmap(), nil
	}
	if ap, err := netip.ParseAddrPort(entry); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), nil
	}
	if len(entry) > 64 {
		entry = entry[:64] + "…"
	}
	return netip.Addr{}, fmt.Errorf("%w: %q is not an IP address", ErrForwardedFor, entry)
}
