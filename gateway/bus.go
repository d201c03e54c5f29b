package gateway

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
	"github.com/metrocast/metrocast/gateway/ingest"
)

// The bus. Every ingest line a node accepts goes through its Bus before it
// reaches a ring: the bus stores the line in its log and numbers it (its
// seq), and delivers the log to the node in order (Node.Apply), which
// appends each message to its city's ring and fans it out. A single node's
// bus (local, below) is its rings: it numbers each city's lines itself and
// stores them at once. A cluster's (package gateway/cluster, on NATS
// JetStream) is one log shared by every node, so that every node holds the
// same frames under the same seqs and a client resumes on any of them.
//
// What the core requires of a bus's seqs:
//
//   - Per city, Apply is called in increasing seq order, the same order on
//     every node that shares the log, and a message has the same seq on
//     each of them. A seq is never 0.
//   - Seqs may skip: a log of every city numbers them all in one sequence
//     (View.Shared). The rings keep a contiguous position of their own
//     beside each frame's seq (see frame), so the fanout does not care.
//   - A seq is never reused within an epoch (View.Epoch): a log that starts
//     over takes a new one, and clients then start afresh.
//   - Each ring is complete after View.Floor: a resume from at or before it
//     is served by Fetch. Messages from before it may be applied all the
//     same (a replay of the log, for the cities' state).
//   - The log may lose messages the node has not read (retention): the bus
//     says so (Node.Lost) before it applies what follows them.
//
// A node's Bus is Config.Bus (cmd/metrocast makes cluster mode's from the
// nats_* keys), or its own local one when that is nil. Server.Start and
// Drain use it as: Open, then Follow, then the other methods, then Close
// once (after a successful Open, whether Follow succeeded or not). One
// Bus serves one node. Its methods are safe for concurrent use.
type Bus interface {
	// Open joins the log for n and tells where n's view of it begins.
	// Nothing is delivered to n yet: the caller (Server.Start) sets its
	// rings up from the View first. When it fails it leaves nothing open.
	Open(n *Node) (View, error)
	// Follow starts delivering the log to the node, in order, from where
	// Open said (or from where the bus replays it from), and sharing
	// presence and revocations with the other nodes, until Close. When it
	// fails it stops what it started.
	Follow() error
	// Append takes one ingest line, parsed (in) and as it came (line, valid
	// only during the call), that the producer may publish. It runs on the
	// producer's goroutine, in its turn, and must not wait: a bus that
	// stores at once returns the outcome; one that waits for its log
	// returns a Pending (Appended.Pending). in is the caller's, and only
	// read during the call.
	Append(in *codec.Ingest, line []byte) Appended
	// Ahead reports whether seq is beyond the last message the node has
	// applied: a client coming from a node further ahead, or a seq the log
	// never had. Always false on a bus whose seqs are not Shared.
	Ahead(seq uint64) bool
	// Fetch serves f, a resume older than its ring, from the log: it calls
	// f.Add with the city's messages after f.Since in order, then f.Done,
	// off the caller's goroutine (an event loop: it must not wait). It
	// returns false, without calling f's methods, when it cannot take f
	// now (too many resumes wait already): the subscriber starts afresh.
	// Called only on a bus whose seqs are Shared.
	Fetch(f *Fetch) bool
	// PresenceChanged tells the bus that the node's own watchers of city
	// changed (Node.LocalPresence has the new ones). It must not wait.
	PresenceChanged(city string)
	// Revoke shares a revocation the node put in force with the other
	// nodes, which apply it (Node.Revoke). It waits for the log, for a
	// bounded time. An error: it holds on this node only.
	Revoke(r Revocation) error
	// Ready reports why the node cannot serve new clients for a fault of
	// the bus ("" if it can), for /readyz: cut off from the log, the log
	// cannot store lines, or the node is far behind it.
	Ready() string
	// Stats returns the bus's counters, for metrics.
	Stats() BusStats
	// Close stops delivering and sharing, withdraws the node's presence,
	// and leaves the log. Nothing is applied after it returns.
	Close()
}

// View is where a node's view of its bus's log begins, as Bus.Open tells.
type View struct {
	// Epoch numbers the log's life (see Server.Epoch); 0: the node's own
	// (New's time), for a log that lives as long as the node.
	Epoch uint64
	// Floor is the seq after which every ring is complete (ring.floor).
	Floor uint64
	// Shared: the log is shared with other nodes and numbers every city's
	// messages in one sequence. A city's seqs then skip, a seq above a
	// ring's head may be a message the node has not read yet (Bus.Ahead),
	// and a resume older than a ring is fetched from the log (Bus.Fetch).
	Shared bool
	// Node names this node among those sharing the log, for its logs.
	Node string
}

// The bus takes ingest's lines: its Append is ingest.Store's, and
// answers in ingest's terms.
type (
	Appended = ingest.Appended
	Pending  = ingest.Pending
	BusError = ingest.BusError
)

// BusStats are a bus's counters, the metrocast_cluster_* series.
type BusStats struct {
	Connected        bool   // to the log
	Applied          uint64 // seq of the last message applied
	PublishErrors    uint64 // lines the log did not take (BusError)
	Replays          uint64 // resumes served from the log
	ReplayFailures   uint64 // resumes the log could not serve
	PresenceErrors   uint64 // presence shares not put, or not understood
	RevocationErrors uint64 // revocations not shared, or not understood
}

// Revocation is a timed revocation as the bus shares it: auth's own, so
// that what the bus carries is what the node puts in force.
type Revocation = auth.Revocation

// Node is the core as its bus sees it: what the bus calls to deliver the
// log, and to share presence and revocations. Its methods are safe for
// concurrent use.
type Node struct{ s *Server }

// Logger is the node's logger.
func (n *Node) Logger() *slog.Logger { return n.s.cfg.Logger }

// Warn logs a warning of the bus, throttled as the node's bus warnings
// are: at most one per limit.WarnEvery, with a count of those held back.
func (n *Node) Warn(msg string, args ...any) { n.s.warn(&n.s.warnBus, msg, args...) }

// Check reports why in, a line the producer may publish, cannot be
// stored, before it goes to the log: the node cannot hold a new city, or
// the city's state would grow past its bound. The nodes apply whatever the
// log holds; a line refused here is refused before its ack.
func (n *Node) Check(in *codec.Ingest) error {
	c, err := n.s.hub.city(in.City)
	if err != nil {
		return err
	}
	if !c.fits(in) {
		return errStateFull
	}
	return nil
}

// Apply appends one message of the log (data, an ingest line as it came,
// stored under seq at ts) to its city's ring and wakes the loops that
// follow the city. The bus calls it in log order, one message at a time.
// A message that is not a valid ingest line (written by an older or a
// buggy node, or by hand) is skipped and counted
// (metrocast_cluster_poison_total), never retried: every node skips it.
func (n *Node) Apply(data []byte, seq uint64, ts time.Time) {
	s := n.s
	in, err := codec.ParseIngest(data)
	if err != nil {
		s.poison.Add(1)
		s.warn(&s.warnPoison, "skipped a stream message that is not a valid ingest line", "seq", seq, "err", err)
		return
	}
	if in.Timestamp == 0 {
		// The log's time, not this node's: the same frame everywhere.
		in.Timestamp = ts.UnixMilli()
	}
	for {
		c, err := s.hub.city(in.City)
		if err != nil {
			s.warn(&s.warnBus, "dropped a stream message", "city", in.City, "seq", seq, "err", err)
			return
		}
		if _, err := c.appendSeq(&in, seq, time.Now()); errors.Is(err, errCityGone) {
			continue // dropped just now: a new one takes the frame
		}
		s.wakeCity(c)
		s.hub.fit()
		return
	}
}

// Lost tells the node that the log dropped messages up to seq through
// that the node had not read: its rings can no longer vouch for what came
// before.
func (n *Node) Lost(through uint64) { n.s.hub.raiseFloor(through) }

// Secure reports whether the node checks tokens: a node without keys has
// nothing to revoke.
func (n *Node) Secure() bool { return n.s.auth != nil }

// Revoke puts rs in force on this node, in order (revocations shared by
// the other nodes), and has the loops check their connections. Each must
// be Valid.
func (n *Node) Revoke(rs ...Revocation) error {
	if err := n.s.auth.Revoke(rs...); err != nil {
		return err
	}
	n.s.housekeepAll()
	return nil
}

// LocalPresence returns this node's own watchers of city as a presence
// share (codec.AppendPresenceShare), nil when it has none.
func (n *Node) LocalPresence(city string) []byte {
	c := n.s.hub.lookup(city)
	if c == nil {
		return nil
	}
	return c.presence.localShare()
}

// SharePresence counts another node's watchers of city, its presence
// share (codec.AppendPresenceShare) as of seen, in place of that node's
// last share. The same share again (a refresh) only renews it; a new one
// is parsed (an error: the share is ignored) and creates the city if the
// node has none.
func (n *Node) SharePresence(city, node string, share []byte, seen time.Time) error {
	sum := shareSum(share)
	if c := n.s.hub.lookup(city); c != nil && c.presence.renew(node, sum, seen) {
		return nil
	}
	users, more, err := codec.ParsePresenceShare(share)
	if err != nil {
		return err
	}
	c, err := n.s.hub.city(city)
	if err != nil {
		return err
	}
	if c.presence.setRemote(node, users, more, sum, seen) {
		n.s.presenceChanged(c)
	}
	return nil
}

// DropPresence forgets another node's watchers of city; false if the node
// has no such city.
func (n *Node) DropPresence(city, node string) bool {
	c := n.s.hub.lookup(city)
	if c == nil {
		return false
	}
	if c.presence.setRemote(node, nil, 0, 0, time.Now()) {
		n.s.presenceChanged(c)
	}
	return true
}

// ExpirePresence forgets the other nodes' shares of city not refreshed
// since before; left tells whether any other node's share of city
// remains.
func (n *Node) ExpirePresence(city string, before time.Time) (left bool) {
	c := n.s.hub.lookup(city)
	if c == nil {
		return false
	}
	_, changed, left := c.presence.expire(before)
	if changed {
		n.s.presenceChanged(c)
	}
	return left
}

// Fetch is a resume a bus serves from its log (Bus.Fetch): the messages of
// City after Since, which the subscriber's ring no longer holds (or this
// node has not read yet). Its methods are called from one goroutine at a
// time.
type Fetch struct {
	City  string
	Since uint64

	sb     *sub
	floor  uint64 // the city's ring floor, read at the first Add
	began  bool
	frames []*frame
}

// Add takes the next message of the city from the log (data, stored under
// seq at ts). It returns how many frames the resume holds, and reached:
// the ring holds every frame after this one, so the bus stops here. A
// message that is not a valid ingest line is skipped (Apply skips it too).
func (f *Fetch) Add(seq uint64, ts time.Time, data []byte) (held int, reached bool) {
	c := f.sb.city
	if !f.began {
		f.floor, f.began = c.floorSeq(), true
	}
	in, err := codec.ParseIngest(data)
	if err != nil {
		return len(f.frames), false
	}
	f.frames = append(f.frames, encodeFrame(c.name, c.epoch, &in, seq, ts))
	return len(f.frames), seq >= f.floor
}

// Done ends the fetch: ok, the frames added are the city's after Since,
// up to where the ring holds the rest or to the log's end; not ok, the log
// could not serve it (it no longer holds Since, or never did, or it
// failed), and the subscriber starts afresh. The subscriber's loop takes
// it from there (loop.finishReplay).
func (f *Fetch) Done(ok bool) {
	l, frames := f.sb.conn.l, f.frames
	if !ok {
		frames = nil
	}
	_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		l.finishReplay(f.sb, f.Since, frames, ok)
		return nil
	}))
}

// local is a single node's bus: the rings are the log. Append numbers
// each city's lines 1, 2, 3… (city.append: one more than the city's last)
// and stores them at once, once per id within dedup.go's window, so that
// a producer that resends behaves as with a cluster's log. There is
// nothing to fetch or share, and nothing to wait for.
type local struct {
	s   *Server
	ids *recentIDs
}

func newLocal(s *Server) *local { return &local{s: s, ids: newRecentIDs()} }

func (b *local) Open(*Node) (View, error) { return View{}, nil }
func (b *local) Follow() error            { return nil }
func (b *local) Ahead(uint64) bool        { return false }
func (b *local) Fetch(*Fetch) bool        { return false }
func (b *local) PresenceChanged(string)   {}
func (b *local) Revoke(Revocation) error  { return nil }
func (b *local) Ready() string            { return "" }
func (b *local) Stats() BusStats          { return BusStats{} }
func (b *local) Close()                   {}

func (b *local) Append(in *codec.Ingest, _ []byte) Appended {
	store := func() (uint64, error) { return b.s.publish(in, time.Now()) }
	var a Appended
	if in.ID != "" {
		a.Seq, a.Dup, a.Err = b.ids.once(in.ID, mono(), store)
	} else {
		a.Seq, a.Err = store()
	}
	return a
}
