package gateway

import "github.com/metrocast/metrocast/codec"

// Subscriptions. A subscription (sub) is a connection's cursor into one
// city's ring: the ring position of the last frame it was sent and the
// seq the client has seen. subscribe starts one from since (a replay from
// the ring, or, in cluster mode, from the stream) or from the city's
// state (initial_data); each loop keeps its subscribers per city
// (addSub, removeSub) for the fanout. Everything here runs on the
// connection's loop.

// sub is one subscription of a connection to a city.
type sub struct {
	conn   *conn
	city   *city
	cursor uint64 // ring pos of the last frame sent (or skipped by the filter)
	seq    uint64 // the client's seq of it: the seq the client has seen up to
	// replaying is set while frames older than the ring are fetched from
	// the stream for it (cluster mode): the fanout leaves it alone.
	replaying bool
	// fresh is set until the client has been sent the initial_data the
	// subscription starts from: a stream's event ids leave the city out
	// until then (loop.eventIDRest), and a client over its backlog is sent
	// it once it has read (loop.deliver).
	fresh  bool
	filter codec.Filter
	idx    int // in loop.subs[city]
	// presence: the subscription counts its user among the city's
	// watchers and gets presence events, sent up to presenceGen;
	// presenceSnap is a snapshot waiting for the subscribed answer.
	presence     bool
	presenceGen  uint64
	presenceSnap []byte
}

// started is a subscription being started: replayed from its cursor, or
// sent initial first, or (replay) served from the stream first.
type started struct {
	sb      *sub
	initial *frame
	replay  bool
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
		if cn.state != stateOpen {
			// An error for an earlier city closed it (MaxClientErrors):
			// a closing connection gains no subscription and sends
			// nothing after its close frame.
			break
		}
		if !cn.grant.Allows(name) {
			cn.forbid(name, "the token does not cover this city")
			continue
		}
		c, err := s.hub.city(name)
		if err != nil {
			cn.fail("too_many_cities", name, err.Error())
			continue
		}
		if sb := cn.findSub(c); sb != nil {
			if m.HasFilter {
				sb.filter = m.Filter
			}
			if m.Presence && !sb.presence {
				cn.watch(sb)
			}
			l.subbed = append(l.subbed, codec.SubscribedCity{City: name, Seq: sb.seq, Resumed: true})
			continue
		}
		if len(cn.subs) >= l.cfg.MaxSubscriptions {
			cn.fail("too_many_subscriptions", name, "subscription limit reached")
			continue
		}
		sb, err := cn.attach(c, m)
		if err != nil {
			cn.fail("too_many_cities", name, err.Error())
			continue
		}
		c = sb.city
		st := started{sb: sb}
		since, ok := m.Since[name]
		ok = ok && (m.Epoch == 0 || m.Epoch == s.epoch)
		switch pos, inRing := c.resume(since); {
		case ok && inRing && !s.bus.Ahead(since):
			sb.cursor, sb.seq = pos, since
		case ok && s.shared:
			// Older than the ring, or ahead of what this node has read:
			// the stream tells whether it is a seq it holds.
			sb.seq, sb.replaying, st.replay = since, true, true
		default:
			st.initial = c.initialFrame(s.epoch)
			sb.cursor, sb.seq, sb.fresh = st.initial.pos, st.initial.seq, true
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
			// Until the bus is done (Fetch.Done), the fanout skips it.
			if !s.bus.Fetch(&Fetch{City: st.sb.city.name, Since: st.sb.seq, sb: st.sb}) {
				l.finishReplay(st.sb, st.sb.seq, nil, false)
			}
			continue
		}
		if st.initial != nil {
			if l.room(cn) == 0 {
				// Over its backlog (a client that asks and does not
				// read: each subscribe would buffer a whole state):
				// the initial_data waits for room, as frames do
				// (deliver, from unstall or the fanout).
				continue
			}
			// Exactly the frame whose seq became the cursor: a newer one
			// would repeat frames the fanout is about to send.
			st.sb.fresh = false
			l.writeFrame(st.sb, st.initial)
		}
		if head := st.sb.city.ring.head.Load(); st.sb.cursor < head {
			l.deliver(st.sb, head)
		}
	}
	clear(l.started)
	for _, sb := range cn.subs {
		if sb.presenceSnap != nil && cn.state == stateOpen {
			l.put(cn, sb.presenceSnap)
		}
		sb.presenceSnap = nil
	}
}

// attach subscribes cn to c, or to the city that replaces it should c be
// dropped meanwhile: the subscriber is counted (loop.addSub) before the
// city is checked (see city.drop). Runs on the loop.
func (cn *conn) attach(c *city, m *codec.ClientMessage) (*sub, error) {
	l := cn.l
	for {
		sb := &sub{conn: cn, city: c, filter: m.Filter}
		cn.subs = append(cn.subs, sb)
		if m.Presence {
			cn.watch(sb)
		}
		// Register before reading the head: a frame published from now on
		// wakes this loop, one published before is below the head we read.
		l.addSub(sb)
		if !c.gone() {
			return sb, nil
		}
		// Dropped (idle) between the lookup and addSub.
		l.removeSub(sb)
		cn.subs = cn.subs[:len(cn.subs)-1]
		var err error
		if c, err = l.s.hub.city(c.name); err != nil {
			return nil, err
		}
	}
}

// watch makes sb a presence subscription: its user joins the city's
// watchers and its snapshot goes out after the subscribed answer. Runs on
// the loop.
func (cn *conn) watch(sb *sub) {
	sb.presence = true
	sb.presenceSnap, sb.presenceGen = sb.city.presence.join(sb.city.name, cn.grant.Sub())
	cn.flags |= flagPresence
	cn.l.s.presenceChanged(sb.city)
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

// addSub registers s with the loop and its city. Runs on the loop.
func (l *loop) addSub(s *sub) {
	list := l.subs[s.city]
	if len(list) == 0 {
		s.city.loopSubs[l.idx].Add(1)
	}
	s.city.subs.Add(1)
	l.stats.subscriptions.Add(1)
	if s.conn.flags&flagHTTP != 0 {
		l.stats.sse.subscriptions.Add(1)
	}
	s.idx = len(list)
	l.subs[s.city] = append(list, s)
}

// removeSub unregisters s. Runs on the loop, never inside a fanout of
// s.city (closes there are deferred to sweep).
func (l *loop) removeSub(s *sub) {
	if s.presence {
		s.city.presence.leave(s.conn.grant.Sub())
		l.s.presenceChanged(s.city)
	}
	if s.city.subs.Add(-1) == 0 {
		// Idle from now on, not from its last frame (hub.sweep).
		s.city.active.Store(mono())
	}
	l.stats.subscriptions.Add(-1)
	if s.conn.flags&flagHTTP != 0 {
		l.stats.sse.subscriptions.Add(-1)
	}
	list := l.subs[s.city]
	last := len(list) - 1
	list[s.idx] = list[last]
	list[s.idx].idx = s.idx
	list[last] = nil
	if last == 0 {
		delete(l.subs, s.city)
		s.city.loopSubs[l.idx].Add(-1)
		return
	}
	l.subs[s.city] = list[:last]
}
