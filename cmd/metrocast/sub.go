package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/auth"
)

// demoSecret is where `make run` keeps the secret of its demo tokens; sub
// mints with it when it exists and no token is given.
const demoSecret = "bin/demo-hmac-secret"

const (
	// subTokenTTL is the lifetime of a token sub mints; it refreshes the
	// token on the node's token_expiring.
	subTokenTTL = time.Hour
	// subIdle is how long a connection may stay silent before sub takes it
	// for dead: the node pings a quiet connection every ping_interval (25s
	// by default).
	subIdle = 90 * time.Second
	// subMaxBackoff bounds the wait between reconnects.
	subMaxBackoff = 10 * time.Second
	// subMaxFrame bounds one message from the node.
	subMaxFrame = 16 << 20
)

// errSubDone ends a sub that printed -count frames.
var errSubDone = errors.New("done")

// subFatal is an error that reconnecting would not cure: a refused token,
// a wrong path.
type subFatal struct{ err error }

func (e *subFatal) Error() string { return e.err.Error() }
func (e *subFatal) Unwrap() error { return e.err }

// runSub implements `metrocast sub`; an interrupt ends it.
func runSub(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return subMain(ctx, args, os.Stdout, os.Stderr)
}

// subMain runs `metrocast sub args` until ctx ends: frames to out,
// connection events and usage to log.
func subMain(ctx context.Context, args []string, out, log io.Writer) error {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	fs.SetOutput(log)
	var (
		rawURL     = fs.String("url", subDefaultURL(), "WebSocket `URL` of the node (default from METROCAST_ADDR and METROCAST_PATH, as serve listens)")
		tokenFile  = fs.String("token-file", "", "`file` holding the token, re-read on every connection and refresh (else METROCAST_TOKEN)")
		secretFile = fs.String("auth-hmac-secret-file", "", "mint a token for the cities with the HMAC secret in this `file` (default: "+demoSecret+" of make run when it exists, else METROCAST_AUTH_HMAC_SECRET)")
		filter     = fs.String("filter", "", "subscription filter as the protocol's JSON object, e.g. '{\"types\":[\"alerts\"],\"minSeverity\":\"warning\"}'")
		since      = fs.String("since", "", "start after this seq: N for every city, or city:N,city:N")
		epoch      = fs.Uint64("epoch", 0, "the node epoch the -since seqs came from (0: the node's current one)")
		count      = fs.Int("count", 0, "exit after printing this many frames (0: until interrupted)")
		caFile     = fs.String("ca", "", "PEM `file` of the CA that signed a wss:// node's certificate (default: the system's)")
		timeout    = fs.Duration("timeout", 10*time.Second, "bound on connecting and the upgrade")
		sse        = fs.Bool("sse", false, "follow the cities over Server-Sent Events (GET /sse on the -url's host) instead of a WebSocket")
	)
	fs.Func("token", "refused: a token on the command line shows in ps; use -token-file or METROCAST_TOKEN", func(string) error {
		return errors.New("a token on the command line is visible to every local user (ps): use -token-file FILE or METROCAST_TOKEN")
	})
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: metrocast sub [flags] CITY...

Subscribes to the cities and prints every message of the node, one JSON
object per line, to stdout; connection events go to stderr. A lost
connection is made again (after the node's reconnect hint, or a backoff)
and each city resumes after the last seq printed, with since and epoch,
so that nothing the node still holds is skipped or printed twice. With
-sse it follows the same messages as a Server-Sent Events stream (and
takes a new token by connecting again, as a stream cannot refresh one).

The token: -token-file, else METROCAST_TOKEN, else one minted for the
cities with an HMAC secret (-auth-hmac-secret-file; by default the demo
secret of make run). Without any, the node must run -insecure.

  metrocast sub nairobi
  metrocast sub -since 41 -filter '{"types":["alerts"]}' nairobi lagos
  metrocast sub -url wss://metrocast.example/ws -token-file tok nairobi
  metrocast sub -sse nairobi

flags:
`)
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	secretGiven := false
	fs.Visit(func(f *flag.Flag) { secretGiven = secretGiven || f.Name == "auth-hmac-secret-file" })
	s := &subscriber{
		cities:  fs.Args(),
		epoch:   *epoch,
		last:    map[string]uint64{},
		count:   *count,
		timeout: *timeout,
		sse:     *sse,
		out:     out,
		log:     log,
	}
	switch {
	case len(s.cities) == 0:
		return &usageError{"sub: name at least one city: metrocast sub nairobi"}
	case *count < 0:
		return fmt.Errorf("sub: -count (%d) must be ≥ 0", *count)
	case *timeout <= 0:
		return fmt.Errorf("sub: -timeout (%s) must be > 0", *timeout)
	}
	u, err := url.Parse(*rawURL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("sub: -url %q: want ws://host:port/path or wss://…", *rawURL)
	}
	s.url = u.String()
	if *filter != "" {
		if !json.Valid([]byte(*filter)) || !strings.HasPrefix(strings.TrimSpace(*filter), "{") {
			return fmt.Errorf("sub: -filter %q: want a JSON object such as {\"types\":[\"alerts\"]}", *filter)
		}
		s.filter = json.RawMessage(*filter)
	}
	if err := s.parseSince(*since); err != nil {
		return fmt.Errorf("sub: %w", err)
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("sub: -ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("sub: -ca %s: no PEM certificate", *caFile)
		}
		s.tls = &tls.Config{RootCAs: pool}
	}
	if err := s.tokenSource(*tokenFile, *secretFile, secretGiven); err != nil {
		return fmt.Errorf("sub: %w", err)
	}
	return s.run(ctx)
}

// subDefaultURL is the node `metrocast serve` would listen on with this
// environment: METROCAST_ADDR (":8080" dials this host) and METROCAST_PATH.
func subDefaultURL() string {
	addr, path := gateway.Config{}.WithDefaults().Addr, gateway.Config{}.WithDefaults().Path
	if v := os.Getenv("METROCAST_ADDR"); v != "" {
		addr = v
	}
	if v := os.Getenv("METROCAST_PATH"); v != "" {
		path = v
	}
	host, port, err := net.SplitHostPort(addr)
	if err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	return "ws://" + addr + path
}

// subscriber is one `metrocast sub`: its settings and where each city is.
// It runs on one goroutine.
type subscriber struct {
	url     string
	cities  []string
	filter  json.RawMessage
	tls     *tls.Config
	timeout time.Duration
	sse     bool // over Server-Sent Events (subsse.go)
	count   int  // frames left to print; 0: no bound
	out     io.Writer
	log     io.Writer
	token   func() (string, error) // nil: no token
	minted  bool                   // token mints its own (a refusal may pass with a new one)

	epoch   uint64            // of the seqs in last; 0: unknown
	last    map[string]uint64 // city → last seq printed (or asked with -since)
	printed int

	// Per connection.
	cur      string        // the token sent
	after    time.Duration // the node's reconnect hint
	authErr  string        // an auth_error's code and message
	upgraded bool          // the connection got subscribed
}

// parseSince reads -since: "N" for every city, or "city:N,city:N".
func (s *subscriber) parseSince(v string) error {
	if v == "" {
		return nil
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		for _, c := range s.cities {
			s.last[c] = n
		}
		return nil
	}
	for e := range strings.SplitSeq(v, ",") {
		city, seq, ok := strings.Cut(strings.TrimSpace(e), ":")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || city == "" || err != nil {
			return fmt.Errorf("-since %q: want N, or city:N separated by commas", v)
		}
		s.last[city] = n
	}
	return nil
}

// tokenSource picks where tokens come from: -token-file, METROCAST_TOKEN,
// or minted with an HMAC secret.
func (s *subscriber) tokenSource(tokenFile, secretFile string, secretGiven bool) error {
	switch {
	case tokenFile != "":
		s.token = func() (string, error) {
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return "", fmt.Errorf("-token-file: %w", err)
			}
			return string(bytes.TrimSpace(b)), nil
		}
		_, err := s.token()
		return err
	case os.Getenv("METROCAST_TOKEN") != "":
		tok := os.Getenv("METROCAST_TOKEN")
		s.token = func() (string, error) { return tok, nil }
		return nil
	}
	if !secretGiven {
		if _, err := os.Stat(demoSecret); err == nil {
			secretFile = demoSecret
		} else if os.Getenv("METROCAST_AUTH_HMAC_SECRET") == "" {
			return nil // no token: an -insecure node
		}
	}
	method, key, err := signingKey("", secretFile, "HS256")
	if err != nil {
		return err
	}
	s.minted = true
	s.token = func() (string, error) {
		now := time.Now()
		c := auth.Claims{
			RegisteredClaims: jwt.RegisteredClaims{
				Subject:   "metrocast-sub",
				IssuedAt:  jwt.NewNumericDate(now),
				ExpiresAt: jwt.NewNumericDate(now.Add(subTokenTTL)),
			},
			Cities: s.cities,
		}
		return jwt.NewWithClaims(method, &c).SignedString(key)
	}
	_, err = s.token()
	return err
}

// run connects until ctx ends, -count frames are printed or the node
// refuses for good.
func (s *subscriber) run(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	for {
		err := s.session(ctx)
		switch {
		case ctx.Err() != nil, errors.Is(err, errSubDone):
			return nil
		case errors.As(err, new(*subFatal)):
			return fmt.Errorf("sub: %w", err)
		}
		if s.upgraded {
			backoff = 500 * time.Millisecond
		}
		wait := backoff
		switch {
		case errors.Is(err, errSubRenew):
			wait = 0
		case s.after > 0:
			wait = s.after
		default:
			backoff = min(2*backoff, subMaxBackoff)
		}
		fmt.Fprintf(s.log, "sub: %v; connecting again in %s\n", err, wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// session makes one connection, subscribes (resuming where the last one
// ended) and prints frames until it ends.
func (s *subscriber) session(ctx context.Context) error {
	if s.sse {
		return s.sessionSSE(ctx)
	}
	s.after, s.authErr, s.upgraded, s.cur = 0, "", false, ""
	var err error
	if s.token != nil {
		if s.cur, err = s.token(); err != nil {
			return &subFatal{err}
		}
	}
	var refusal string
	d := ws.Dialer{
		Timeout:   s.timeout,
		TLSConfig: s.tls,
		OnStatusError: func(status int, _ []byte, r io.Reader) {
			refusal = readRefusal(r)
		},
	}
	if s.cur != "" {
		d.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + s.cur}})
	}
	conn, br, _, err := d.Dial(ctx, s.url)
	if err != nil {
		var st ws.StatusError
		if errors.As(err, &st) {
			return s.refused(int(st), refusal)
		}
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	src := io.Reader(conn)
	if br != nil {
		src = br // holds what the node sent right after the upgrade
	}
	if err := wsutil.WriteClientText(conn, s.subscribeMessage()); err != nil {
		return err
	}
	ctl := wsutil.ControlFrameHandler(conn, ws.StateClientSide)
	rd := &wsutil.Reader{
		Source:         src,
		State:          ws.StateClientSide,
		CheckUTF8:      true,
		MaxMessageSize: subMaxFrame,
		OnIntermediate: ctl,
	}
	var msg bytes.Buffer
	for {
		_ = conn.SetReadDeadline(time.Now().Add(subIdle))
		h, err := rd.NextFrame()
		if err == nil && h.OpCode.IsControl() {
			err = ctl(h, rd)
			if err == nil {
				continue
			}
		}
		if err != nil {
			return s.ended(ctx, err)
		}
		msg.Reset()
		if _, err := msg.ReadFrom(rd); err != nil {
			return s.ended(ctx, err)
		}
		if h.OpCode != ws.OpText {
			continue
		}
		err = s.handle(msg.Bytes(), func(tok string) error {
			refresh, _ := json.Marshal(map[string]string{"type": "refresh", "token": tok})
			return wsutil.WriteClientText(conn, refresh)
		})
		if err != nil {
			return err
		}
	}
}

// readRefusal returns the body of the node's answer to a refused upgrade
// ("auth_required: …").
func readRefusal(r io.Reader) string {
	resp, err := http.ReadResponse(bufio.NewReader(r), nil)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return string(bytes.TrimSpace(b))
}

// refused turns an HTTP answer to the upgrade (or stream) into an error: fatal unless
// waiting may help (429, 503) or a minted token may pass next time.
func (s *subscriber) refused(status int, body string) error {
	what := "upgrade"
	if s.sse {
		what = "stream"
	}
	err := fmt.Errorf("the node refused the %s: %d %s", what, status, http.StatusText(status))
	if body != "" {
		err = fmt.Errorf("the node refused the %s: %d %s", what, status, body)
	}
	switch {
	case status == http.StatusTooManyRequests, status >= 500:
		return err
	case status == http.StatusUnauthorized && !s.minted:
		return &subFatal{fmt.Errorf("%w (the token: -token-file, METROCAST_TOKEN, or -auth-hmac-secret-file to mint one)", err)}
	}
	return &subFatal{err}
}

// ended explains why a connection ended.
func (s *subscriber) ended(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s.authErr != "" {
		if s.minted && strings.HasPrefix(s.authErr, "token_expired") {
			return fmt.Errorf("the token expired (%s)", s.authErr)
		}
		hint := ""
		if s.token == nil {
			hint = " (no token: give -token-file, METROCAST_TOKEN, or -auth-hmac-secret-file to mint one)"
		}
		return &subFatal{fmt.Errorf("the node refused the token: %s%s", s.authErr, hint)}
	}
	var closed wsutil.ClosedError
	if errors.As(err, &closed) {
		return fmt.Errorf("closed by the node: %d %s", closed.Code, closed.Reason)
	}
	return err
}

// subscribeMessage asks for the cities, resuming each after its last seq.
func (s *subscriber) subscribeMessage() []byte {
	m := struct {
		Type    string            `json:"type"`
		Cities  []string          `json:"cities"`
		Since   map[string]uint64 `json:"since,omitempty"`
		Epoch   uint64            `json:"epoch,omitempty"`
		Filters json.RawMessage   `json:"filters,omitempty"`
	}{Type: "subscribe", Cities: s.cities, Filters: s.filter}
	if len(s.last) > 0 {
		m.Since, m.Epoch = s.last, s.epoch
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic("BUG: cannot marshal a subscribe message: " + err.Error())
	}
	return b
}

// subMessage is what sub reads of the node's messages.
type subMessage struct {
	Type    string  `json:"type"`
	City    string  `json:"city"`
	Seq     *uint64 `json:"seq"`
	Epoch   uint64  `json:"epoch"`
	AfterMS int64   `json:"after_ms"`
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Cities  []struct {
		City    string `json:"city"`
		Seq     uint64 `json:"seq"`
		Resumed bool   `json:"resumed"`
	} `json:"cities"`
}

// handle prints one message and keeps what resuming needs; refresh hands
// the node a new token before the current one expires.
func (s *subscriber) handle(b []byte, refresh func(token string) error) error {
	if bytes.IndexByte(b, '\n') >= 0 {
		var c bytes.Buffer
		if json.Compact(&c, b) == nil {
			b = c.Bytes()
		}
	}
	if _, err := s.out.Write(append(b, '\n')); err != nil {
		return &subFatal{fmt.Errorf("cannot write: %w", err)}
	}
	var m subMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return &subFatal{fmt.Errorf("the node sent a message that is not JSON: %.80s", b)}
	}
	switch m.Type {
	case "subscribed":
		s.upgraded = true
		if m.Epoch != 0 {
			s.epoch = m.Epoch
		}
		for _, c := range m.Cities {
			if c.Resumed {
				s.last[c.City] = c.Seq
			}
		}
	case "initial_data", "data_update", "alerts":
		if m.Epoch != 0 {
			s.epoch = m.Epoch
		}
		if m.Seq != nil && m.City != "" {
			s.last[m.City] = *m.Seq
		}
	case "reconnect":
		s.after = time.Duration(m.AfterMS) * time.Millisecond
	case "auth_error":
		s.authErr = m.Code + ": " + m.Message
	case "token_expiring":
		if s.token != nil {
			tok, err := s.token()
			if err == nil && tok != s.cur {
				s.cur = tok
				if err := refresh(tok); err != nil {
					return err
				}
			}
		}
	}
	s.printed++
	if s.count > 0 && s.printed >= s.count {
		return errSubDone
	}
	return nil
}
