package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// dialer opens WebSocket connections from rotating 127.0.0.x source
// addresses.
type dialer struct {
	o    *options
	next atomic.Uint32
}

// netDial connects from the next source address. IP_BIND_ADDRESS_NO_PORT
// defers the port choice to connect(), where the kernel may reuse a port for
// different destinations: without it every bind takes a port of its own.
func (d *dialer) netDial(ctx context.Context, network, addr string) (net.Conn, error) {
	i := d.next.Add(1)
	src := net.IPv4(127, 0, 0, byte(2+int(i)%d.o.srcs))
	nd := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: src},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
				if serr == nil {
					serr = enableTimestamps(fd)
				}
			}); err != nil {
				return err
			}
			return serr
		},
	}
	return nd.DialContext(ctx, network, addr)
}

// client is one WebSocket connection. Its counters are written by its reader
// goroutine only and read after that goroutine has returned.
type client struct {
	conn net.Conn
	br   *bufio.Reader
	ts   *tsReader
	city int

	ready    bool   // initial_data received
	last     uint64 // seq of the last frame seen
	received uint64 // data_update frames with a new seq
	dups     uint64 // data_update frames with an old seq
	gaps     uint64 // seqs skipped
	resyncs  uint64 // initial_data after the first (conflation)
	badTime  uint64 // data_update without a parsable "t"
	noTS     uint64 // data_update read without a kernel timestamp
	err      error
}

// dial opens and upgrades one connection subscribed to city idx.
func (d *dialer) dial(ctx context.Context, idx int) (*client, error) {
	u := "ws://" + d.o.addr + d.o.path + "?cities=" + d.o.city(idx)
	if d.o.token != "" {
		u += "&token=" + url.QueryEscape(d.o.token)
	}
	wd := ws.Dialer{NetDial: d.netDial, Timeout: 30 * time.Second}
	var lastErr error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
			}
		}
		conn, br, _, err := wd.Dial(ctx, u)
		if err != nil {
			lastErr = err
			continue
		}
		ts, err := newTSReader(conn)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		var r io.Reader = ts
		if br != nil {
			// The handshake reader holds what came behind the response
			// (subscribed, initial_data): read that first.
			early, _ := br.Peek(br.Buffered())
			r = io.MultiReader(bytes.NewReader(bytes.Clone(early)), ts)
			ws.PutReader(br)
		}
		return &client{conn: conn, br: bufio.NewReaderSize(r, 4<<10), ts: ts, city: idx % d.o.cities}, nil
	}
	return nil, fmt.Errorf("cannot connect to %s: %w", u, lastErr)
}

// dialAll opens o.conns connections, o.parallel at a time, and starts a
// reader for each. It fails on the first connection that cannot be opened.
func dialAll(ctx context.Context, o *options, stats *runStats) ([]*client, *sync.WaitGroup, error) {
	ctx, cancel := context.WithTimeout(ctx, o.connectWait)
	defer cancel()
	d := &dialer{o: o}
	clients := make([]*client, o.conns)
	readers := new(sync.WaitGroup)
	var (
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
		sem      = make(chan struct{}, o.parallel)
	)
	for i := range o.conns {
		if firstErr.Load() != nil || ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := d.dial(ctx, i)
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			clients[i] = c
			readers.Add(1)
			go func() {
				defer readers.Done()
				c.read(stats)
				if !stats.closing.Load() {
					stats.dropped.Add(1)
				}
			}()
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return clients, readers, *p
	}
	return clients, readers, ctx.Err()
}

// closeAll closes every connection and waits for the readers.
func closeAll(clients []*client, readers *sync.WaitGroup, stats *runStats) {
	stats.closing.Store(true)
	for _, c := range clients {
		if c != nil {
			_ = c.conn.Close()
		}
	}
	readers.Wait()
}

// runStats are shared by all readers.
type runStats struct {
	ready      atomic.Int64  // clients that got their initial_data
	deliveries atomic.Uint64 // data_update frames received
	latency    *histogram    // ingest send → client reads the frame, ns
	arrival    *histogram    // ingest send → kernel receive timestamp, ns
	// from is the send time (Unix ns) from which frames are measured;
	// frames sent before it (the warm-up) count only for loss.
	from     atomic.Int64
	measured atomic.Uint64 // data_update frames sent at or after from
	spread   []frameSpread // per city, when -spread is set
	closing  atomic.Bool   // set when the run closes its connections
	dropped  atomic.Int64  // connections that ended before that
}

var errClosed = errors.New("closed by the server")

// read handles frames until the connection fails or closes. It answers
// pings, parses the seq of city frames and, for data_update, the send time
// the publisher put in "data":{"t":…}.
func (c *client) read(st *runStats) {
	var payload []byte
	for {
		op, n, err := c.header()
		if err != nil {
			c.err = err
			return
		}
		if cap(payload) < n {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(c.br, payload); err != nil {
			c.err = err
			return
		}
		now := time.Now().UnixNano()
		switch op {
		case ws.OpText:
			c.message(payload, now, st)
		case ws.OpPing:
			f := ws.MaskFrameInPlace(ws.NewPongFrame(payload))
			if err := ws.WriteFrame(c.conn, f); err != nil {
				c.err = err
				return
			}
		case ws.OpClose:
			c.err = errClosed
			return
		}
	}
}

// header reads a server (unmasked) frame header, without allocating.
func (c *client) header() (ws.OpCode, int, error) {
	b, err := c.br.Peek(2)
	if err != nil {
		return 0, 0, err
	}
	op := ws.OpCode(b[0] & 0x0f)
	if b[1]&0x80 != 0 {
		return 0, 0, errors.New("masked frame from the server")
	}
	n, hn := int(b[1]&0x7f), 2
	switch n {
	case 126:
		if b, err = c.br.Peek(4); err != nil {
			return 0, 0, err
		}
		n, hn = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if b, err = c.br.Peek(10); err != nil {
			return 0, 0, err
		}
		l := binary.BigEndian.Uint64(b[2:])
		if l > 64<<20 {
			return 0, 0, fmt.Errorf("frame of %d bytes", l)
		}
		n, hn = int(l), 10
	}
	_, err = c.br.Discard(hn)
	return op, n, err
}

var (
	prefixData    = []byte(`{"type":"data_update"`)
	prefixInitial = []byte(`{"type":"initial_data"`)
	keySeq        = []byte(`"seq":`)
	keyT          = []byte(`"data":{"t":`)
)

func (c *client) message(m []byte, now int64, st *runStats) {
	switch {
	case bytes.HasPrefix(m, prefixData):
		seq, ok := numberAfter(m, keySeq)
		if !ok {
			return
		}
		switch {
		case seq <= c.last:
			c.dups++
			return
		case seq > c.last+1 && c.ready:
			c.gaps += seq - c.last - 1
		}
		c.last = seq
		c.received++
		st.deliveries.Add(1)
		if st.latency == nil {
			return
		}
		t, ok := numberAfter(m, keyT)
		switch {
		case !ok:
			c.badTime++
		case int64(t) >= st.from.Load():
			st.measured.Add(1)
			st.latency.record(now - int64(t))
			if c.ts.ts != 0 {
				st.arrival.record(c.ts.ts - int64(t))
				if st.spread != nil {
					st.spread[c.city].note(seq, int64(t), c.ts.ts)
				}
			} else {
				c.noTS++
			}
		}
	case bytes.HasPrefix(m, prefixInitial):
		seq, _ := numberAfter(m, keySeq)
		if c.ready {
			c.resyncs++
		} else {
			c.ready = true
			st.ready.Add(1)
		}
		c.last = seq
	}
}

// numberAfter parses the unsigned integer that follows the first key in m.
func numberAfter(m, key []byte) (uint64, bool) {
	i := bytes.Index(m, key)
	if i < 0 {
		return 0, false
	}
	var n uint64
	digits := 0
	for _, ch := range m[i+len(key):] {
		if ch < '0' || ch > '9' || digits == 19 {
			break
		}
		n = n*10 + uint64(ch-'0')
		digits++
	}
	return n, digits > 0
}
