package ingest

import (
	"errors"

	"github.com/metrocast/metrocast/codec"
)

// Store takes the lines ingest accepts: the node's bus (gateway.Bus), which
// stores a line at once on a single node, or sends it to a log that every
// node of a cluster shares and answers later. Ingest parses, authenticates,
// paces and answers; where a line goes is the store's alone.
type Store interface {
	// Append takes one ingest line, parsed (in) and as it came (line, valid
	// only during the call), that the producer may publish. It runs on the
	// producer's goroutine, in its turn (see turns), and must not wait: a
	// store that stores at once returns the outcome; one that waits for its
	// log returns a Pending (Appended.Pending). in is the caller's, and only
	// read during the call. Safe for concurrent use.
	Append(in *codec.Ingest, line []byte) Appended
}

// ErrTooManyCities is Append's error for a line of a city the node cannot
// hold, being full: the line is fine, and it does not count toward the
// producer's bad lines (Config.MaxErrors); its lines for the cities the
// node holds go on.
var ErrTooManyCities = errors.New("too many cities on this node")

// Appended is the outcome of Store.Append, or of a Pending.
type Appended struct {
	// Seq is the line's seq; with Dup, the line was a copy of one whose id
	// the store holds already (within its window of ids), not stored
	// again, and Seq is the first copy's.
	Seq uint64
	Dup bool
	// Err: the line was not stored. From Append, for a fault of the line
	// (or ErrTooManyCities: the node is full); from a Pending, for a fault
	// of the store, a *BusError: the producer resends the line.
	Err error
	// Pending, when not nil, is the line on its way to the log: the
	// outcome comes from it, and the fields above are unset.
	Pending Pending
}

// Pending is a line on its way to the log. It is owned by the producer's
// goroutine.
type Pending interface {
	// Send hands the line to the log. It may wait (for room among the
	// lines the log has not answered yet, for the connection), and so runs
	// outside the producer's turn. The lines of one producer are stored in
	// the order they are sent.
	Send()
	// Poll returns the outcome once the log has answered (done); with
	// wait, it waits for that, for a bounded time after which the outcome
	// is a *BusError. A line not sent yet is not done, wait or not.
	Poll(wait bool) (a Appended, done bool)
}

// BusError is an ingest line the bus failed to store: the line was fine,
// the producer is not to blame (it does not count toward Config.MaxErrors)
// and should resend it. Its text says what is known.
type BusError struct {
	// Maybe: the line may be stored (the log did not answer in time);
	// otherwise it is known not to be.
	Maybe bool
	Msg   string
}

func (e *BusError) Error() string { return e.Msg }

// Retry is the ingest answer's "retry" value.
func (e *BusError) Retry() string {
	if e.Maybe {
		return codec.RetryMaybeStored
	}
	return codec.RetryNotStored
}

// asBusError returns err, a Pending's, as the *BusError it is.
func asBusError(err error) *BusError {
	var be *BusError
	if errors.As(err, &be) {
		return be
	}
	return &BusError{Maybe: true, Msg: err.Error()}
}
