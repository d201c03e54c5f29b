package gateway

import (
	"hash/maphash"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
)

// ipLimiter counts connections per source address (IPv6 per /64, which is
// what one host usually gets) in shards, so that accepts on different loops
// rarely meet on a lock. Safe for concurrent use.
type ipLimiter struct {
	max    int32
	seed   maphash.Seed
	shards [16]ipShard
}

type ipShard struct {
	mu sync.Mutex
	n  map[netip.Addr]int32
	_  [shardSize - 16]byte
}

func newIPLimiter(max int) *ipLimiter {
	l := &ipLimiter{max: int32(max), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].n = make(map[netip.Addr]int32)
	}
	return l
}

// ipKey is the address a connection counts against.
func ipKey(a net.Addr) netip.Addr { return limitKey(peerAddr(a)) }

// peerAddr is a connection's remote address (IPv4 unmapped).
func peerAddr(a net.Addr) netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	return ip.Unmap()
}

// limitKey is the key ip counts against: itself, or its /64 for IPv6.
func limitKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip
}

// parseProxy parses a trusted proxy: an address or a CIDR prefix.
func parseProxy(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	return p.Masked(), err
}

// proxies are the trusted proxies (Config.TrustedProxies).
type proxies []netip.Prefix

func newProxies(list []string) proxies {
	var ps proxies
	for _, s := range list {
		if p, err := parseProxy(s); err == nil { // Validate reported the others
			ps = append(ps, p)
		}
	}
	return ps
}

// trusts reports whether a is one of the trusted proxies.
func (ps proxies) trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (l *ipLimiter) shard(ip netip.Addr) *ipShard {
	return &l.shards[maphash.Comparable(l.seed, ip)%uint64(len(l.shards))]
}

// acquire counts one more connection from ip unless it already has max.
func (l *ipLimiter) acquire(ip netip.Addr) bool {
	s := l.shard(ip)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.n[ip]
	if n >= l.max {
		return false
	}
	s.n[ip] = n + 1
	return true
}

// release forgets one connection from ip.
func (l *ipLimiter) release(ip netip.Addr) {
	s := l.shard(ip)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.n[ip] - 1; n > 0 {
		s.n[ip] = n
	} else {
		delete(s.n, ip)
	}
}

// Answers to a connection refused before its upgrade, sent once its request
// has arrived: closing on a client that is still sending makes its kernel
// answer with a reset that can destroy the response before it is read.
const (
	respNodeFull = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: 36\r\nConnection: close\r\n\r\nthis node is at its connection limit"
	respIPLimit = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 10\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: 38\r\nConnection: close\r\n\r\ntoo many connections from your address"
)

// validOriginPattern reports whether p is "*", scheme://host[:port] or
// scheme://*.domain[:port].
func validOriginPattern(p string) bool {
	if p == "*" {
		return true
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return false
	}
	host := strings.TrimPrefix(u.Hostname(), "*.")
	return host != "" && !strings.Contains(host, "*")
}

// originAllowed reports whether a browser's Origin matches one of the
// patterns (see Config.AllowedOrigins). Matching ignores case; a wildcard
// matches one or more labels in front of the domain, not the domain itself.
func originAllowed(patterns []string, origin string) bool {
	if len(patterns) == 0 {
		return true
	}
	origin = strings.ToLower(origin)
	for _, p := range patterns {
		p = strings.ToLower(p)
		switch {
		case p == "*" || p == origin:
			return true
		case strings.Contains(p, "://*."):
			scheme, rest, _ := strings.Cut(p, "://*.")
			oscheme, ohost, ok := strings.Cut(origin, "://")
			if ok && oscheme == scheme && strings.HasSuffix(ohost, "."+rest) && len(ohost) > len(rest)+1 &&
				!strings.ContainsAny(ohost, "/@") {
				return true
			}
		}
	}
	return false
}
