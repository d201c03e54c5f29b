package cluster

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/metrocast/metrocast/gateway"
)

// Revocations in cluster mode. gateway.Server.Revoke puts each in a JetStream
// key-value bucket, <nats_stream>_revoked, under sub.<id> or jti.<id> (the
// id in unpadded base64url: a key takes few characters), its value the
// expiry (RFC 3339), with a per-key TTL that removes it then. Every node
// follows the bucket, having read all of it before it listens, and applies
// each entry to its timed revocations: one call revokes a user on every
// node. Deleting a key (nats kv del) lifts the revocation everywhere.

// revocationBucket names the revocation bucket of a stream's cluster.
func revocationBucket(stream string) string { return stream + "_revoked" }

const (
	// revocationBucketMaxBytes bounds the bucket (auth's maxRevokedEntries
	// keys of up to ~1.4 KiB fit several times over); past it puts fail.
	revocationBucketMaxBytes = 256 << 20
	// revocationMarkerTTL is how long the bucket keeps the marker of an
	// entry its TTL removed (watchers see it as a deletion).
	revocationMarkerTTL = time.Minute
	// maxRevocationBatch bounds the bucket updates applied at once.
	maxRevocationBatch = 1024
	// revocationRewatch is how often follow checks whether NATS
	// reconnected, to watch the bucket anew.
	revocationRewatch = 5 * time.Second
)

// clusterRevocations shares this node's revocations and follows every
// node's.
type clusterRevocations struct {
	node    *gateway.Node
	nc      *nats.Conn
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	subject string // the bucket's subject prefix, $KV.<bucket>.

	stop    chan struct{}
	stopped sync.WaitGroup
	errors  atomic.Uint64 // entries that did not parse, puts that failed
}

// startRevocations creates the revocation bucket (or updates its limits),
// reads what it holds into the node's revocations, and follows it. A node
// without keys has nothing to revoke and leaves it alone.
func (cl *Bus) startRevocations() error {
	if !cl.node.Secure() {
		return nil
	}
	cfg := &cl.cfg
	bucket := revocationBucket(cfg.Stream)
	var kv jetstream.KeyValue
	err := cl.startRetry(func(ctx context.Context) (err error) {
		kv, err = cl.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "metrocast revocations: sub.<id> and jti.<id> (base64url) until the expiry they hold",
			History:     1,
			// Values are ~35 bytes, but the marker the server writes when
			// an entry's TTL ends is bound by this too (its headers count):
			// at 64 bytes it cannot be written and entries never expire
			// (nats-server 2.15).
			MaxValueSize:   1024,
			MaxBytes:       revocationBucketMaxBytes,
			Storage:        jetstream.FileStorage,
			Replicas:       cfg.Replicas,
			LimitMarkerTTL: revocationMarkerTTL,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot create or update the revocation bucket %s: %w", bucket, err)
	}
	cr := &clusterRevocations{node: cl.node, nc: cl.nc, js: cl.js, kv: kv, subject: "$KV." + bucket + ".", stop: make(chan struct{})}
	w, err := watchBucket(kv)
	if err != nil {
		return fmt.Errorf("cannot watch the revocation bucket: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), natsSetupTimeout)
	defer cancel()
	if err := cr.load(ctx, w); err != nil {
		w.stop()
		return fmt.Errorf("cannot read the revocation bucket: %w", err)
	}
	cl.revocations = cr
	cr.stopped.Add(1)
	go cr.follow(w)
	return nil
}

// close stops following the bucket.
func (cr *clusterRevocations) close() {
	if cr == nil {
		return
	}
	close(cr.stop)
	cr.stopped.Wait()
}

// revocationKey is the bucket key of r.
func revocationKey(r gateway.Revocation) string {
	return r.Kind + "." + base64.RawURLEncoding.EncodeToString([]byte(r.ID))
}

// put stores r in the bucket, to be removed at its expiry.
func (cr *clusterRevocations) put(ctx context.Context, r gateway.Revocation) error {
	// A TTL is whole seconds, at least one: round up, never end early.
	ttl := max(time.Until(r.Until).Truncate(time.Second)+time.Second, time.Second)
	_, err := cr.js.Publish(ctx, cr.subject+revocationKey(r), []byte(r.Until.UTC().Format(time.RFC3339Nano)), jetstream.WithMsgTTL(ttl))
	if err != nil {
		cr.errors.Add(1)
	}
	return err
}

// errRevocationEntry is a bucket entry that is not a revocation.
var errRevocationEntry = errors.New("not a revocation entry (sub.<id> or jti.<id> → RFC 3339 expiry)")

// parseRevocationEntry reads a bucket entry: its key, and for a put its
// value. A deletion gives a revocation with a zero until (lifted).
func parseRevocationEntry(key string, put bool, value []byte) (gateway.Revocation, error) {
	kind, enc, ok := strings.Cut(key, ".")
	id, err := base64.RawURLEncoding.DecodeString(enc)
	r := gateway.Revocation{Kind: kind, ID: string(id)}
	// Only the key revocationKey makes: base64 decoding also takes
	// non-zero trailing bits and skips \r and \n, so "sub.00" and
	// "sub.0w\n" would name the same id as "sub.0w".
	if !ok || err != nil || !r.Valid() || revocationKey(r) != key {
		return gateway.Revocation{}, errRevocationEntry
	}
	if put {
		if r.Until, err = time.Parse(time.RFC3339Nano, string(value)); err != nil {
			return gateway.Revocation{}, errRevocationEntry
		}
	}
	return r, nil
}

// entry converts a watched entry, counting and logging one that does not
// parse.
func (cr *clusterRevocations) entry(e jetstream.KeyValueEntry) (gateway.Revocation, bool) {
	r, err := parseRevocationEntry(e.Key(), e.Operation() == jetstream.KeyValuePut, e.Value())
	if err != nil {
		cr.errors.Add(1)
		cr.node.Warn("ignored a revocation bucket entry", "key", e.Key(), "err", err)
		return r, false
	}
	return r, true
}

// load applies what the bucket holds, up to the watch's end-of-initial
// marker, in one step.
func (cr *clusterRevocations) load(ctx context.Context, w *bucketWatch) error {
	var batch []gateway.Revocation
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the watch ended")
			}
			if e == nil {
				return cr.node.Revoke(batch...)
			}
			if r, ok := cr.entry(e); ok {
				batch = append(batch, r)
			}
		}
	}
}

// follow applies the bucket's changes as they come, a burst at once, and
// has the loops check their connections. After a reconnect to NATS it
// watches anew (a restarted server is noticed late by the old watch).
// Runs on its own goroutine until stop.
func (cr *clusterRevocations) follow(w *bucketWatch) {
	defer cr.stopped.Done()
	defer func() { w.stop() }()
	rewatch := time.NewTicker(revocationRewatch)
	defer rewatch.Stop()
	reconnects := cr.nc.Stats().Reconnects
	var batch []gateway.Revocation
	for {
		select {
		case <-cr.stop:
			return
		case <-rewatch.C:
			if r := cr.nc.Stats().Reconnects; r != reconnects && cr.nc.IsConnected() {
				if nw, err := watchBucket(cr.kv); err == nil {
					w.stop()
					w, reconnects = nw, r
				}
			}
			continue
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			batch = cr.appendEntry(batch[:0], e)
		}
		// Take the rest of a burst without waiting.
	burst:
		for len(batch) < maxRevocationBatch {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					break burst
				}
				batch = cr.appendEntry(batch, e)
			default:
				break burst
			}
		}
		if len(batch) == 0 {
			continue
		}
		if err := cr.node.Revoke(batch...); err != nil {
			cr.errors.Add(1)
			cr.node.Warn("cannot apply revocations from the cluster", "err", err)
			continue
		}
	}
}

// appendEntry appends e's revocation to batch (nothing for the
// end-of-initial marker, or an entry that does not parse).
func (cr *clusterRevocations) appendEntry(batch []gateway.Revocation, e jetstream.KeyValueEntry) []gateway.Revocation {
	if e == nil {
		return batch
	}
	if r, ok := cr.entry(e); ok {
		batch = append(batch, r)
	}
	return batch
}
