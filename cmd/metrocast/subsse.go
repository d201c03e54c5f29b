package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// errSubRenew ends a stream to take a new token: a stream cannot refresh
// its token, so sub connects again at once with the new one, resuming.
var errSubRenew = errors.New("the token expires soon: connecting with a new one")

// errSubIdle ends a stream silent for subIdle.
var errSubIdle = fmt.Errorf("nothing from the node for %s", subIdle)

// sessionSSE is session over Server-Sent Events: a GET of the node's /sse
// with the cities, each resuming after its last seq (since and epoch on the
// URL, as sub keeps them) and the filter. Each event's data is the message
// a WebSocket client gets, printed as the WebSocket session prints it.
func (s *subscriber) sessionSSE(parent context.Context) error {
	s.after, s.authErr, s.upgraded, s.cur = 0, "", false, ""
	var err error
	if s.token != nil {
		if s.cur, err = s.token(); err != nil {
			return &subFatal{err}
		}
	}
	target, err := s.streamURL()
	if err != nil {
		return &subFatal{err}
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return &subFatal{err}
	}
	req.Header.Set("Accept", "text/event-stream")
	if s.cur != "" {
		req.Header.Set("Authorization", "Bearer "+s.cur)
	}
	client := http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: s.timeout}).DialContext,
		TLSClientConfig:       s.tls,
		TLSHandshakeTimeout:   s.timeout,
		ResponseHeaderTimeout: s.timeout,
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return s.ended(parent, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return s.refused(resp.StatusCode, string(bytes.TrimSpace(b)))
	}
	// The node sends a comment every ping_interval: silence past subIdle
	// is a dead connection.
	idle := time.AfterFunc(subIdle, func() { cancel(errSubIdle) })
	defer idle.Stop()
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var data []byte
	for {
		line, err := readLine(br, subMaxFrame)
		if err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errSubIdle) {
				return cause
			}
			return s.ended(parent, err)
		}
		idle.Reset(subIdle)
		switch field, value, _ := strings.Cut(string(line), ":"); {
		case len(line) == 0:
			if data == nil {
				continue
			}
			err := s.handle(data, func(string) error { return errSubRenew })
			if err != nil {
				return err
			}
			data = nil
		case field == "data":
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, strings.TrimPrefix(value, " ")...)
			if data == nil {
				data = []byte{}
			}
		}
		// Comments (heartbeats), the id (sub resumes by the seqs it
		// printed), event (the data names its type) and retry (the
		// reconnect event carries the same wait) need nothing.
	}
}

// readLine returns the next line of an event stream, without its line
// ending (LF, CR or CRLF), of at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		b, err := br.ReadSlice('\n')
		line = append(line, b...)
		if len(line) > max {
			return nil, fmt.Errorf("an event line over %d bytes", max)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

// streamURL is the node's /sse for s.url's host (ws → http, wss → https),
// with the cities, where each resumes, and the filter.
func (s *subscriber) streamURL() (string, error) {
	u, err := url.Parse(s.url)
	if err != nil {
		return "", err
	}
	u.Scheme = map[string]string{"ws": "http", "wss": "https"}[u.Scheme]
	u.Path = "/sse"
	q := url.Values{"cities": {strings.Join(s.cities, ",")}}
	if len(s.last) > 0 {
		var since []string
		for c, seq := range s.last {
			since = append(since, c+":"+strconv.FormatUint(seq, 10))
		}
		sort.Strings(since)
		q.Set("since", strings.Join(since, ","))
		if s.epoch != 0 {
			q.Set("epoch", strconv.FormatUint(s.epoch, 10))
		}
	}
	if s.filter != nil {
		var f struct {
			Types       []string `json:"types"`
			MinSeverity string   `json:"minSeverity"`
		}
		if err := json.Unmarshal(s.filter, &f); err != nil {
			return "", fmt.Errorf("-filter: %w", err)
		}
		if len(f.Types) > 0 {
			q.Set("types", strings.Join(f.Types, ","))
		}
		if f.MinSeverity != "" {
			q.Set("minSeverity", f.MinSeverity)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
