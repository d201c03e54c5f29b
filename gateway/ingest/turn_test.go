package ingest

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// TestTurnsOrder checks who gets the ingest turn next: those waiting in the
// order they asked, light producers before heavy ones, the two classes
// alternating while both wait.
func TestTurnsOrder(t *testing.T) {
	ts := newTurns(func() bool { return false })
	var mu sync.Mutex
	var order []string
	holder := &turn{t: ts}
	holder.take(1, false)
	queued := func(light, heavy int) bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return len(ts.light) == light && len(ts.heavy) == heavy
	}
	var wg sync.WaitGroup
	ask := func(name string, heavy bool, light, heavies int) {
		p := &turn{t: ts, usedUp: heavy}
		wg.Go(func() {
			p.take(1, false)
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			p.release()
		})
		// Polled until it waits in its queue.
		for deadline := time.Now().Add(5 * time.Second); !queued(light, heavies); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s is not waiting for the turn", name)
			}
		}
	}
	ask("h1", true, 0, 1)
	ask("l1", false, 1, 1)
	ask("h2", true, 1, 2)
	ask("l2", false, 2, 2)
	ask("l3", false, 3, 2)
	holder.release()
	wg.Wait()
	want := []string{"l1", "h1", "l2", "h2", "l3"}
	if !slices.Equal(order, want) {
		t.Fatalf("turns went to %v, want %v", order, want)
	}
	if ts.busy {
		t.Fatal("the turn is still held after every producer released it")
	}
}
