package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Resumes from the stream read it with direct gets, which any replica of
// the stream answers (it allows them: see Bus.setup), as the feeds'
// fill does: no consumer to create, so no wait for the meta leader, and
// no stream leader to wait for either. Losing the server that led either
// left a resume waiting out natsFetchTimeout (10 s) and then starting the
// client afresh (TestClusterResumeLoseOneNATSServer).
//
// A replica behind the others (nats-server lets a follower answer from 90%
// caught up) answers from a prefix of the stream, so the frames it gives
// may stop short of the city's floor: finishReplay then starts the client
// afresh (initial_data, resumed false), as for a resume from expired
// seqs. Frames that reach the floor come from a replica that holds every
// message before them: a resume never has a gap.

// fetch hands the messages of city after seq since to add, in order,
// from the stream: up to the one add says reached the city's floor (the
// ring holds every frame after it), or to the stream's end. add returns
// how many frames the resume holds (gateway.Fetch.Add). It is false when
// the stream no longer holds since (retention) or never did, when there
// are more than Config.ResumeMax, or when NATS fails. Runs on a resume
// goroutine.
func (cl *Bus) fetch(city string, since uint64, add func(seq uint64, ts time.Time, data []byte) (held int, reached bool)) bool {
	deadline := time.Now().Add(natsFetchTimeout)
	if !cl.holds(since, deadline) {
		return false
	}
	limit := cl.cfg.ResumeMax
	var in *fetchInbox
	defer func() { in.close() }()
	for next := since + 1; ; {
		if in == nil {
			var err error
			if in, err = cl.newFetchInbox(); err != nil {
				return false
			}
		}
		reached, full := false, false
		last, more, err := cl.getBatch(in, next, subject(city), deadline, func(seq uint64, ts time.Time, data []byte) bool {
			var held int
			held, reached = add(seq, ts, data)
			full = held >= limit
			return !reached && !full
		})
		switch {
		case fetchTransient(err) && time.Now().Add(noReplicaPause).Before(deadline):
			if errors.Is(err, errRequestTimeout) {
				// Its answer may still come, to an inbox no longer read.
				in.close()
				in = nil
			}
			if last > 0 {
				next = last + 1 // add has had the batch up to last
			}
			time.Sleep(noReplicaPause)
			continue // the rest of the batch again
		case err != nil:
			return false
		case reached:
			return true
		case full:
			return false
		case !more:
			return true
		}
		next = last + 1
	}
}

// fetchInbox is where a fetch's direct gets are answered.
type fetchInbox struct {
	subject string
	ch      chan *nats.Msg
	sub     *nats.Subscription
}

func (cl *Bus) newFetchInbox() (*fetchInbox, error) {
	// A batch and its end fit in ch: SubscribeSync's channel would
	// take 512 KiB for a resume.
	in := &fetchInbox{subject: cl.nc.NewRespInbox(), ch: make(chan *nats.Msg, fetchBatch+1)}
	var err error
	in.sub, err = cl.nc.ChanSubscribe(in.subject, in.ch)
	return in, err
}

func (in *fetchInbox) close() {
	if in != nil && in.sub != nil {
		_ = in.sub.Unsubscribe()
	}
}

// noReplicaPause is how long a fetch waits before it asks again when no
// replica answers direct gets (while the stream elects a leader: its
// replicas take direct gets up again after, for seconds) or the node's
// connection to NATS is down (fetchTransient).
const noReplicaPause = 100 * time.Millisecond

// fetchRequestTimeout bounds one request of a fetch (a direct get, or a
// batch of them), within natsFetchTimeout for the whole: a request made
// just before the node's NATS server died is never answered, and waiting
// for it took the whole 10 s, after which the client was started afresh
// (TestClusterResumeLoseOneNATSServer under load). Replicas answer in
// milliseconds.
const fetchRequestTimeout = 2 * time.Second

// requestDeadline is when a request of a fetch that must end by deadline
// stops waiting for its answer.
func requestDeadline(deadline time.Time) time.Time {
	if d := time.Now().Add(fetchRequestTimeout); d.Before(deadline) {
		return d
	}
	return deadline
}

// errRequestTimeout is a request of a fetch that had no answer within
// fetchRequestTimeout: it is made again (fetchTransient).
var errRequestTimeout = errors.New("direct get: no answer in time")

// fetchTransient reports whether a fetch's request may pass if made
// again (natsTransient), or had no answer in time (errRequestTimeout). A
// resume asked just after the node's server died was started afresh
// instead of waiting the reconnect out (TestClusterResumeLoseOneNATSServer).
func fetchTransient(err error) bool {
	return natsTransient(err) || errors.Is(err, errRequestTimeout)
}

// holds reports whether the stream still holds since, or since+1 (since
// itself may have just expired): then it holds every message after it,
// as messages leave the stream from its front only. A replica may not
// have since yet (the client saw it on a node that read it sooner):
// "not found" is waited out a little, as in fill; no replica to answer,
// until deadline.
func (cl *Bus) holds(since uint64, deadline time.Time) bool {
	misses := 0
	for {
		found, err := cl.holdsOnce(since, deadline)
		pause := fillPause
		switch {
		case found:
			return true
		case fetchTransient(err):
			pause = noReplicaPause
		case err != nil || misses == fillMisses:
			return false
		default:
			misses++
		}
		if time.Now().Add(pause).After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
}

// holdsOnce asks a replica once whether it holds since or since+1; err is
// nil when it holds neither.
func (cl *Bus) holdsOnce(since uint64, deadline time.Time) (bool, error) {
	for _, seq := range []uint64{since, since + 1} {
		if seq == 0 {
			continue
		}
		ctx, cancel := context.WithDeadline(context.Background(), requestDeadline(deadline))
		_, err := cl.stream.GetMsg(ctx, seq)
		cancel()
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return err == nil, err
		}
	}
	return false, nil
}

// directBatchRequest is a batched direct get: up to Batch messages of
// subject NextFor from seq Seq, answered by one replica as that many
// messages and an end-of-batch status (nats-server's JSApiMsgGetRequest).
type directBatchRequest struct {
	Seq     uint64 `json:"seq"`
	NextFor string `json:"next_by_subj"`
	Batch   int    `json:"batch"`
}

// numPendingHeader tells, in a batched direct get's end of batch, how many
// messages of its subject the replica holds after the last one sent.
const numPendingHeader = "Nats-Num-Pending"

// getBatch asks a replica for up to fetchBatch messages of subj from seq
// start, with replies to in, and calls fn with each in order until fn
// returns false (the rest of the batch is not read: the caller stops with
// it). It returns the seq of the last message given to fn (also with an
// error: a request made again starts after it), and more: whether the
// replica holds more of them after it. It waits for the replies at most
// fetchRequestTimeout (errRequestTimeout), and not past deadline.
func (cl *Bus) getBatch(in *fetchInbox, start uint64, subj string, deadline time.Time,
	fn func(seq uint64, ts time.Time, data []byte) bool) (last uint64, more bool, err error) {
	req, err := json.Marshal(directBatchRequest{Seq: start, NextFor: subj, Batch: fetchBatch})
	if err != nil {
		return 0, false, err
	}
	if err := cl.nc.PublishRequest("$JS.API.DIRECT.GET."+cl.cfg.Stream, in.subject, req); err != nil {
		return 0, false, err
	}
	timer := time.NewTimer(time.Until(requestDeadline(deadline)))
	defer timer.Stop()
	for {
		var m *nats.Msg
		select {
		case m = <-in.ch:
		case <-timer.C:
			return last, false, errRequestTimeout
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of the batch
			pending, err := strconv.ParseUint(m.Header.Get(numPendingHeader), 10, 64)
			return last, err == nil && pending > 0, nil
		case "404": // none from start
			return last, false, nil
		case "503":
			return last, false, nats.ErrNoResponders
		default:
			return 0, false, fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil || seq < start || seq <= last {
			return 0, false, fmt.Errorf("direct get: bad sequence %q", m.Header.Get(jetstream.SequenceHeader))
		}
		ts, err := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
		if err != nil {
			return 0, false, fmt.Errorf("direct get: bad time stamp: %w", err)
		}
		last = seq
		if !fn(seq, ts, m.Data) {
			return last, true, nil
		}
	}
}
