package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// Revocation: Config.RevokedFile (auth_revoked_file) lists subjects and
// token ids whose tokens are refused before their exp, one per line:
//
//	# leaked on 2026-11-27
//	sub alice
//	jti 3f2b9c0e
//
// It is read with the keys (at start and on SIGHUP: Authenticator.Reload):
// from then on such a token is refused (token_revoked), and connections and
// producers already authenticated with one are closed at their loop's next
// tick (auth_error, 4001) or their next line.
//
// Authenticator.Revoke adds one at once, until an expiry: the node's
// POST /api/revoke, and in cluster mode every node's through the bus.

// Bounds of a revocation file: read whole into memory, looked up per token.
const (
	MaxRevokedBytes   = 4 << 20
	maxRevokedEntries = 100_000
	MaxRevokedIDLen   = 1024
)

// revocations are the revoked subjects and token ids. Immutable once built;
// the zero value revokes nothing.
type revocations struct {
	subs, jtis map[string]struct{}
}

// revokes reports whether a token of subject sub and id jti is revoked.
func (r *revocations) revokes(sub, jti string) bool {
	if _, ok := r.subs[sub]; ok {
		return true
	}
	_, ok := r.jtis[jti]
	return ok && jti != ""
}

// empty reports whether r revokes nothing.
func (r *revocations) empty() bool { return len(r.subs) == 0 && len(r.jtis) == 0 }

// errRevocations is wrapped by parseRevocations' errors.
var errRevocations = errors.New("invalid revocation list")

// parseRevocations parses a revocation file: lines "sub <subject>" or "jti
// <token id>" (one space, the rest of the line is the value), blank lines
// and lines starting with '#'. Errors name the line.
func parseRevocations(b []byte) (revocations, error) {
	r := revocations{subs: map[string]struct{}{}, jtis: map[string]struct{}{}}
	if len(b) > MaxRevokedBytes {
		return r, fmt.Errorf("%w: %d bytes, more than %d", errRevocations, len(b), MaxRevokedBytes)
	}
	if !utf8.Valid(b) {
		return r, fmt.Errorf("%w: not UTF-8", errRevocations)
	}
	for n, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(bytes.TrimSpace(line)) == 0 || line[0] == '#' {
			continue
		}
		kind, id, ok := bytes.Cut(line, []byte(" "))
		var set map[string]struct{}
		switch string(kind) {
		case "sub":
			set = r.subs
		case "jti":
			set = r.jtis
		}
		switch {
		case !ok || set == nil:
			return r, fmt.Errorf(`%w: line %d: want "sub <subject>" or "jti <token id>"`, errRevocations, n+1)
		case len(id) == 0 || len(id) > MaxRevokedIDLen:
			return r, fmt.Errorf("%w: line %d: the value must be 1-%d bytes", errRevocations, n+1, MaxRevokedIDLen)
		case len(r.subs)+len(r.jtis) == maxRevokedEntries:
			return r, fmt.Errorf("%w: more than %d entries", errRevocations, maxRevokedEntries)
		}
		set[string(id)] = struct{}{}
	}
	return r, nil
}

// loadRevocations reads Config.RevokedFile; none when it is not set.
func loadRevocations(cfg *Config) (revocations, error) {
	if cfg.RevokedFile == "" {
		return revocations{}, nil
	}
	b, err := ReadFile(cfg.RevokedFile, MaxRevokedBytes)
	if err != nil {
		return revocations{}, fmt.Errorf("auth_revoked_file %s: %w", cfg.RevokedFile, err)
	}
	r, err := parseRevocations(b)
	if err != nil {
		return r, fmt.Errorf("auth_revoked_file %s: %w", cfg.RevokedFile, err)
	}
	return r, nil
}

// WatchFiles reloads the keys and the revocation list (Reload) when one
// of their files changes, looking every ReloadInterval: for platforms that
// update mounted files without a signal (a Kubernetes Secret or
// ConfigMap). A change is a file's size or modification time, or a file
// added to or removed from a key directory, against the files as they
// were before the keys in force were read (New, Reload): a change made
// before this goroutine first looks is not missed. Files that failed to
// reload are tried again once they change again. Runs on its own
// goroutine until stop is closed; with no ReloadInterval it returns at
// once.
func (a *Authenticator) WatchFiles(stop <-chan struct{}) {
	if a.cfg.ReloadInterval <= 0 {
		return
	}
	t := time.NewTicker(a.cfg.ReloadInterval)
	defer t.Stop()
	var failed string // the stamp of files that could not be reloaded
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		stamp := a.cfg.filesStamp()
		a.mu.Lock()
		loaded := a.stamp
		a.mu.Unlock()
		if stamp == loaded || stamp == failed {
			continue
		}
		if err := a.Reload(); err != nil {
			failed = stamp
			a.cfg.Logger.Error("auth files changed but cannot be reloaded; keeping the old keys", "err", err)
		}
	}
}

// filesStamp sums up the auth files' names, sizes and modification times
// (following symbolic links, as Kubernetes' mounts need).
func (cfg *Config) filesStamp() string {
	var b strings.Builder
	add := func(f string) {
		b.WriteString(f)
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, " %d %d\n", st.Size(), st.ModTime().UnixNano())
		} else {
			b.WriteString(" missing\n")
		}
	}
	for _, f := range []string{cfg.HMACSecretFile, cfg.RevokedFile} {
		if f != "" {
			add(f)
		}
	}
	for _, p := range cfg.Keys {
		files, _ := keyFiles(p)
		for _, f := range files {
			add(f)
		}
	}
	return b.String()
}

// Revocation is a timed revocation: every token of a subject (kind "sub")
// or the token of an id ("jti"), refused until until. A zero until lifts
// it.
type Revocation struct {
	Kind  string // "sub" or "jti"
	ID    string
	Until time.Time
}

// Valid reports whether r is one a node takes: a known kind and an id of
// 1 to MaxRevokedIDLen bytes.
func (r Revocation) Valid() bool {
	return (r.Kind == "sub" || r.Kind == "jti") && len(r.ID) > 0 && len(r.ID) <= MaxRevokedIDLen
}

// maxRevokeTTL bounds how far ahead a revocation may last: past a year,
// put the subject in auth_revoked_file.
const maxRevokeTTL = 366 * 24 * time.Hour

// errRevocationsFull: maxRevokedEntries timed revocations are in force.
var errRevocationsFull = fmt.Errorf("more than %d timed revocations in force: put lasting ones in auth_revoked_file", maxRevokedEntries)

// timedRevocations are the revocations of Authenticator.Revoke (the
// node's, and in cluster mode every node's), each until its expiry. Immutable once built: a
// change copies the maps, which hold at most maxRevokedEntries. A nil
// *timedRevocations revokes nothing.
type timedRevocations struct {
	subs, jtis map[string]int64 // id → until, Unix nanoseconds
}

// revokes reports whether a token of subject sub and id jti is revoked at
// now (Unix nanoseconds).
func (t *timedRevocations) revokes(sub, jti string, now int64) bool {
	if t == nil {
		return false
	}
	if until, ok := t.subs[sub]; ok && now < until {
		return true
	}
	until, ok := t.jtis[jti]
	return ok && jti != "" && now < until
}

func (t *timedRevocations) size() int {
	if t == nil {
		return 0
	}
	return len(t.subs) + len(t.jtis)
}

// with returns a copy of t with rs applied in order and without the
// entries expired at now (Unix nanoseconds).
func (t *timedRevocations) with(rs []Revocation, now int64) (*timedRevocations, error) {
	n := &timedRevocations{subs: make(map[string]int64), jtis: make(map[string]int64)}
	if t != nil {
		for _, p := range [...][2]map[string]int64{{t.subs, n.subs}, {t.jtis, n.jtis}} {
			for id, until := range p[0] {
				if until > now {
					p[1][id] = until
				}
			}
		}
	}
	for _, r := range rs {
		m := n.subs
		if r.Kind == "jti" {
			m = n.jtis
		}
		if until := r.Until.UnixNano(); !r.Until.IsZero() && until > now {
			m[r.ID] = until
		} else {
			delete(m, r.ID)
		}
	}
	if n.size() > maxRevokedEntries {
		return nil, errRevocationsFull
	}
	return n, nil
}

// Revoke applies rs to the timed revocations and puts the result in force.
func (a *Authenticator) Revoke(rs ...Revocation) error {
	for _, r := range rs {
		if !r.Valid() {
			return fmt.Errorf("%w: kind %q (want sub or jti), id of %d bytes (want 1 to %d)", errRevokeRequest, r.Kind, len(r.ID), MaxRevokedIDLen)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	t, err := a.timed.with(rs, time.Now().UnixNano())
	if err != nil {
		return err
	}
	a.timed = t
	ks := *a.keys.Load()
	ks.timed = t
	a.keys.Store(&ks)
	return nil
}

// errRevokeRequest is wrapped by ParseRevokeRequest's errors.
var errRevokeRequest = errors.New("invalid revocation")

// ParseRevokeRequest reads the body of POST /api/revoke: a JSON object with
// one of "sub" (every token of the subject) or "jti" (one token), and one
// of "exp" (Unix seconds) or "ttl" (a duration: "24h", "90m") saying until
// when; the expiry must lie in (now, now + maxRevokeTTL]. Errors name the
// field.
func ParseRevokeRequest(b []byte, now time.Time) (Revocation, error) {
	var req struct {
		Sub *string `json:"sub"`
		JTI *string `json:"jti"`
		Exp *int64  `json:"exp"`
		TTL *string `json:"ttl"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Revocation{}, fmt.Errorf("%w: want {\"sub\" or \"jti\": …, \"exp\": <Unix seconds> or \"ttl\": \"24h\"}: %w", errRevokeRequest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Revocation{}, fmt.Errorf("%w: one JSON object only", errRevokeRequest)
	}
	var r Revocation
	switch {
	case (req.Sub == nil) == (req.JTI == nil):
		return r, fmt.Errorf("%w: give one of sub and jti", errRevokeRequest)
	case req.Sub != nil:
		r.Kind, r.ID = "sub", *req.Sub
	default:
		r.Kind, r.ID = "jti", *req.JTI
	}
	if len(r.ID) == 0 || len(r.ID) > MaxRevokedIDLen {
		return r, fmt.Errorf("%w: %s must be 1-%d bytes", errRevokeRequest, r.Kind, MaxRevokedIDLen)
	}
	switch {
	case (req.Exp == nil) == (req.TTL == nil):
		return r, fmt.Errorf("%w: give one of exp (Unix seconds) and ttl (a duration)", errRevokeRequest)
	case req.Exp != nil:
		if *req.Exp <= now.Unix() || *req.Exp > now.Add(maxRevokeTTL).Unix() {
			return r, fmt.Errorf("%w: exp must be after now and at most %s ahead", errRevokeRequest, maxRevokeTTL)
		}
		r.Until = time.Unix(*req.Exp, 0)
	default:
		d, err := time.ParseDuration(*req.TTL)
		if err != nil || d <= 0 || d > maxRevokeTTL {
			return r, fmt.Errorf("%w: ttl must be a duration in (0s, %s]", errRevokeRequest, maxRevokeTTL)
		}
		r.Until = now.Add(d)
	}
	return r, nil
}
