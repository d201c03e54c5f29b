package gateway

import (
	"bytes"
	"errors"
	"fmt"
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
	b, err := os.ReadFile(cfg.AuthRevokedFile)
	if err != nil {
		return revocations{}, fmt.Errorf("auth_revoked_file: %w", err)
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
