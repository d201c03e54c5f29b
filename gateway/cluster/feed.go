package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Feeds. A node reads the stream through feeds: pull consumers (one
// replica, in memory, no acks) that start after the last message the node
// applied. One feed would do, but a consumer lives on one NATS server, and
// when that server dies, making a new consumer waits for JetStream's meta
// leader: for an election (4 to 9 s in nats-server) when the dead server
// led the meta group. nats.go's ordered consumer also makes a new consumer
// after every reconnect, and notices a dead server only after two missed
// 5 s heartbeats: losing one server of three stalled every node for 10 to
// 12 s. So on a replicated stream a node keeps two feeds, on two servers,
// and applies each message from whichever feed brings it first (the other
// copy is dropped by its seq): losing any one server leaves every node a
// live feed, and the dead feed is remade in the background. The cost is
// that each message crosses the network twice to each node.
//
// A feed is dead when its server misses two heartbeats or deletes the
// consumer. A reconnect does not make a new consumer (nor wait for the
// meta leader): the pull resumes on the new connection. Deliveries made to
// the connection that died are lost, though: the consumer's count of
// deliveries skips, or, after a reconnect, its count is ahead of what the
// node received. Those messages, unless the other feed brought them, are
// read from the stream itself (Bus.fill), which any live replica
// serves.

// Bounds of the feeds.
const (
	// feedHeartbeat is how often a consumer's server says it is alive while
	// it has nothing to deliver; two missed, and the feed is remade. nats.go
	// takes no less than 500 ms.
	feedHeartbeat = 500 * time.Millisecond
	// feedInactive is how long the server keeps a consumer nobody pulls
	// from: a node that crashed leaves none behind for longer.
	feedInactive = time.Minute
	// feedCreateTimeout bounds one attempt to make a consumer; a failed
	// attempt is retried, with a pause of up to feedRetryMax.
	feedCreateTimeout = 2 * time.Second
	feedRetryMax      = 2 * time.Second
	// feedPlacements bounds the consumers made to place a node's feeds on
	// different servers (JetStream places a consumer on a random replica of
	// the stream): with 3 replicas, 4 tries left a node's two feeds on one
	// server once in ~80 (a fresh-clone CI run lost both with it), 8 once
	// in ~6,500. A try costs a consumer made and deleted.
	feedPlacements = 8
	// fillMax bounds the messages a feed that lost deliveries reads from
	// the stream; past it the feed is remade instead. fillMisses bounds the
	// "not found" answers it waits out (fillPause apart) from a replica
	// that has not stored the message yet.
	fillMax    = 1024
	fillMisses = 10
	fillPause  = 20 * time.Millisecond
)

// feed is one consumer of the stream, remade when it dies. Its run
// goroutine owns the remaking; the handlers of its consumer apply messages.
type feed struct {
	cl   *Bus
	cur  atomic.Pointer[feedSub] // the consumer in use
	kick chan *feedSub           // cap 1: this consumer is dead, make another
	done chan struct{}           // closed when run returns
}

// feedSub is one consumer of a feed, from its creation to its replacement.
type feedSub struct {
	cons jetstream.Consumer
	cc   jetstream.ConsumeContext
	host string // the NATS server that holds the consumer ("" if unknown)
	// dseq is the consumer's delivery count of the last message received:
	// deliveries are numbered 1, 2, … with no gap unless one was lost.
	// Written by the consumer's handler only.
	dseq atomic.Uint64
}

// startFeeds makes the node's feeds (two on a replicated stream), which
// begin after the last message applied, and starts remaking them when
// they die, until stopFeeds. Each consumer is made as the stream is, with
// startRetry: a stream just created on fresh servers may not take
// consumers for seconds (one attempt of feedCreateTimeout failed a node's
// start now and then in TestClusterResumeLoseOneNATSServer).
func (cl *Bus) startFeeds() error {
	n := 1
	if cl.cfg.Replicas > 1 {
		n = 2
	}
	feeds := make([]*feed, n)
	for i := range feeds {
		feeds[i] = &feed{cl: cl, kick: make(chan *feedSub, 1), done: make(chan struct{})}
	}
	for _, f := range feeds {
		var s *feedSub
		err := cl.startRetry(func(ctx context.Context) (err error) {
			s, err = f.create(ctx, feeds)
			return err
		})
		if err != nil {
			for _, f := range feeds {
				if s := f.cur.Load(); s != nil {
					s.stop(cl, true)
				}
			}
			return err
		}
		f.cur.Store(s)
	}
	rctx, cancel := context.WithCancel(context.Background())
	for _, f := range feeds {
		go f.run(rctx, feeds)
	}
	cl.feedsMu.Lock()
	cl.feeds = feeds
	cl.stopFeeds = func() {
		cancel()
		for _, f := range feeds {
			<-f.done
		}
	}
	cl.feedsMu.Unlock()
	return nil
}

// stopAllFeeds stops the feeds and waits for them: nothing is applied
// after it returns.
func (cl *Bus) stopAllFeeds() {
	cl.feedsMu.Lock()
	stop := cl.stopFeeds
	cl.feeds, cl.stopFeeds = nil, nil
	cl.feedsMu.Unlock()
	if stop != nil {
		stop()
	}
}

// startAt sets where a new consumer begins: after the last message
// applied, or, on a node replaying the stream that has applied nothing
// yet, at the replay's start time.
func (cl *Bus) startAt(cfg *jetstream.ConsumerConfig) {
	applied := cl.applied.Load()
	if applied == 0 && !cl.replayFrom.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &cl.replayFrom
		return
	}
	cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, applied+1
}

// create makes a consumer for f and starts pulling from it. When feeds
// (those already made, f possibly among them) hold a consumer on the
// server JetStream picked, it tries again for another, a few times.
func (f *feed) create(ctx context.Context, feeds []*feed) (*feedSub, error) {
	cfg := jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: feedInactive,
	}
	f.cl.startAt(&cfg)
	taken := map[string]bool{}
	for _, o := range feeds {
		if s := o.cur.Load(); o != f && s != nil && s.host != "" {
			taken[s.host] = true
		}
	}
	var s *feedSub
	for try := 1; ; try++ {
		cctx, cancel := context.WithTimeout(ctx, feedCreateTimeout)
		cons, err := f.cl.stream.CreateConsumer(cctx, cfg)
		cancel()
		if err != nil {
			return nil, err
		}
		s = &feedSub{cons: cons}
		if ci := cons.CachedInfo().Cluster; ci != nil {
			s.host = ci.Leader
		}
		if !taken[s.host] || try == feedPlacements {
			break
		}
		f.cl.deleteConsumer(cons, false)
	}
	var err error
	s.cc, err = s.cons.Consume(func(m jetstream.Msg) { f.handle(s, m) },
		jetstream.PullHeartbeat(feedHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { f.failed(s, err) }))
	if err != nil {
		f.cl.deleteConsumer(s.cons, false)
		return nil, err
	}
	return s, nil
}

// deleteConsumer deletes a consumer the node no longer reads, in the
// background unless wait; one the server cannot delete now goes after
// feedInactive.
func (cl *Bus) deleteConsumer(cons jetstream.Consumer, wait bool) {
	name := cons.CachedInfo().Name
	del := func() {
		ctx, cancel := context.WithTimeout(context.Background(), feedCreateTimeout)
		defer cancel()
		_ = cl.stream.DeleteConsumer(ctx, name)
	}
	if wait {
		del()
		return
	}
	go del()
}

// stop stops pulling from s and deletes its consumer; with wait, before
// it returns (at most feedCreateTimeout).
func (s *feedSub) stop(cl *Bus, wait bool) {
	s.cc.Stop()
	<-s.cc.Closed()
	cl.deleteConsumer(s.cons, wait)
}

// run remakes f's consumer each time it dies, until ctx ends. Runs on its
// own goroutine.
func (f *feed) run(ctx context.Context, feeds []*feed) {
	defer close(f.done)
	for {
		var dead *feedSub
		select {
		case <-ctx.Done():
			f.cur.Load().stop(f.cl, true)
			return
		case dead = <-f.kick:
		}
		if dead != f.cur.Load() {
			continue // a late word about a consumer replaced already
		}
		dead.stop(f.cl, false)
		for attempt := 1; ; attempt++ {
			s, err := f.create(ctx, feeds)
			if err == nil {
				f.cur.Store(s)
				f.cl.node.Logger().Info("made a new stream consumer", "server", s.host, "attempts", attempt)
				break
			}
			if ctx.Err() != nil {
				f.cur.Store(nil)
				return
			}
			f.cl.node.Warn("cannot make a stream consumer; the node reads the stream through its other feed meanwhile, if any", "err", err)
			t := time.NewTimer(min(time.Duration(attempt)*100*time.Millisecond, feedRetryMax))
			select {
			case <-ctx.Done():
				t.Stop()
				f.cur.Store(nil)
				return
			case <-t.C:
			}
		}
	}
}

// restart asks run to replace s, dead for the reason why, if it is still
// f's consumer. Safe for concurrent use.
func (f *feed) restart(s *feedSub, why error) {
	if f.cur.Load() != s {
		return
	}
	select {
	case f.kick <- s:
		f.cl.node.Logger().Warn("a stream consumer died; making another from the last frame applied",
			"server", s.host, "applied", f.cl.applied.Load(), "err", why)
	default: // a replacement is asked for already
	}
}

// failed handles an error of s's pull: a consumer that is gone or silent
// is replaced; the rest (a leadership change, a reconnect) the pull
// survives. Runs on nats.go's goroutines.
func (f *feed) failed(s *feedSub, err error) {
	switch {
	case errors.Is(err, jetstream.ErrConnectionClosed):
		return // the node is stopping
	case errors.Is(err, jetstream.ErrNoHeartbeat),
		errors.Is(err, jetstream.ErrConsumerDeleted),
		errors.Is(err, jetstream.ErrConsumerNotFound),
		errors.Is(err, jetstream.ErrBadRequest),
		errors.Is(err, nats.ErrNoResponders):
		f.restart(s, err)
	default:
		f.cl.node.Warn("stream consumer error", "server", s.host, "err", err)
	}
}

// handle takes one message of s and applies it, unless the other feed
// brought it first. If deliveries before it went missing (to a pull of a
// connection that died) and the other feed has not brought them either,
// they are read from the stream first; if the stream cannot give them, s
// is replaced and the message left to the other feed or to s's
// replacement. Runs on s's handler goroutine, in s's delivery order.
func (f *feed) handle(s *feedSub, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		return
	}
	cl, seq := f.cl, md.Sequence.Stream
	if d := s.dseq.Load(); md.Sequence.Consumer != d+1 && seq > cl.applied.Load()+1 {
		if err := cl.fill(seq - 1); err != nil {
			f.restart(s, fmt.Errorf("deliveries %d to %d were lost and cannot be read from the stream: %w", d+1, md.Sequence.Consumer-1, err))
			return
		}
	}
	s.dseq.Store(md.Sequence.Consumer)
	if seq <= cl.applied.Load() {
		return
	}
	cl.applyMu.Lock()
	cl.apply(msg.Data(), seq, md.Timestamp)
	cl.applyMu.Unlock()
}

// fill applies the stream's messages after the last one applied, through
// seq through, reading them from the stream (from any replica: the stream
// allows direct gets), for feeds that lost their deliveries. It gives up
// past fillMax messages, and when the stream cannot give one (a replica
// still catching up answers "not found" for a while). Safe for concurrent
// use.
func (cl *Bus) fill(through uint64) error {
	misses := 0
	for n := 0; ; n++ {
		next := cl.applied.Load() + 1
		if next > through {
			return nil
		}
		if n == fillMax {
			return fmt.Errorf("more than %d messages to read", fillMax)
		}
		ctx, cancel := context.WithTimeout(context.Background(), feedCreateTimeout)
		m, err := cl.stream.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subjectPrefix+"*"))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) && misses < fillMisses {
			misses++
			time.Sleep(fillPause)
			continue
		}
		if err != nil {
			return err
		}
		if m.Sequence > through {
			return nil // the stream no longer holds those: apply sees the gap
		}
		cl.applyMu.Lock()
		cl.apply(m.Data, m.Sequence, m.Time)
		cl.applyMu.Unlock()
	}
}

// verify checks, after a reconnect, that no delivery of f's consumer was
// lost on the connection that died: once the deliveries in flight have had
// time to arrive, the node must have applied what the consumer delivered,
// or it reads the rest from the stream. Runs on its own goroutine.
func (f *feed) verify() {
	s := f.cur.Load()
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), feedCreateTimeout)
	info, err := s.cons.Info(ctx)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		f.restart(s, err)
	case err == nil:
		through := info.Delivered.Stream
		time.AfterFunc(2*feedHeartbeat, func() {
			if err := f.cl.fill(through); err != nil {
				f.restart(s, fmt.Errorf("deliveries were lost on the connection that died and cannot be read from the stream: %w", err))
			}
		})
	}
}
