package main

import (
	"context"
	"fmt"
	"time"
)

// runIdle opens o.conns subscribed connections, holds them idle for
// o.duration and reports the server's RSS growth per connection.
func runIdle(ctx context.Context, o *options) error {
	var before int64
	if o.pid > 0 {
		var err error
		if before, err = rss(o.pid); err != nil {
			return err
		}
	}
	st := &runStats{}
	start := time.Now()
	clients, readers, err := dialAll(ctx, o, st)
	defer closeAll(clients, readers, st)
	if err != nil {
		return fmt.Errorf("after %d connections: %w", count(clients), err)
	}
	if err := waitReady(ctx, st, o); err != nil {
		return err
	}
	fmt.Printf("idle: %d connections over %d cities up and subscribed in %s\n",
		o.conns, o.cities, time.Since(start).Round(time.Millisecond))

	hold := time.NewTimer(o.duration)
	defer hold.Stop()
	if o.pid > 0 {
		// The server's heap settles (GC, scavenger) a few seconds after the
		// burst of upgrades: read after -settle, and again at the end.
		select {
		case <-time.After(o.settle):
		case <-ctx.Done():
			return ctx.Err()
		}
		after, err := rss(o.pid)
		if err != nil {
			return err
		}
		report := func(label string, after int64) {
			fmt.Printf("idle: server RSS %s: before %.1f MiB, with %d connections %.1f MiB: %.0f bytes per connection\n",
				label, mib(before), o.conns, mib(after), float64(after-before)/float64(o.conns))
		}
		report(fmt.Sprintf("after %s", o.settle), after)
		select {
		case <-hold.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		if after, err = rss(o.pid); err != nil {
			return err
		}
		report(fmt.Sprintf("after %s", max(o.settle, o.duration)), after)
	} else {
		select {
		case <-hold.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if n := st.dropped.Load(); n > 0 {
		return fmt.Errorf("%d connections were closed while idle", n)
	}
	return nil
}

// waitReady waits until every client has its initial_data.
func waitReady(ctx context.Context, st *runStats, o *options) error {
	deadline := time.Now().Add(o.connectWait)
	for st.ready.Load() < int64(o.conns) {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d connections got their initial_data in %s", st.ready.Load(), o.conns, o.connectWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func count(clients []*client) int {
	n := 0
	for _, c := range clients {
		if c != nil {
			n++
		}
	}
	return n
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
