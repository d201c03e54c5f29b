package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway"
)

// Presence in cluster mode. Each node keeps its own watchers of a city
// under the key <city>.<node> of a JetStream key-value bucket, as a
// presence share (codec.AppendPresenceShare): put when they change (at
// most once per tick, with the tick's coalesced joins and leaves), again
// every third of Config.PresenceTTL while there are any, and deleted when
// there are none or the node stops. Every node watches the bucket and
// counts the other nodes' shares among the city's watchers
// (gateway.Node.SharePresence), so a user watching through two nodes is
// counted once. A
// share not refreshed within the TTL — its node crashed or is cut off — is
// forgotten, and the bucket's own TTL removes its key.

// presenceBucketMaxBytes bounds the presence bucket; past it puts fail
// (counted in metrocast_cluster_presence_errors_total) until keys expire.
const presenceBucketMaxBytes = 256 << 20

// presenceBucket names the presence bucket of a stream's cluster.
func presenceBucket(stream string) string { return stream + "_presence" }

// clusterPresence shares this node's watchers and follows the others'.
type clusterPresence struct {
	node *gateway.Node
	nc   *nats.Conn
	kv   jetstream.KeyValue
	id   string // this node's id in the keys
	ttl  time.Duration

	mu     sync.Mutex
	queued map[string]struct{} // cities whose local watchers changed, to put
	wake   chan struct{}       // capacity 1: queued has cities

	stop    chan struct{}
	stopped sync.WaitGroup
	errors  atomic.Uint64 // puts and deletes that failed, shares that did not parse
}

// startPresence creates the presence bucket (or updates its limits) and
// starts sharing and watching.
func (cl *Bus) startPresence() error {
	cfg := &cl.cfg
	var kv jetstream.KeyValue
	err := cl.startRetry(func(ctx context.Context) (err error) {
		kv, err = cl.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:       presenceBucket(cfg.Stream),
			Description:  "metrocast presence: each node's watchers per city",
			History:      1,
			TTL:          cfg.PresenceTTL,
			MaxValueSize: codec.MaxShareBytes,
			MaxBytes:     presenceBucketMaxBytes,
			Storage:      jetstream.FileStorage,
			Replicas:     cfg.Replicas,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot create or update the presence bucket %s: %w", presenceBucket(cfg.Stream), err)
	}
	cp := &clusterPresence{
		node:   cl.node,
		nc:     cl.nc,
		kv:     kv,
		id:     cl.id,
		ttl:    cfg.PresenceTTL,
		queued: make(map[string]struct{}),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	w, err := cp.watch()
	if err != nil {
		return fmt.Errorf("cannot watch the presence bucket: %w", err)
	}
	cl.presence = cp
	cp.stopped.Add(2)
	go cp.share()
	go cp.follow(w)
	return nil
}

// changed queues city, whose local watchers changed, to be shared. Safe
// for concurrent use.
func (cp *clusterPresence) changed(city string) {
	cp.mu.Lock()
	cp.queued[city] = struct{}{}
	cp.mu.Unlock()
	select {
	case cp.wake <- struct{}{}:
	default:
	}
}

// close deletes this node's keys and stops. The caller closes the NATS
// connection afterwards.
func (cp *clusterPresence) close() {
	if cp == nil {
		return
	}
	close(cp.stop)
	cp.stopped.Wait()
}

// key is the bucket key of city's watchers on this node.
func (cp *clusterPresence) key(city string) string { return city + "." + cp.id }

// share puts the queued cities' shares as they change and every city's
// every third of the TTL, until stop; then it deletes this node's keys.
// Runs on its own goroutine: NATS round trips never hold up the ticker.
func (cp *clusterPresence) share() {
	defer cp.stopped.Done()
	refresh := time.NewTicker(cp.ttl / 3)
	defer refresh.Stop()
	held := make(map[string]struct{}) // cities this node has (or may have) a key of
	for {
		all := false
		select {
		case <-cp.stop:
			// Bounded as a whole: NATS may be gone, and the keys expire.
			ctx, cancel := context.WithTimeout(context.Background(), natsPublishTimeout)
			for c := range held {
				_ = cp.update(ctx, c, nil)
			}
			cancel()
			return
		case <-cp.wake:
		case <-refresh.C:
			all = true
		}
		cp.mu.Lock()
		cities := cp.queued
		cp.queued = make(map[string]struct{})
		cp.mu.Unlock()
		if all {
			for c := range held {
				cities[c] = struct{}{}
			}
		}
		slow := false
		for c := range cities {
			if slow {
				// NATS timed out: one wait per pass, not one per city;
				// the rest go at the next refresh.
				held[c] = struct{}{}
				continue
			}
			v := cp.node.LocalPresence(c)
			ctx, cancel := context.WithTimeout(context.Background(), natsPublishTimeout)
			err := cp.update(ctx, c, v)
			cancel()
			slow = errors.Is(err, context.DeadlineExceeded)
			if err != nil || v != nil {
				// Kept to be refreshed, or deleted again if that failed.
				held[c] = struct{}{}
			} else {
				delete(held, c)
			}
		}
	}
}

// update puts city's share v, or deletes city's key when v is nil.
func (cp *clusterPresence) update(ctx context.Context, city string, v []byte) error {
	var err error
	if v == nil {
		err = cp.kv.Delete(ctx, cp.key(city))
	} else {
		_, err = cp.kv.Put(ctx, cp.key(city), v)
	}
	if err != nil {
		cp.errors.Add(1)
		cp.node.Warn("cannot share presence; retried on the next refresh", "city", city, "err", err)
	}
	return err
}

// follow applies the other nodes' shares from w to the cities' watchers
// and forgets those not refreshed within the TTL, until stop. After the
// connection to NATS was re-established it watches anew: the client's
// watch takes several idle heartbeats to notice a restarted server. Runs
// on its own goroutine.
func (cp *clusterPresence) follow(w *bucketWatch) {
	defer cp.stopped.Done()
	defer func() { w.stop() }()
	expire := time.NewTicker(cp.ttl / 3)
	defer expire.Stop()
	shared := make(map[string]struct{}) // cities with other nodes' shares
	initial := true                     // reading the shares put before the watch
	reconnects := cp.nc.Stats().Reconnects
	for {
		select {
		case <-cp.stop:
			return
		case now := <-expire.C:
			if r := cp.nc.Stats().Reconnects; r != reconnects && cp.nc.IsConnected() {
				if nw, err := cp.watch(); err == nil {
					w.stop()
					w, initial, reconnects = nw, true, r
				}
			}
			for c := range shared {
				if !cp.node.ExpirePresence(c, now.Add(-cp.ttl)) {
					delete(shared, c)
				}
			}
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				initial = false
				continue
			}
			c, err := cp.apply(e.Key(), e.Operation() == jetstream.KeyValuePut, e.Value(), e.Created(), initial)
			if err != nil {
				cp.errors.Add(1)
				cp.node.Warn("ignored a presence share", "key", e.Key(), "err", err)
				continue
			}
			if c != "" {
				shared[c] = struct{}{}
			}
		}
	}
}

// bucketWatch is a watch of a bucket and the cancel of the context it
// lives by.
type bucketWatch struct {
	jetstream.KeyWatcher
	cancel context.CancelFunc
}

func (w *bucketWatch) stop() {
	_ = w.Stop()
	w.cancel()
}

// watch starts watching every key of the bucket.
func (cp *clusterPresence) watch() (*bucketWatch, error) { return watchBucket(cp.kv) }

// watchBucket starts watching every key of kv. Its context lives as long
// as the watch (nats.go unsubscribes when it ends), so the start is
// bounded by a timer instead: past natsSetupTimeout it is cancelled.
func watchBucket(kv jetstream.KeyValue) (*bucketWatch, error) {
	ctx, cancel := context.WithCancel(context.Background())
	t := time.AfterFunc(natsSetupTimeout, cancel)
	w, err := kv.WatchAll(ctx)
	if !t.Stop() && err == nil {
		_ = w.Stop()
		err = errors.New("timed out")
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return &bucketWatch{KeyWatcher: w, cancel: cancel}, nil
}

// errPresenceKey is a bucket key that is not <city>.<node>.
var errPresenceKey = errors.New("not a key <city>.<node>")

// apply counts one bucket entry (a put of value, or a deletion; stored
// when NATS stored it) among its city's watchers and returns the city (""
// for this node's own keys, or a deleted key of a city the node does not
// know). Runs on follow's goroutine.
func (cp *clusterPresence) apply(key string, put bool, value []byte, stored time.Time, initial bool) (string, error) {
	name, node, ok := strings.Cut(key, ".")
	if !ok || !codec.ValidCity(name) || node == "" {
		return "", errPresenceKey
	}
	if node == cp.id {
		return "", nil
	}
	// A share read at the start may be old (its node may have crashed):
	// its age counts from when NATS stored it. Later ones are fresh.
	seen := time.Now()
	if initial && stored.Before(seen) {
		seen = stored
	}
	if !put {
		if !cp.node.DropPresence(name, node) {
			return "", nil
		}
		return name, nil
	}
	if err := cp.node.SharePresence(name, node, value, seen); err != nil {
		return "", err
	}
	return name, nil
}
