package gateway

import (
	"github.com/metrocast/metrocast/codec"
)

// history answers GET /history?city=…&since=SEQ[&epoch=E] (checkRequest has
// admitted it): the frames the node's ring holds after since, oldest first,
// as NDJSON (each line the JSON a WebSocket client got), at most
// MaxBacklogBytes of them (at least one) — a client that wants more asks
// again from the last seq it got, until Metrocast-Head. When the ring no
// longer holds every frame after since (or since is from another epoch, or
// ahead of the node), the answer is 410 with the oldest and newest seq
// held. The response is built in l.out. Runs on the loop.
func (l *loop) history(req *codec.Request, cors string) []byte {
	s := l.s
	l.stats.history.Add(1)
	since := req.Since[req.City]
	c := s.hub.lookup(req.City)
	if c == nil {
		// A city the node never saw holds nothing, so only since 0 is
		// complete. Looking it up makes nothing: a request cannot fill
		// the node with cities.
		if since == 0 && (req.Epoch == 0 || req.Epoch == s.epoch) {
			return codec.AppendHistoryHead(l.out[:0], cors, s.epoch, 0, 0)
		}
		return codec.AppendHistoryGone(l.out[:0], cors, req.City, s.epoch, 0, 0)
	}
	pos, ok := c.resume(since)
	oldest, head := c.held()
	if !ok || (req.Epoch != 0 && req.Epoch != s.epoch) {
		return codec.AppendHistoryGone(l.out[:0], cors, req.City, s.epoch, oldest, head)
	}
	body := l.http.ev[:0]
	for end := c.ring.head.Load(); pos < end && len(body) < l.cfg.MaxBacklogBytes; {
		f := c.ring.get(pos + 1)
		if f == nil {
			break // lapped meanwhile: what came before is whole
		}
		pos = f.pos
		_, msg := codec.ServerPayload(f.b)
		body = codec.AppendJSONLine(body, msg)
	}
	out := codec.AppendHistoryHead(l.out[:0], cors, s.epoch, head, len(body))
	out = append(out, body...)
	if cap(body) > maxLoopCache {
		body = nil // a one-off: do not keep it
	}
	l.http.ev = body
	return out
}

// held returns the seqs of the oldest and the newest frame the ring holds
// (0, 0 when it holds none). Safe for concurrent use.
func (c *city) held() (oldest, newest uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	head, tail := c.ring.head.Load(), c.ring.tail.Load()
	if head < tail {
		return 0, 0
	}
	return c.ring.get(tail).seq, c.ring.get(head).seq
}
