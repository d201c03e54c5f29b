package ingest

import (
	"runtime"
	"sync"
)

// Ingest takes turns, so that producers cannot starve the subscribers.
//
// Producers are served by goroutines (one per connection), subscribers by
// the gnet event loops, and all of them share GOMAXPROCS processors. A
// flood of producers keeps one goroutine per producer runnable all the
// time; an event loop woken for new frames, or one that yields after a
// batch of events (gnet's poller calls runtime.Gosched when epoll has
// nothing more), queues behind all of them, up to a scheduler time slice
// (10 ms) each. Measured on 2 cores, 1,000 subscribers and 20 producers
// sending as fast as TCP allows (loadtest flood): the subscribers' p99 went
// from 9 ms to 490 ms.
//
// So at most one producer goroutine at a time parses and stores lines: the
// one whose turn it is. A turn lasts at most TurnLines lines or turnBytes
// bytes, and ends early when the producer has no whole line buffered, or is
// about to wait for anything else (a write to its socket, the store's
// answer, its own rate pacing): nothing waits in a turn. The other
// producers wait parked, not runnable, and TCP backpressure slows them.
// Before each line the producer also yields its processor while an event
// loop is waiting to run a fanout (Config.LoopsWaiting; runtime.Gosched:
// with the other producers parked, the waiting loops are what the
// scheduler picks).
//
// The next turn goes to the producers in the order they asked, in two
// classes: a producer that had read all it had sent (one that sends less
// than its share, like a dashboard feed) is served before those with more
// waiting (a flood: its turn was used up, or its socket held more than a
// read takes), but the two classes alternate while both wait, so each gets
// at least every other turn. A light producer's line thus waits for about
// one turn, not a round of every flooding producer's.
//
// With a store that answers later (a cluster's log), a turn parses and
// checks its lines and the store only prepares them (a Pending); they are
// sent when the turn ends, outside it: sending may wait (for room among
// the lines the log has not answered yet, or for the connection to it),
// and no other producer waits with it.
type turns struct {
	// loopsWaiting is Config.LoopsWaiting.
	loopsWaiting func() bool

	mu    sync.Mutex
	busy  bool    // a producer has the turn
	light []*turn // waiting, in order
	heavy []*turn // waiting, in order
	// heavyNext alternates the classes while both wait.
	heavyNext bool
}

// Bounds of one turn. The pair keeps a turn short whatever the line size:
// lines of the size the bench sends take 1-3 µs each to parse and store,
// so a turn takes ~0.1-0.2 ms.
const (
	TurnLines = 64
	turnBytes = 64 << 10
)

func newTurns(loopsWaiting func() bool) *turns { return &turns{loopsWaiting: loopsWaiting} }

// turn is one producer's place in the turns. Owned by the producer's
// goroutine; the zero value holds nothing and needs t set.
type turn struct {
	t            *turns
	held         bool
	usedUp       bool // the last turn ended at its bounds
	lines, bytes int
	wake         chan struct{} // the turn handed over, while waiting
}

// take makes sure the producer has the turn before it stores a line of
// size bytes: it waits for one if it has none, and yields to event loops
// waiting to run. backlog tells whether the producer has more input
// waiting than its last read took. A turn used up (spent) must be
// released first.
func (p *turn) take(size int, backlog bool) {
	if !p.held {
		p.t.acquire(p, p.usedUp || backlog)
		p.held, p.lines, p.bytes = true, 0, 0
	}
	if p.t.loopsWaiting() {
		runtime.Gosched()
	}
	p.lines++
	p.bytes += size
}

// spent reports whether the producer has used its turn up: it releases it
// before its next line.
func (p *turn) spent() bool {
	return p.held && (p.lines >= TurnLines || p.bytes >= turnBytes)
}

// release ends the producer's turn, if it has one. Call it before anything
// that may wait.
func (p *turn) release() {
	if !p.held {
		return
	}
	p.usedUp = p.spent()
	if p.usedUp {
		// Let the goroutines the network poller made runnable meanwhile
		// (producers with new lines, event loops) run before the turn goes
		// on: the next producer would take over this processor at once,
		// ahead of them.
		runtime.Gosched()
	}
	p.held = false
	p.t.handOver()
}

// acquire waits until p has the turn, in the heavy class or the light one.
func (t *turns) acquire(p *turn, heavy bool) {
	t.mu.Lock()
	if !t.busy {
		t.busy = true
		t.mu.Unlock()
		return
	}
	if p.wake == nil {
		p.wake = make(chan struct{}, 1)
	}
	if heavy {
		t.heavy = append(t.heavy, p)
	} else {
		t.light = append(t.light, p)
	}
	t.mu.Unlock()
	<-p.wake
}

// handOver gives the turn to the next producer waiting, if any.
func (t *turns) handOver() {
	t.mu.Lock()
	var next *turn
	switch {
	case len(t.light) > 0 && (!t.heavyNext || len(t.heavy) == 0):
		next, t.light = pop(t.light)
		t.heavyNext = true
	case len(t.heavy) > 0:
		next, t.heavy = pop(t.heavy)
		t.heavyNext = false
	default:
		t.busy = false
	}
	t.mu.Unlock()
	if next != nil {
		next.wake <- struct{}{}
	}
}

// pop removes the first of q. The queues hold at most one entry per
// producer, so the copy is short.
func pop(q []*turn) (*turn, []*turn) {
	p := q[0]
	n := copy(q, q[1:])
	q[n] = nil
	return p, q[:n]
}
