package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// Revocation: Config.AuthRevokedFile lists subjects and token ids whose
// tokens are refused before their exp, one per line:
//
//	# leaked on 2026-11-27
//	sub alice
//	jti 3f2b9c0e
//
// It is read with the keys (at start and on SIGHUP, Server.ReloadKeys):
// from then on such a token is refused (token_revoked), and connections and
// producers already authenticated with one are closed at their loop's next
// tick (auth_error, 4001) or their next line.
//
// Server.Revoke (POST /api/revoke on the admin port) adds one at once,
// until an expiry, and in cluster mode on every node through a JetStream
// key-value bucket (clusterrevoke.go).

// Bounds of a revocation file: read whole into memory, looked up per token.
const (
	maxRevokedBytes   = 4 << 20
	maxRevokedEntries = 100_000
	maxRevokedIDLen   = 1024
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
	if len(b) > maxRevokedBytes {
		return r, fmt.Errorf("%w: %d bytes, more than %d", errRevocations, len(b), maxRevokedBytes)
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
		case len(id) == 0 || len(id) > maxRevokedIDLen:
			return r, fmt.Errorf("%w: line %d: the value must be 1-%d bytes", errRevocations, n+1, maxRevokedIDLen)
		case len(r.subs)+len(r.jtis) == maxRevokedEntries:
			return r, fmt.Errorf("%w: more than %d entries", errRevocations, maxRevokedEntries)
		}
		set[string(id)] = struct{}{}
	}
	return r, nil
}

// loadRevocations reads Config.AuthRevokedFile; none when it is not set.
func loadRevocations(cfg *Config) (revocations, error) {
	if cfg.AuthRevokedFile == "" {
		return revocations{}, nil
	}
	b, err := readFile(cfg.AuthRevokedFile, maxRevokedBytes)
	if err != nil {
		return revocations{}, fmt.Errorf("auth_revoked_file %s: %w", cfg.AuthRevokedFile, err)
	}
	r, err := parseRevocations(b)
	if err != nil {
		return r, fmt.Errorf("auth_revoked_file %s: %w", cfg.AuthRevokedFile, err)
	}
	return r, nil
}

// watchAuthFiles reloads the keys and the revocation list (ReloadKeys)
// when one of their files changes, looking every AuthReloadInterval: for
// platforms that update mounted files without a signal (a Kubernetes
// Secret or ConfigMap). A change is a file's size or modification time,
// or a file added to or removed from a key directory. Runs on its own
// goroutine until stop is closed.
func (s *Server) watchAuthFiles(stop <-chan struct{}) {
	t := time.NewTicker(s.cfg.AuthReloadInterval)
	defer t.Stop()
	last := authFilesStamp(&s.cfg)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		stamp := authFilesStamp(&s.cfg)
		if stamp == last {
			continue
		}
		last = stamp
		if err := s.ReloadKeys(); err != nil {
			s.cfg.Logger.Error("auth files changed but cannot be reloaded; keeping the old keys", "err", err)
		}
	}
}

// authFilesStamp sums up the auth files' names, sizes and modification
// times (following symbolic links, as Kubernetes' mounts need).
func authFilesStamp(cfg *Config) string {
	var b strings.Builder
	add := func(f string) {
		b.WriteString(f)
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, " %d %d\n", st.Size(), st.ModTime().UnixNano())
		} else {
			b.WriteString(" missing\n")
		}
	}
	for _, f := range []string{cfg.AuthHMACSecretFile, cfg.AuthRevokedFile} {
		if f != "" {
			add(f)
		}
	}
	for _, p := range cfg.AuthKeys {
		files, _ := keyFiles(p)
		for _, f := range files {
			add(f)
		}
	}
	return b.String()
}

// revocation is a timed revocation: every token of a subject (kind "sub")
// or the token of an id ("jti"), refused until until. A zero until lifts
// it.
type revocation struct {
	kind  string
	id    string
	until time.Time
}

// maxRevokeTTL bounds how far ahead a revocation may last: past a year,
// put the subject in auth_revoked_file.
const maxRevokeTTL = 366 * 24 * time.Hour

// errRevocationsFull: maxRevokedEntries timed revocations are in force.
var errRevocationsFull = fmt.Errorf("more than %d timed revocations in force: put lasting ones in auth_revoked_file", maxRevokedEntries)

// timedRevocations are the revocations of Server.Revoke (and in cluster
// mode every node's), each until its expiry. Immutable once built: a
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
func (t *timedRevocations) with(rs []revocation, now int64) (*timedRevocations, error) {
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
		if r.kind == "jti" {
			m = n.jtis
		}
		if until := r.until.UnixNano(); !r.until.IsZero() && until > now {
			m[r.id] = until
		} else {
			delete(m, r.id)
		}
	}
	if n.size() > maxRevokedEntries {
		return nil, errRevocationsFull
	}
	return n, nil
}

// revoke applies rs to the timed revocations and puts the result in force.
func (a *authenticator) revoke(rs ...revocation) error {
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

// errNotShared: a revocation holds on this node, but the cluster did not
// take it.
var errNotShared = errors.New("revoked on this node only")

// Revoke refuses every token of subject id (kind "sub"), or the token
// whose jti is id (kind "jti"), until until: from now on such a token is
// refused (token_revoked), connections holding one are sent auth_error and
// closed (4001) at once, and producers holding one at their next line. In
// cluster mode it is put in the revocation bucket, which every node
// follows; an error wrapping errNotShared says that failed and only this
// node revokes. Safe for concurrent use.
func (s *Server) Revoke(kind, id string, until time.Time) error {
	if s.auth == nil {
		return errors.New("the node runs insecure: it checks no token")
	}
	r := revocation{kind: kind, id: id, until: until}
	if err := s.auth.revoke(r); err != nil {
		return err
	}
	s.housekeepAll()
	s.cfg.Logger.Info("token revoked", kind, id, "until", until.UTC().Format(time.RFC3339))
	if err := s.bus.Revoke(Revocation{Kind: kind, ID: id, Until: until}); err != nil {
		return fmt.Errorf("%w: cannot share it with the cluster: %w", errNotShared, err)
	}
	return nil
}

// maxRevokeBody bounds a POST /api/revoke body.
const maxRevokeBody = 8 << 10

// errRevokeRequest is wrapped by parseRevokeRequest's errors.
var errRevokeRequest = errors.New("invalid revocation")

// parseRevokeRequest reads the body of POST /api/revoke: a JSON object with
// one of "sub" (every token of the subject) or "jti" (one token), and one
// of "exp" (Unix seconds) or "ttl" (a duration: "24h", "90m") saying until
// when; the expiry must lie in (now, now + maxRevokeTTL]. Errors name the
// field.
func parseRevokeRequest(b []byte, now time.Time) (revocation, error) {
	var req struct {
		Sub *string `json:"sub"`
		JTI *string `json:"jti"`
		Exp *int64  `json:"exp"`
		TTL *string `json:"ttl"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return revocation{}, fmt.Errorf("%w: want {\"sub\" or \"jti\": …, \"exp\": <Unix seconds> or \"ttl\": \"24h\"}: %w", errRevokeRequest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return revocation{}, fmt.Errorf("%w: one JSON object only", errRevokeRequest)
	}
	var r revocation
	switch {
	case (req.Sub == nil) == (req.JTI == nil):
		return r, fmt.Errorf("%w: give one of sub and jti", errRevokeRequest)
	case req.Sub != nil:
		r.kind, r.id = "sub", *req.Sub
	default:
		r.kind, r.id = "jti", *req.JTI
	}
	if len(r.id) == 0 || len(r.id) > maxRevokedIDLen {
		return r, fmt.Errorf("%w: %s must be 1-%d bytes", errRevokeRequest, r.kind, maxRevokedIDLen)
	}
	switch {
	case (req.Exp == nil) == (req.TTL == nil):
		return r, fmt.Errorf("%w: give one of exp (Unix seconds) and ttl (a duration)", errRevokeRequest)
	case req.Exp != nil:
		if *req.Exp <= now.Unix() || *req.Exp > now.Add(maxRevokeTTL).Unix() {
			return r, fmt.Errorf("%w: exp must be after now and at most %s ahead", errRevokeRequest, maxRevokeTTL)
		}
		r.until = time.Unix(*req.Exp, 0)
	default:
		d, err := time.ParseDuration(*req.TTL)
		if err != nil || d <= 0 || d > maxRevokeTTL {
			return r, fmt.Errorf("%w: ttl must be a duration in (0s, %s]", errRevokeRequest, maxRevokeTTL)
		}
		r.until = now.Add(d)
	}
	return r, nil
}

// serveRevoke is POST /api/revoke: Server.Revoke with the body's
// revocation (parseRevokeRequest). 200 and the revocation as JSON; 400 for
// a bad body; 409 on an insecure node; 503 when the cluster could not take
// it (this node revokes it all the same: retry).
func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	if s.auth == nil {
		http.Error(w, "the node runs insecure: it checks no token", http.StatusConflict)
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRevokeBody))
	if err != nil {
		http.Error(w, fmt.Sprintf("cannot read the body (at most %d bytes): %s", maxRevokeBody, err), http.StatusBadRequest)
		return
	}
	rv, err := parseRevokeRequest(b, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.Revoke(rv.kind, rv.id, rv.until); err != nil {
		// errNotShared, or errRevocationsFull.
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{rv.kind: rv.id, "exp": rv.until.Unix(), "cluster": s.shared})
}
