package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metrocast/metrocast/gateway/producer"
)

// publisher sends data_update frames to the ingest port at a fixed rate per
// city, each carrying its send time in "data":{"t":<Unix ns>}. It uses the
// project's producer client, so every line is acked with its seq: the seqs
// of each city are known exactly, which is what the clients' accounting is
// checked against.
type publisher struct {
	o    *options
	p    *producer.Producer
	pad  string
	line []byte
	n    atomic.Int64 // frames sent so far, all cities: the "v" member

	ackMu sync.Mutex
	acked []seqSet // per city index

	errs   atomic.Uint64
	errMu  sync.Mutex
	errMsg string
}

func newPublisher(ctx context.Context, o *options) (*publisher, error) {
	var opts producer.Options
	if tok := o.IngestToken; tok != "" {
		opts.Token = func() (string, error) { return tok, nil }
	}
	p, err := producer.Dial(ctx, o.Ingest, opts)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to ingest at %s: %w", o.Ingest, err)
	}
	return &publisher{
		o:     o,
		p:     p,
		pad:   strings.Repeat("x", o.Payload),
		acked: make([]seqSet, o.Cities),
	}, nil
}

// run publishes rate frames per second per city for d. Lines are evenly
// spaced, cities in turn, rather than sent in per-tick bursts, so that the
// latency measures the fanout and not a queue of our own making; a late
// sender catches up.
func (p *publisher) run(ctx context.Context, rate float64, d time.Duration) error {
	o := p.o
	interval := time.Duration(float64(time.Second) / (rate * float64(o.Cities)))
	start := time.Now()
	end := start.Add(d)
	for i := 0; ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(end) {
			return nil
		}
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		city := int(p.n.Load() % int64(o.Cities))
		if err := p.send(ctx, city); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (p *publisher) send(ctx context.Context, city int) error {
	b := append(p.line[:0], `{"city":"`...)
	b = append(b, p.o.city(city)...)
	b = append(b, `","type":"data_update","data":{"t":`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, `,"v":`...)
	b = strconv.AppendInt(b, p.n.Load(), 10)
	if p.pad != "" {
		b = append(b, `,"pad":"`...)
		b = append(b, p.pad...)
		b = append(b, '"')
	}
	b = append(b, "}}"...)
	p.line = b
	err := p.p.SendAsync(ctx, b, func(seq uint64, err error) {
		if err != nil {
			p.fail(err)
			return
		}
		// Acks come in line order: seqs of a city only grow.
		p.ackMu.Lock()
		p.acked[city].add(seq)
		p.ackMu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("cannot publish: %w", err)
	}
	p.n.Add(1)
	return nil
}

func (p *publisher) fail(err error) {
	if p.errs.Add(1) == 1 {
		p.errMu.Lock()
		p.errMsg = err.Error()
		p.errMu.Unlock()
	}
}

// close waits for every ack and returns each city's acked seqs.
func (p *publisher) close() map[string]seqSet {
	_ = p.p.Close()
	p.ackMu.Lock()
	defer p.ackMu.Unlock()
	acked := make(map[string]seqSet, len(p.acked))
	for i, s := range p.acked {
		acked[p.o.city(i)] = s
	}
	return acked
}

// frames is how many frames were sent so far, all cities.
// Safe for concurrent use.
func (p *publisher) frames() uint64 { return uint64(p.n.Load()) }

// firstError is the first failed line, if any.
func (p *publisher) firstError() (uint64, string) {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.errs.Load(), p.errMsg
}
