// Package cluster is metrocast's cluster mode: a gateway.Bus on a NATS
// JetStream stream that every node shares.
//
// Every node publishes the ingest lines it accepts to the stream and feeds
// its rings from consumers of it (feed.go), so every node holds the same
// frames in the same order, and the seq a client sees is the stream
// sequence: the same for a frame on every node. Per city, seqs increase
// but are not contiguous (the stream numbers all cities' messages in one
// sequence): the bus says so (gateway.View.Shared), and the core's rings
// keep a contiguous position of their own beside each seq. A resume older
// than a ring is read from the stream (fetch.go); presence (presence.go)
// and revocations (revoke.go) are shared through key-value buckets.
//
// The package reaches the node only through the core's interface types
// (gateway.Bus, gateway.Node); the core knows nothing of NATS, and
// cmd/metrocast wires the two.
//
// Goroutines: nats.go's deliver the stream to the feeds' handlers, which
// apply it one message at a time under Bus.applyMu; each feed has a
// goroutine that remakes its consumer; up to maxConcurrentFetches
// goroutines fetch resumes; presence (share, follow) and revocations
// (follow) have theirs. Locks: Bus.applyMu (applying stream messages in
// order; it is held while the core stores one, see
// gateway/locksordering.txt), Bus.feedsMu (the feeds), Bus.readyMu (the
// cached readiness check), clusterPresence.mu (the cities whose watchers
// are to be shared); none is held while waiting for NATS but readyMu,
// held across a readiness check's stream info request so that one runs
// at a time.
package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway"
)

// subjectPrefix is the stream's subject space: one subject per city.
const subjectPrefix = "metrocast.city."

// Bounds of the cluster's round trips.
const (
	// natsSetupTimeout bounds the connection, the stream's creation and the
	// consumer's at start.
	natsSetupTimeout = 10 * time.Second
	// natsStartTimeout bounds how long a node starting retries creating the
	// stream and its buckets (startRetry).
	natsStartTimeout = time.Minute
	// natsPublishTimeout bounds the wait for JetStream's ack of one ingest
	// line; past it the producer is answered an error and may resend (with
	// the same id, the stream drops the copy if the first did arrive).
	// A producer's lines are acked asynchronously (ingest.MaxInFlight at once).
	natsPublishTimeout = 5 * time.Second
	// maxPendingAcks bounds the lines the node has published and JetStream
	// has not acked yet, all producers together (nats.go's default). Past
	// it, a producer's next line waits for a slot, outside its turn (see
	// pubWait.Send), and TCP backpressure slows the producer.
	maxPendingAcks = 4000
	// natsFetchTimeout bounds one resume fetch from the stream.
	natsFetchTimeout = 10 * time.Second
	// maxConcurrentFetches bounds the resume fetches running at once (each
	// holds its frames in memory until its loop writes them), and so the
	// goroutines they run on.
	maxConcurrentFetches = 16
	// maxQueuedFetches bounds the resumes waiting for a fetch; past it a
	// resuming subscriber gets initial_data at once.
	maxQueuedFetches = 1024
	// fetchBatch is how many messages one fetch request asks for.
	fetchBatch = 256
)

// errBusDown answers ingest while the node has no connection to NATS.
var errBusDown = &gateway.BusError{Msg: "cluster bus (NATS) unavailable: not stored; resend it later, to this or another node"}

// pubError words why JetStream gave no ack for a published line, saying
// "not stored" only where that is known.
func pubError(err error) *gateway.BusError {
	var api *jetstream.APIError
	switch {
	case errors.As(err, &api):
		return &gateway.BusError{Msg: "JetStream refused the line: not stored; resend it: " + err.Error()}
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return &gateway.BusError{Msg: "no JetStream server took the line (the stream has no leader): not stored; resend it"}
	case errors.Is(err, nats.ErrDisconnected):
		return &gateway.BusError{Maybe: true, Msg: "lost the connection to NATS before JetStream confirmed the line: it may or may not be stored; resend it with the same id (stored once)"}
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return &gateway.BusError{Maybe: true, Msg: fmt.Sprintf("JetStream did not confirm the line within %s: it may or may not be stored; resend it with the same id (stored once)", natsPublishTimeout)}
	}
	return &gateway.BusError{Maybe: true, Msg: "JetStream did not confirm the line (" + err.Error() + "): it may or may not be stored; resend it with the same id (stored once)"}
}

// The core's interfaces, checked at compile time.
var (
	_ gateway.Bus     = (*Bus)(nil)
	_ gateway.Pending = (*pubWait)(nil)
)

// Bus is a node's link to the JetStream stream: its gateway.Bus in
// cluster mode. Its methods are safe for concurrent use.
type Bus struct {
	cfg  Config
	node *gateway.Node
	// id names the node in the presence keys (and its logs).
	id     string
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	// presence shares the cities' watchers with the other nodes.
	presence *clusterPresence
	// revocations shares gateway.Server.Revoke's with the other nodes;
	// nil on a node without keys.
	revocations *clusterRevocations

	// replayFrom is where the node started reading the stream with a
	// look-back (Config.Replay); zero without one.
	replayFrom time.Time
	// feeds read the stream; stopFeeds stops them. Guarded by feedsMu.
	feedsMu   sync.Mutex
	feeds     []*feed
	stopFeeds func()
	// applyMu serialises apply: the feeds deliver the same messages.
	applyMu sync.Mutex
	// applied is the stream seq of the last message fed to the rings, and
	// appliedAt its stream time (Unix ns). Written under applyMu.
	applied   atomic.Uint64
	appliedAt atomic.Int64
	// The last readiness check (see Ready), made at readyAt.
	readyMu  sync.Mutex
	readyAt  time.Time
	notReady string              // why not ready; "" when ready
	fetches  chan struct{}       // slots of the fetch goroutines (Fetch)
	queued   chan *gateway.Fetch // resumes waiting for a fetch

	replays       atomic.Uint64 // resume requests served from the stream
	replayFails   atomic.Uint64 // resume requests the stream could not serve
	publishErrors atomic.Uint64 // ingest lines the stream did not ack
}

// subject is the stream subject of a city's frames.
func subject(city string) string { return subjectPrefix + city }

// redactURLs returns the comma-separated URLs with any password replaced,
// for logs and errors.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// New checks cfg (after WithDefaults) and returns a bus on the NATS
// servers of cfg.URL for one node (gateway.Config.Bus); it connects when
// the node starts (Open).
func New(cfg Config) (*Bus, error) {
	cfg = cfg.WithDefaults()
	if cfg.URL == "" {
		return nil, errors.New("nats_url is empty: no NATS servers to join")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Bus{cfg: cfg, fetches: make(chan struct{}, maxConcurrentFetches),
		queued: make(chan *gateway.Fetch, maxQueuedFetches)}, nil
}

// Open connects to NATS and creates the stream or brings its configuration
// in line with cfg. The epoch is the stream's creation time: seqs are the
// stream's, and start over only with a new stream. It runs before the node
// listens: every city ring is created knowing where the node's view of the
// stream begins.
func (cl *Bus) Open(n *gateway.Node) (gateway.View, error) {
	cfg := &cl.cfg
	cl.node = n
	log := n.Logger()
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	cl.id = hex.EncodeToString(id)
	opts := []nats.Option{
		nats.Name("metrocast"),
		nats.Timeout(natsSetupTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// A server that vanishes without closing its connections (a host
		// or network failure; a killed process is seen at once) is given
		// up after two unanswered pings, not nats.go's default four
		// minutes.
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(2),
		// A publish while disconnected fails at once instead of waiting in
		// a buffer: the producer is told, and resends.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("lost the connection to NATS: ingest answers errors until it is back", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			cl.reconnected()
		}),
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return gateway.View{}, fmt.Errorf("cannot connect to NATS at %s: %w", redactURLs(cfg.URL), err)
	}
	cl.nc = nc
	v, err := cl.setup()
	if err != nil {
		nc.Close()
		return gateway.View{}, err
	}
	return v, nil
}

// setup creates or updates the stream and takes its epoch and the seq the
// node's view starts after.
func (cl *Bus) setup() (gateway.View, error) {
	cfg := &cl.cfg
	js, err := jetstream.New(cl.nc, jetstream.WithPublishAsyncTimeout(natsPublishTimeout),
		jetstream.WithPublishAsyncMaxPending(maxPendingAcks))
	if err != nil {
		return gateway.View{}, fmt.Errorf("cannot use JetStream: %w", err)
	}
	cl.js = js
	err = cl.startRetry(func(ctx context.Context) (err error) {
		cl.stream, err = js.CreateOrUpdateStream(ctx, streamConfig(cfg))
		return err
	})
	if err != nil {
		return gateway.View{}, fmt.Errorf("cannot create or update stream %s: %w", cfg.Stream, err)
	}
	info := cl.stream.CachedInfo()
	// The rings are complete after the stream's last message as of now;
	// with a look-back they also hold older frames (for the cities' state),
	// but a resume from before here is served from the stream.
	last := info.State.LastSeq
	if cfg.Replay > 0 {
		cl.replayFrom = time.Now().Add(-cfg.Replay)
	} else {
		cl.applied.Store(last)
	}
	// Seqs are the stream's: they start over only if the stream is
	// recreated, and so does the epoch.
	return gateway.View{Epoch: uint64(info.Created.UnixMilli()), Floor: last, Shared: true, Node: cl.id}, nil
}

// streamConfig is the stream of the cluster's frames.
func streamConfig(cfg *Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "metrocast city frames",
		Subjects:    []string{subjectPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
		// The window in which a producer's resend (same id) is dropped.
		Duplicates: 2 * time.Minute,
		// Any replica answers a get, not only the leader: a feed that lost
		// deliveries takes them from the stream (Bus.fill) while the
		// server that holds the consumer, or leads, is gone.
		AllowDirect: true,
	}
}

// startRetry runs create (an idempotent create-or-update of the stream or
// a bucket, or a feed's consumer, each attempt within natsSetupTimeout) until it succeeds, fails
// for a reason that lasts, or natsStartTimeout has passed. NATS servers
// started with the node (a compose file, a fresh cluster) take seconds to
// elect the leaders that create streams, and meanwhile answer "temporarily
// unavailable" or nothing: a node started a second after three fresh
// servers exited with "context deadline exceeded" creating its presence
// bucket.
func (cl *Bus) startRetry(create func(context.Context) error) error {
	deadline := time.Now().Add(natsStartTimeout)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), natsSetupTimeout)
		err := create(ctx)
		cancel()
		pause := min(time.Duration(attempt)*250*time.Millisecond, 2*time.Second)
		if err == nil || !natsTransient(err) || time.Now().Add(pause).After(deadline) {
			return err
		}
		cl.node.Logger().Warn("waiting for JetStream", "attempt", attempt, "err", err)
		time.Sleep(pause)
	}
}

// natsTransient reports whether err, from a request to JetStream (creating
// the stream, a bucket or a consumer at start; a resume's direct get), may
// pass if made again: a time-out, no responder yet, the connection being
// made again (nats.go refuses requests at once meanwhile:
// ReconnectBufSize -1), or JetStream's 503 (temporarily unavailable: no
// leader yet).
func natsTransient(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.As(err, &api) && api.Code == 503
}

// Follow starts consuming the stream, and sharing presence and
// revocations. When it fails, Close (which Server.Start calls) stops what
// it started.
func (cl *Bus) Follow() error {
	if err := cl.startFeeds(); err != nil {
		return fmt.Errorf("cannot consume stream %s: %w", cl.cfg.Stream, err)
	}
	if err := cl.startPresence(); err != nil {
		return err
	}
	return cl.startRevocations()
}

// reconnected checks, after a reconnect to NATS, that the feeds lost no
// delivery on the connection that died. Runs on nats.go's callback
// goroutine.
func (cl *Bus) reconnected() {
	cl.feedsMu.Lock()
	defer cl.feedsMu.Unlock()
	for _, f := range cl.feeds {
		go f.verify()
	}
}

// Close withdraws the node's watchers, stops consuming and closes the
// connection.
func (cl *Bus) Close() {
	cl.revocations.close()
	cl.presence.close()
	cl.stopAllFeeds()
	cl.nc.Close()
}

// Ahead reports whether seq is beyond the last message the node has
// applied.
func (cl *Bus) Ahead(seq uint64) bool { return seq > cl.applied.Load() }

// Stats returns the counters of the metrocast_cluster_* series.
func (cl *Bus) Stats() gateway.BusStats {
	st := gateway.BusStats{
		Connected:      cl.nc.IsConnected(),
		Applied:        cl.applied.Load(),
		PublishErrors:  cl.publishErrors.Load(),
		Replays:        cl.replays.Load(),
		ReplayFailures: cl.replayFails.Load(),
	}
	if cl.presence != nil {
		st.PresenceErrors = cl.presence.errors.Load()
	}
	if cl.revocations != nil {
		st.RevocationErrors = cl.revocations.errors.Load()
	}
	return st
}

// Readiness (see Bus.Ready, and gateway.Server.serveReady: /readyz).
const (
	// readyMaxLag is how far (in stream time) the last message a node
	// applied may trail the stream's last for the node to be ready.
	readyMaxLag = time.Second
	// readyTimeout bounds the stream info request of a readiness check;
	// readyCache is how long its answer stands.
	readyTimeout = time.Second
	readyCache   = 500 * time.Millisecond
)

// Ready reports why the node cannot serve, "" if it can: it is connected
// to NATS, the stream has a leader to store lines (the leader is what
// answers the stream's info), and the node has applied the stream up to
// its last message, or to within readyMaxLag of it. One check runs at a
// time and its answer stands for readyCache.
func (cl *Bus) Ready() string {
	if !cl.nc.IsConnected() {
		return "cluster bus (NATS) unavailable"
	}
	cl.readyMu.Lock()
	defer cl.readyMu.Unlock()
	if time.Since(cl.readyAt) < readyCache {
		return cl.notReady
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	info, err := cl.stream.Info(ctx)
	switch {
	case err != nil:
		cl.notReady = "the stream cannot store lines: " + err.Error()
	case cl.applied.Load() < info.State.LastSeq && info.State.LastTime.UnixNano()-cl.appliedAt.Load() > int64(readyMaxLag):
		cl.notReady = fmt.Sprintf("catching up with the stream: applied seq %d of %d", cl.applied.Load(), info.State.LastSeq)
	default:
		cl.notReady = ""
	}
	cl.readyAt = time.Now()
	return cl.notReady
}

// Append checks one parsed ingest line (Node.Check: refused here rather
// than dropped by every node) and readies it for the stream; pubWait.Send
// publishes it. The line goes to the stream as it came: every node parses
// it again and builds the same frame. A producer id becomes the message
// id, so that a resent line is stored once (the ack of a copy names the
// first one's seq). Runs on the producer's goroutine, in its turn: it
// checks the line (locks, no waiting) and copies it.
func (cl *Bus) Append(in *codec.Ingest, line []byte) gateway.Appended {
	if err := cl.node.Check(in); err != nil {
		return gateway.Appended{Err: err}
	}
	// A copy: the client keeps the message to resend it while the stream
	// elects a leader, and the line's buffer is reused.
	m := &nats.Msg{Subject: subject(in.City), Data: bytes.Clone(line)}
	if in.ID != "" {
		m.Header = nats.Header{jetstream.MsgIDHeader: []string{in.ID}}
	}
	return gateway.Appended{Pending: &pubWait{cl: cl, msg: m}}
}

// pubWait is a line for the stream (a gateway.Pending): prepared, then sent
// without waiting for the ack, then acked (or failed). Owned by the
// producer's goroutine.
type pubWait struct {
	cl   *Bus
	msg  *nats.Msg // to send; nil once sent
	fut  jetstream.PubAckFuture
	done bool
	seq  uint64
	dup  bool // the stream already held the id: seq is the first copy's
	err  *gateway.BusError
}

// Send publishes the line. It may wait, and so runs outside the turn
// (ingest.Pending.Send): nats.go waits for a slot while the node has
// maxPendingAcks lines awaiting JetStream's ack (at most
// natsPublishTimeout, in which the oldest are acked or time out), and
// for the socket when its buffer to NATS is full. One producer's lines
// are sent in line order, on one connection: the stream stores them in
// that order. Then Poll tells the stream sequence once JetStream has
// stored it (or the error, at the latest after natsPublishTimeout; the
// line may then have been stored, and a resend with the same id is
// dropped).
func (p *pubWait) Send() {
	m := p.msg
	p.msg = nil
	cl := p.cl
	if !cl.nc.IsConnected() {
		p.fail(errBusDown)
		return
	}
	fut, err := cl.js.PublishMsgAsync(m, jetstream.WithStallWait(natsPublishTimeout))
	if err != nil {
		// Not sent: with no reconnect buffer, nats.go writes nothing
		// while it reconnects, and nothing after a stall that timed out.
		p.fail(&gateway.BusError{Msg: "cluster bus (NATS) did not take the line: not stored; resend it: " + err.Error()})
		return
	}
	p.fut = fut
}

// fail settles the line as not stored by the stream, for be.
func (p *pubWait) fail(be *gateway.BusError) {
	p.cl.publishErrors.Add(1)
	p.done, p.err = true, be
}

// Poll returns the line's stream sequence, or why it is not known to be
// stored, once JetStream has answered or given up (done); with wait it
// waits for that (at most natsPublishTimeout). A line not sent yet is not
// answered, wait or not.
func (p *pubWait) Poll(wait bool) (gateway.Appended, bool) {
	if !p.done {
		if p.msg != nil {
			return gateway.Appended{}, false
		}
		var (
			ack  *jetstream.PubAck
			perr error
		)
		if wait {
			select {
			case ack = <-p.fut.Ok():
			case perr = <-p.fut.Err():
			}
		} else {
			select {
			case ack = <-p.fut.Ok():
			case perr = <-p.fut.Err():
			default:
				return gateway.Appended{}, false
			}
		}
		if perr != nil {
			p.fail(pubError(perr))
		} else {
			p.done = true
			p.seq, p.dup = ack.Sequence, ack.Duplicate
		}
	}
	if p.err != nil {
		return gateway.Appended{Err: p.err}, true
	}
	return gateway.Appended{Seq: p.seq, Dup: p.dup}, true
}

// apply hands one stream message (data, stored under seq at ts) to the
// node (Node.Apply). Runs under applyMu, one message at a time in stream
// order: every node numbers and merges the same way.
func (cl *Bus) apply(data []byte, seq uint64, ts time.Time) {
	applied := cl.applied.Load()
	if seq <= applied {
		return // the other feed brought it first
	}
	if seq > applied+1 && applied > 0 {
		// The stream dropped messages this node had not read (retention
		// while it was cut off): the rings can no longer vouch for what
		// came before seq.
		cl.node.Lost(seq - 1)
	}
	cl.applied.Store(seq)
	cl.appliedAt.Store(ts.UnixNano())
	cl.node.Apply(data, seq, ts)
}

// PresenceChanged queues city, whose local watchers changed, to be shared.
func (cl *Bus) PresenceChanged(city string) { cl.presence.changed(city) }

// Revoke puts r in the revocation bucket, for every node (within
// natsPublishTimeout).
func (cl *Bus) Revoke(r gateway.Revocation) error {
	ctx, cancel := context.WithTimeout(context.Background(), natsPublishTimeout)
	defer cancel()
	return cl.revocations.put(ctx, r)
}

// Fetch serves a subscription whose since is older than its ring from the
// stream, off the event loop: the request waits in a queue of at most
// maxQueuedFetches for one of at most maxConcurrentFetches fetch
// goroutines, which hands the frames to the subscriber's loop (f.Done).
// With the queue full (a resume storm while NATS is slow) it refuses f,
// and the subscriber gets initial_data at once, as when the stream cannot
// serve it. Runs on the loop.
func (cl *Bus) Fetch(f *gateway.Fetch) bool {
	select {
	case cl.queued <- f:
	default:
		cl.replayFails.Add(1)
		return false
	}
	select {
	case cl.fetches <- struct{}{}:
		go cl.fetchQueued()
	default: // maxConcurrentFetches are running: one of them takes it
	}
	return true
}

// fetchQueued serves queued fetches while there are any, holding one of
// the fetches slots (taken by Fetch). It gives its slot back when the
// queue is empty, then looks once more: a request queued just before that,
// by a Fetch that found every slot taken, would otherwise wait for the
// next Fetch.
func (cl *Bus) fetchQueued() {
	for {
		select {
		case f := <-cl.queued:
			cl.serveFetch(f)
			continue
		default:
		}
		<-cl.fetches
		if len(cl.queued) == 0 {
			return
		}
		select {
		case cl.fetches <- struct{}{}:
		default:
			return // maxConcurrentFetches others are running
		}
	}
}

// serveFetch reads f's frames from the stream and hands them to its loop.
// Runs on a fetch goroutine.
func (cl *Bus) serveFetch(f *gateway.Fetch) {
	ok := cl.fetch(f.City, f.Since, f.Add)
	if ok {
		cl.replays.Add(1)
	} else {
		cl.replayFails.Add(1)
	}
	f.Done(ok)
}
