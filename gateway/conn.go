package gateway

import (
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/metrocast/metrocast/codec"
)

// Connection states.
const (
	stateHandshake uint8 = iota
	stateOpen
	stateClosing // close frame sent; the socket closes next
	stateClosed  // OnClose has run: never touch c again
)

// conn is one client connection. It is owned by its event loop: every
// field is read and written only there. It is kept small: tens of thousands
// of idle ones sit in memory.
type conn struct {
	c      gnet.Conn
	l      *loop
	idx    int // in l.conns
	state  uint8
	reason CloseReason
	errors uint8 // bad client messages so far

	scanned   int32 // bytes of the request head searched so far
	opened    int64 // Unix nanoseconds of the accept (handshake time-out)
	lastRead  int64 // Unix nanoseconds of the last inbound bytes
	lastPing  int64
	stalledAt int64 // when it went over the backlog limit; 0 if not

	subs []*sub
	// frag reassembles a fragmented message; nil between messages.
	frag []byte
}

// sub is one subscription of a connection to a city.
type sub struct {
	conn   *conn
	city   *city
	cursor uint64 // ring pos of the last frame sent (or skipped by the filter)
	seq    uint64 // the client's seq of it: the seq the client has seen up to
	// replaying is set while frames older than the ring are fetched from
	// the stream for it (cluster mode): the fanout leaves it alone.
	replaying bool
	filter    codec.Filter
	idx       int // in loop.subs[city]
}

// started is a subscription being started: replayed from its cursor, or
// sent initial first, or (replay) served from the stream first.
type started struct {
	sb      *sub
	initial *frame
	replay  bool
}

// traffic handles inbound bytes. Runs on the loop (OnTraffic).
func (cn *conn) traffic() gnet.Action {
	l := cn.l
	cn.lastRead = l.now
	if cn.state == stateHandshake {
		if act, done := cn.handshake(); !done {
			return act
		}
	}
	buf, _ := cn.c.Peek(-1)
	off := 0
	for off < len(buf) && cn.state == stateOpen {
		n := cn.frame(buf[off:])
		if n == 0 {
			break
		}
		off += n
	}
	switch cn.state {
	case stateClosed:
		return gnet.None
	case stateClosing:
		return gnet.Close
	}
	// gnet's Discard(n) with n <= 0 drops everything buffered: with a
	// partial frame (off == 0) the bytes must stay for the next pass.
	if off > 0 {
		_, _ = cn.c.Discard(off)
	}
	return gnet.None
}

// handshake answers the upgrade request once its head is complete. done
// reports that the connection is open and the bytes behind the request (if
// any) are frames to read.
func (cn *conn) handshake() (act gnet.Action, done bool) {
	l, s := cn.l, cn.l.s
	buf, _ := cn.c.Peek(-1)
	end := codec.RequestEnd(buf, int(cn.scanned))
	// A whole head that arrived in one read is held to the limit too, or
	// the 431 would depend on how the request was split into segments.
	if end > s.cfg.MaxHeaderBytes || end == 0 && len(buf) > s.cfg.MaxHeaderBytes {
		l.out = append(l.out[:0], "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"...)
		return cn.reject(), false
	}
	if end == 0 {
		cn.scanned = int32(len(buf))
		return gnet.None, false
	}
	up, resp, err := s.upgrader.Upgrade(buf[:end], l.out[:0])
	l.out = resp
	if err != nil {
		return cn.reject(), false
	}
	_, _ = cn.c.Write(resp)
	if cn.state == stateClosed {
		return gnet.None, false
	}
	_, _ = cn.c.Discard(end)
	cn.state = stateOpen
	cn.scanned = 0
	s.upgraded.Add(1)
	s.metrics.handshake.Update(seconds(l.now - cn.opened))
	if len(up.Cities) > 0 {
		cn.subscribe(&codec.ClientMessage{Type: codec.TypeSubscribe, Cities: up.Cities, Since: up.Since, Epoch: up.Epoch})
		if cn.state != stateOpen {
			return gnet.None, false
		}
	}
	return gnet.None, true
}

// reject writes the HTTP error in l.out and closes.
func (cn *conn) reject() gnet.Action {
	_, _ = cn.c.Write(cn.l.out)
	cn.state = stateClosing
	cn.reason = CloseHandshakeFailed
	return gnet.Close
}

// frame handles the first frame in b and returns its size, or 0 when b does
// not hold it whole yet or the connection is closing because of it.
func (cn *conn) frame(b []byte) int {
	l := cn.l
	h, hn, err := l.fp.Header(b)
	if err == nil && hn > 0 {
		err = codec.CheckClientHeader(h, cn.frag != nil, int64(len(cn.frag)), int64(l.cfg.MaxMessageBytes))
	}
	if err != nil {
		l.beginClose(cn, reasonOf(err), err.Error())
		return 0
	}
	total := hn + int(h.Length)
	if hn == 0 || len(b) < total {
		return 0
	}
	payload := b[hn:total]
	codec.Unmask(h, payload)

	switch h.OpCode {
	case ws.OpPing:
		l.send(cn, codec.AppendFrame(l.out[:0], ws.OpPong, payload))
	case ws.OpPong:
	case ws.OpClose:
		code, _, err := codec.ParseClose(payload)
		if err != nil {
			l.beginClose(cn, reasonOf(err), err.Error())
			return 0
		}
		// Echo the close (RFC 6455 §5.5.1); the peer started it.
		cn.state = stateClosing
		cn.reason = ClosePeer
		if code == ws.StatusNoStatusRcvd {
			l.send(cn, codec.AppendFrame(l.out[:0], ws.OpClose, nil))
		} else {
			l.send(cn, codec.AppendClose(l.out[:0], code, ""))
		}
	case ws.OpBinary:
		l.beginClose(cn, CloseUnsupportedData, "binary messages are not supported; send JSON text")
		return 0
	case ws.OpText, ws.OpContinuation:
		if !h.Fin || cn.frag != nil {
			if cn.frag == nil {
				cn.frag = make([]byte, 0, len(payload))
			}
			cn.frag = append(cn.frag, payload...)
			if !h.Fin {
				return total
			}
			payload, cn.frag = cn.frag, nil
		}
		if !utf8.Valid(payload) {
			l.beginClose(cn, CloseInvalidUTF8, "text message is not valid UTF-8")
			return 0
		}
		cn.message(payload)
	}
	return total
}

func reasonOf(err error) CloseReason {
	switch codec.CloseCode(err) {
	case ws.StatusMessageTooBig:
		return CloseTooBig
	case ws.StatusInvalidFramePayloadData:
		return CloseInvalidUTF8
	}
	return CloseProtocol
}

// message handles one client message. Runs on the loop.
func (cn *conn) message(b []byte) {
	m, err := codec.ParseClientMessage(b)
	if err != nil {
		code := "bad_request"
		switch {
		case errors.Is(err, codec.ErrBadJSON):
			code = "bad_json"
		case errors.Is(err, codec.ErrUnknownType):
			code = "unknown_type"
		}
		cn.fail(code, "", err.Error())
		return
	}
	switch m.Type {
	case codec.TypePing:
		_, _ = cn.c.Write(codec.PongFrame)
	case codec.TypeAuth, codec.TypeSubscribe:
		// Any token is accepted while no key is configured.
		if m.Type == codec.TypeAuth && len(m.Cities) == 0 && !m.HasFilter {
			l := cn.l
			l.send(cn, codec.AppendSubscribed(l.out[:0], "subscribed", l.s.epoch, nil))
			return
		}
		cn.subscribe(&m)
	case codec.TypeUnsubscribe:
		cn.unsubscribe(m.Cities)
	}
}

// fail sends an error message and counts it; past MaxClientErrors the
// connection closes with 1008.
func (cn *conn) fail(code, city, msg string) {
	l := cn.l
	l.send(cn, codec.AppendError(l.out[:0], code, city, msg))
	if cn.errors++; int(cn.errors) >= l.cfg.MaxClientErrors && cn.state == stateOpen {
		l.beginClose(cn, CloseAbuse, "too many bad messages")
	}
}

func (cn *conn) findSub(c *city) *sub {
	for _, s := range cn.subs {
		if s.city == c {
			return s
		}
	}
	return nil
}

// subscribe adds the message's cities (or, with no cities, applies its filter
// to the current subscriptions), answers with subscribed, then starts each
// new subscription: a replay from since when the ring still holds it, else
// an initial_data with the current state. Runs on the loop.
func (cn *conn) subscribe(m *codec.ClientMessage) {
	l, s := cn.l, cn.l.s
	if len(m.Cities) == 0 {
		if !m.HasFilter {
			cn.fail("bad_request", "", "subscribe needs cities or filters")
			return
		}
		for _, sb := range cn.subs {
			sb.filter = m.Filter
		}
	}
	l.subbed, l.started = l.subbed[:0], l.started[:0]
	for _, name := range m.Cities {
		c, err := s.hub.city(name)
		if err != nil {
			cn.fail("too_many_cities", name, err.Error())
			continue
		}
		if sb := cn.findSub(c); sb != nil {
			if m.HasFilter {
				sb.filter = m.Filter
			}
			l.subbed = append(l.subbed, codec.SubscribedCity{City: name, Seq: sb.seq, Resumed: true})
			continue
		}
		if len(cn.subs) >= l.cfg.MaxSubscriptions {
			cn.fail("too_many_subscriptions", name, "subscription limit reached")
			continue
		}
		sb := &sub{conn: cn, city: c, filter: m.Filter}
		cn.subs = append(cn.subs, sb)
		// Register before reading the head: a frame published from now on
		// wakes this loop, one published before is below the head we read.
		l.addSub(sb)
		st := started{sb: sb}
		since, ok := m.Since[name]
		ok = ok && (m.Epoch == 0 || m.Epoch == s.epoch)
		switch pos, inRing := c.resume(since); {
		case ok && inRing && !s.cluster.ahead(since):
			sb.cursor, sb.seq = pos, since
		case ok && s.cluster != nil:
			// Older than the ring, or ahead of what this node has read:
			// the stream tells whether it is a seq it holds.
			sb.seq, sb.replaying, st.replay = since, true, true
		default:
			st.initial = c.initialFrame(s.epoch)
			sb.cursor, sb.seq = st.initial.pos, st.initial.seq
		}
		l.subbed = append(l.subbed, codec.SubscribedCity{City: name, Seq: sb.seq, Resumed: st.initial == nil})
		l.started = append(l.started, st)
	}
	if cn.state != stateOpen {
		return
	}
	l.send(cn, codec.AppendSubscribed(l.out[:0], "subscribed", s.epoch, l.subbed))
	for _, st := range l.started {
		if cn.state != stateOpen {
			break
		}
		if st.replay {
			s.cluster.replay(st.sb, st.sb.seq)
			continue
		}
		if st.initial != nil {
			// Exactly the frame whose seq became the cursor: a newer one
			// would repeat frames the fanout is about to send.
			_, _ = cn.c.Write(st.initial.b)
		}
		if head := st.sb.city.ring.head.Load(); st.sb.cursor < head {
			l.deliver(st.sb, head)
		}
	}
	clear(l.started)
}

// unsubscribe drops the named cities. Runs on the loop.
func (cn *conn) unsubscribe(names []string) {
	l := cn.l
	l.subbed = l.subbed[:0]
	for _, name := range names {
		c := l.s.hub.lookup(name)
		if c == nil {
			continue
		}
		for i, sb := range cn.subs {
			if sb.city == c {
				l.removeSub(sb)
				cn.subs = append(cn.subs[:i], cn.subs[i+1:]...)
				l.subbed = append(l.subbed, codec.SubscribedCity{City: name, Seq: sb.seq})
				break
			}
		}
	}
	l.send(cn, codec.AppendSubscribed(l.out[:0], "unsubscribed", l.s.epoch, l.subbed))
}
