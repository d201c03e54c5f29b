package gateway

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metrocast/metrocast/codec"
)

// city is one city's stream: its ring, its merged state and the event loops
// that hold its subscribers.
type city struct {
	name string
	ring *ring

	// Per event loop (indexed by loop.idx): how many of the loop's
	// subscribers watch this city (written by the loop, read by publishers)
	// and whether the loop has been told about new frames.
	loopSubs []atomic.Int32
	dirty    []atomic.Bool

	mu sync.Mutex // guards everything below and appends to ring
	// State: snapshot + merged data_update members.
	state   map[string][]byte
	keys    []string // sorted member names of state
	stateTS int64
	// recent alerts messages, oldest first, at most keepAlerts.
	recent     []codec.RecentAlert
	keepAlerts int
	// initial caches the initial_data frame for the current head.
	initial *frame
	// buf is a scratch buffer for building the state object.
	buf []byte
}

func newCity(name string, cfg *Config, loops int) *city {
	return &city{
		name:       name,
		ring:       newRing(cfg.RingSize, cfg.RingBytes),
		loopSubs:   make([]atomic.Int32, loops),
		dirty:      make([]atomic.Bool, loops),
		keepAlerts: cfg.RecentAlerts,
	}
}

// publish encodes in once, stores it in the ring, folds it into the state
// and returns its frame. Safe for concurrent use.
func (c *city) publish(in *codec.Ingest, accepted time.Time) (*frame, error) {
	ts := in.Timestamp
	if ts == 0 {
		ts = accepted.UnixMilli()
	}
	var members map[string][]byte
	if in.Kind != codec.KindAlerts {
		// Parse outside the lock: it is the costly part.
		m, err := codec.ParseObject(in.Data)
		if err != nil {
			return nil, err
		}
		members = make(map[string][]byte, len(m))
		for k, v := range m {
			members[k] = v
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	seq := c.ring.head.Load() + 1
	f := &frame{seq: seq, accepted: accepted.UnixNano(), kind: in.Kind, sev: in.Severity}
	size := 96 + len(c.name) + len(in.Data) + len(in.Alerts)
	switch in.Kind {
	case codec.KindDataUpdate:
		f.b = codec.AppendDataUpdate(make([]byte, 0, size), c.name, seq, ts, in.Data)
		c.mergeLocked(members, false)
	case codec.KindSnapshot:
		f.b = codec.AppendInitialData(make([]byte, 0, size), &codec.InitialData{
			City: c.name, Seq: seq, TS: ts, Resumed: true, Data: in.Data})
		c.mergeLocked(members, true)
	case codec.KindAlerts:
		f.b = codec.AppendAlerts(make([]byte, 0, size), c.name, seq, ts, in.Alerts)
		// The alerts array sits at the end of the frame, before the closing
		// brace: keep a view of it rather than a copy.
		end := len(f.b) - 1
		c.recent = append(c.recent, codec.RecentAlert{Seq: seq, TS: ts, Alerts: f.b[end-len(in.Alerts) : end]})
		if len(c.recent) > c.keepAlerts {
			c.recent = slices.Delete(c.recent, 0, len(c.recent)-c.keepAlerts)
		}
	}
	if in.Kind != codec.KindAlerts {
		c.stateTS = ts
	}
	c.initial = nil
	c.ring.pushLocked(f)
	return f, nil
}

// mergeLocked folds members into the state ({...prev, ...update}), or
// replaces the state with them. The values alias the ingest line, so they
// are copied. The city lock is held on entry.
func (c *city) mergeLocked(members map[string][]byte, replace bool) {
	if replace || c.state == nil {
		c.state = make(map[string][]byte, len(members))
		c.keys = c.keys[:0]
	}
	for k, v := range members {
		if _, ok := c.state[k]; !ok {
			c.keys = append(c.keys, k)
		}
		c.state[k] = append([]byte(nil), v...)
	}
	slices.Sort(c.keys)
}

// initialFrame returns an initial_data frame (resumed: false) with the
// current state, as of the ring's head. It is built at most once per head
// and shared by every subscriber that needs it. Safe for concurrent use.
func (c *city) initialFrame(epoch uint64) *frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.initial != nil {
		return c.initial
	}
	c.buf = codec.AppendObject(c.buf[:0], c.keys, c.state)
	d := codec.InitialData{
		City:   c.name,
		Seq:    c.ring.head.Load(),
		Epoch:  epoch,
		TS:     c.stateTS,
		Data:   c.buf,
		Recent: c.recent,
	}
	c.initial = &frame{seq: d.Seq, kind: codec.KindSnapshot, b: codec.AppendInitialData(nil, &d)}
	return c.initial
}
