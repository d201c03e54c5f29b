package auth

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Keys from an identity provider. Auth0, Keycloak, Cognito and any OIDC
// issuer publish their signing keys as a JWK set at a URL and rotate them.
// Each Config.JWKSURL is fetched off the event loops: at start (New),
// then every JWKSRefresh, sooner when the response's Cache-Control
// max-age says so (down to a tenth of it), and again, at most every tenth
// of it, when a token names a kid the node does not hold. The keys of a
// URL's last good fetch stay in force while fetches fail (logged,
// counted): a provider that is down for a while locks nobody out.

// Bounds of a JWKS fetch.
const (
	jwksTimeout   = 10 * time.Second
	maxJWKSBytes  = 1 << 20
	maxRedirects  = 5
	jwksMinFactor = 10 // the shortest interval between fetches is JWKSRefresh / jwksMinFactor
)

// jwksSource is one JWKS URL: the keys of its last good fetch and its
// schedule. Guarded by Authenticator.mu (url excepted).
type jwksSource struct {
	url   string
	keys  keyList   // nil before the first good fetch
	tried time.Time // the last fetch began
	next  time.Time // when to fetch it again
}

// CheckJWKSURL accepts https URLs, and http ones to a loopback host only:
// whoever can change the keys on the way can mint any token.
func CheckJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	switch {
	case u.Host == "":
		return errors.New("no host")
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
		return nil
	}
	return errors.New("must be https:// (http:// only to a loopback address)")
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// startJWKS makes a source of each JWKS URL and fetches them all; the
// errors are those of the fetches that failed (logged already).
func (a *Authenticator) startJWKS() []error {
	if len(a.cfg.JWKSURL) == 0 {
		return nil
	}
	a.client = &http.Client{
		Timeout: jwksTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			return CheckJWKSURL(req.URL.String())
		},
	}
	for _, u := range a.cfg.JWKSURL {
		a.jwks = append(a.jwks, &jwksSource{url: u})
	}
	return a.refreshJWKS(time.Now(), false)
}

// refetchJWKS asks WatchJWKS to fetch the JWKS URLs again. It never
// blocks: it runs on the event loops (a token with an unknown kid).
func (a *Authenticator) refetchJWKS() {
	if len(a.jwks) == 0 {
		return
	}
	select {
	case a.refetch <- struct{}{}:
	default:
	}
}

// WatchJWKS fetches each JWKS URL when it is due, and when refetchJWKS
// asks (each URL at most every JWKSRefresh/10), until stop is closed.
// Runs on its own goroutine; without JWKS URLs it returns at once.
func (a *Authenticator) WatchJWKS(stop <-chan struct{}) {
	if len(a.jwks) == 0 {
		return
	}
	t := time.NewTimer(a.untilDue(time.Now()))
	defer t.Stop()
	for {
		asked := false
		select {
		case <-stop:
			return
		case <-t.C:
		case <-a.refetch:
			asked = true
		}
		now := time.Now()
		a.refreshJWKS(now, asked)
		t.Reset(a.untilDue(time.Now()))
	}
}

// untilDue returns the time until the next source is due.
func (a *Authenticator) untilDue(now time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.cfg.JWKSRefresh
	for _, src := range a.jwks {
		d = min(d, src.next.Sub(now))
	}
	return max(d, 0)
}

// minInterval is the shortest time between two fetches of a URL.
func (a *Authenticator) minInterval() time.Duration {
	return a.cfg.JWKSRefresh / jwksMinFactor
}

// refreshJWKS fetches, all at once, the sources that are due at now, or,
// asked, every source not fetched within minInterval (the others are due
// as soon as it allows). A source whose keys changed changes the key set
// in force. It returns the fetches' errors.
func (a *Authenticator) refreshJWKS(now time.Time, asked bool) []error {
	a.mu.Lock()
	var due []*jwksSource
	for _, src := range a.jwks {
		switch soon := src.tried.Add(a.minInterval()); {
		case !now.Before(src.next), asked && !now.Before(soon):
			src.tried = now
			due = append(due, src)
		case asked && soon.Before(src.next):
			src.next = soon
		}
	}
	a.mu.Unlock()
	if len(due) == 0 {
		return nil
	}
	type result struct {
		keys   keyList
		maxAge time.Duration
		hasAge bool
		err    error
	}
	results := make([]result, len(due))
	var wg sync.WaitGroup
	for i, src := range due {
		wg.Go(func() {
			r := &results[i]
			r.keys, r.maxAge, r.hasAge, r.err = a.fetchJWKS(src.url)
		})
	}
	wg.Wait()

	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	changed := false
	for i, src := range due {
		r := results[i]
		a.fetches.Add(1)
		if r.err != nil {
			a.fetchErrors.Add(1)
			src.next = now.Add(a.minInterval())
			err := fmt.Errorf("auth_jwks_url %s: %w", src.url, r.err)
			errs = append(errs, err)
			msg := "cannot fetch a JWKS URL; its last good keys stay in force"
			if src.keys == nil {
				msg = "cannot fetch a JWKS URL; no key of it yet"
			}
			a.cfg.Logger.Warn(msg, "url", src.url, "err", r.err, "retry_in", a.minInterval())
			continue
		}
		src.next = now.Add(a.refreshAfter(r.maxAge, r.hasAge))
		if !sameKeys(src.keys, r.keys) {
			src.keys, changed = r.keys, true
			a.cfg.Logger.Info("keys fetched from a JWKS URL", "url", src.url, "kids", r.keys.kids())
		}
	}
	if changed {
		// Cannot fail: the source that changed holds a key.
		_ = a.setKeysLocked()
	}
	return errs
}

// refreshAfter is how long a fetch's keys are kept: JWKSRefresh, or the
// response's max-age when that is shorter, but at least minInterval.
func (a *Authenticator) refreshAfter(maxAge time.Duration, ok bool) time.Duration {
	if !ok {
		return a.cfg.JWKSRefresh
	}
	return min(max(maxAge, a.minInterval()), a.cfg.JWKSRefresh)
}

// fetchJWKS fetches one JWK set and returns its keys (at least one) and
// the response's max-age.
func (a *Authenticator) fetchJWKS(u string) (keyList, time.Duration, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), jwksTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, false, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, false, fmt.Errorf("status %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, 0, false, err
	}
	if len(b) > maxJWKSBytes {
		return nil, 0, false, fmt.Errorf("a JWK set larger than %d bytes", maxJWKSBytes)
	}
	keys, err := parseRemoteJWKS(b)
	if err != nil {
		return nil, 0, false, err
	}
	maxAge, ok := cacheMaxAge(resp.Header.Get("Cache-Control"))
	return keys, maxAge, ok, nil
}

// parseRemoteJWKS reads the JWK set of a URL: as a local JWKS file
// (parseJWKS), but a symmetric key is refused (a URL anyone may read
// would publish the secret), and a set without any key this node can use
// is an error, not a reason to drop the keys in force.
func parseRemoteJWKS(b []byte) (keyList, error) {
	raw, err := parseJWKS(b)
	if err != nil {
		return nil, err
	}
	var keys keyList
	for _, k := range raw {
		if _, symmetric := k.key.([]byte); symmetric {
			return nil, fmt.Errorf("key %q is a symmetric secret: a JWKS URL must publish public keys only", k.kid)
		}
		if err := keys.add(k, "key "+strconv.Quote(k.kid)); err != nil {
			return nil, err
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no signing key this node can verify with")
	}
	return keys, nil
}

// kids lists the key ids, for logs.
func (l keyList) kids() []string {
	kids := make([]string, len(l))
	for i, k := range l {
		kids[i] = k.kid
	}
	return kids
}

// sameKeys reports whether a and b hold the same keys in the same order.
func sameKeys(a, b keyList) bool {
	return slices.EqualFunc(a, b, func(x, y key) bool {
		if x.kid != y.kid || !slices.Equal(x.algs, y.algs) {
			return false
		}
		if xb, ok := x.key.([]byte); ok {
			yb, ok := y.key.([]byte)
			return ok && bytes.Equal(xb, yb)
		}
		xk, ok := x.key.(interface{ Equal(crypto.PublicKey) bool })
		return ok && xk.Equal(y.key)
	})
}

// cacheMaxAge reads the max-age of a Cache-Control header: max-age=N
// seconds; no-store and no-cache mean 0. ok is false when the header says
// neither (or says it malformed).
func cacheMaxAge(h string) (d time.Duration, ok bool) {
	for dir := range strings.SplitSeq(h, ",") {
		name, val, hasVal := strings.Cut(strings.TrimSpace(dir), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return 0, true
		case "max-age":
			val = strings.Trim(val, `"`)
			n, err := strconv.ParseUint(val, 10, 32)
			if !hasVal || err != nil {
				continue
			}
			return time.Duration(n) * time.Second, true
		}
	}
	return 0, false
}
