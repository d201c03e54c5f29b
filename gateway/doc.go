// Package gateway is the metrocast node's core: WebSocket and Server-Sent
// Events connections on gnet event loops, per-city rings of encoded
// frames, and the fanout from the rings to the subscribers. Ingest, auth
// and the cluster bus are seams around it.
//
// # The hot path, one verb per step
//
// Ingest accepts a line (package ingest: a producer's goroutine parses
// and checks it, and hands it to the bus, bus.go), the city appends it
// (city.go, ring.go: encoded once into a frame, numbered, stored in the
// city's ring, merged lazily into its state), the loops are woken
// (fanout.go: loop.wake, one task per loop per burst) and each loop fans
// out (fanout.go: loop.fanout, then loop.deliver writes every subscriber
// its frames from its cursor up to the ring's head, in writev batches).
// In cluster mode the bus (package cluster) stores the line in the stream
// first, and every node's city appends it as the stream delivers it
// (Node.Apply), under the stream's seq. A subscription (subscription.go) is
// a connection's cursor into one city's ring; a connection (conn.go) is
// its loop's alone. Every disconnect has a typed close reason
// (closereason.go) that feeds both its close frame and a counter.
//
// The files by concern:
//
//	server.go        Server: New, Start, the listeners, Stats
//	events.go        gnet's callbacks: where each connection and read enters
//	loop.go          one event loop's state and its write primitives
//	conn.go          a connection: handshake, frames, client messages, auth
//	subscription.go  subscribe, resume, unsubscribe; a loop's subscriber lists
//	fanout.go        wake, fanout, deliver, conflate, slow consumers
//	housekeeping.go  the wheel of periodic duties: time-outs, pings, tokens
//	closereason.go   why a connection ended, and its close code
//	hub.go           cities by name; the node's memory bounds; idle cities
//	city.go          one city: its ring, its merged state, initial_data
//	ring.go          frames and the lock-free ring readers follow
//	presence.go      who watches a city; presence events
//	sse.go           Server-Sent Events: the same rings, other bytes
//	history.go       GET /history from the ring
//	drain.go         a paced shutdown
//	admin.go         the admin HTTP port; metrics.go, stats.go its figures
//	ingestport.go    the node's side of ingest: its settings, its store
//	                 (the bus), the loops producers yield to
//	ingest/          package ingest: the TCP port and its protocol
//	                 (ingest.go, linereader.go), HTTP publish (publish.go),
//	                 the producers' turns (turn.go), what a store answers
//	                 (store.go)
//	bus.go           the seam to the log that numbers and carries the
//	                 ingest lines: Bus (what the core needs of it, and of
//	                 its seqs), Node and Fetch (what a bus may call), a
//	                 single node's bus (local); dedup.go its duplicate
//	                 window
//	tokens.go        the node's side of auth: its settings, key reloads,
//	                 revocations (POST /api/revoke, shared in a cluster)
//	auth/            package auth: tokens and grants (auth.go), their keys
//	                 (keys.go, jwks.go) and revocations (revoke.go); the
//	                 core asks it "may this token see this city"
//	cluster/         package cluster: cluster mode's Bus on NATS JetStream
//	                 (cluster.go), its feeds (feed.go), resume fetches
//	                 (fetch.go), presence and revocations shared between
//	                 nodes (presence.go, revoke.go), its nats_* keys
//	                 (config.go); cmd/metrocast hands it in as Config.Bus
//	internal/nodetest
//	                 the client side of the end-to-end tests (WebSocket,
//	                 SSE, ingest and admin clients), shared by the tests
//	                 of package gateway and of the packages around it
//
// # Goroutines: who runs what
//
//   - The event loops (Config.Loops, gnet): each owns its connections, their
//     subscriptions and its housekeeping wheel (the loop-owned fields of
//     loop, all of conn and sub). They run gnet's callbacks (events.go),
//     the fanout task (loop.drain) a wake schedules, and the housekeeping
//     task. Anything another goroutine wants done to a connection goes
//     through EventLoop.Execute.
//   - gnet's ticker goroutine: events.OnTick schedules housekeeping on every
//     loop and flushes presence once a sweep.
//   - Ingest: one goroutine accepts producers (ingest.Server.Serve), and
//     one per producer reads, stores and answers its lines, taking turns
//     (ingest/turn.go). HTTP ingest runs the same protocol on net/http's
//     goroutines of the admin port.
//   - The admin port: net/http, a goroutine per connection.
//   - Background duties, each on its own goroutine until Drain: the idle
//     city sweep (Server.sweepCities), the auth file watcher
//     (auth.Authenticator.WatchFiles, with AuthReloadInterval) and the
//     JWKS refresher (auth.Authenticator.WatchJWKS, with JWKS URLs).
//   - The bus, in cluster mode (package cluster, whose doc says more):
//     nats.go's goroutines deliver the stream, one message at a time, to
//     Node.Apply; resumes are fetched on the bus's goroutines, which hand
//     the frames to the subscriber's loop (Fetch.Done); presence and
//     revocations shared by other nodes come in on the bus's goroutines
//     too (Node.SharePresence, Node.Revoke).
//   - The caller's goroutine (cmd/metrocast's signal loop): Start, Reload,
//     ReloadKeys, Revoke, Drain.
//
// # Locks: what guards what
//
// Loop-owned state needs no lock: only its loop touches it. Counters read
// by Stats are atomics. The mutexes, and what each guards:
//
//	hubShard.mu (RW)     a shard's cities and the states of its dropped ones
//	hub.trimMu           the cold-city list fit trims from
//	hub.keptMu           one fitKept at a time
//	city.mu              a city's state, its ring's writer side, dropped
//	presence.mu          a city's watchers and presence batches
//	loop.mu              the cities a loop was woken for (loop.pending)
//	Server.presenceMu    the cities with presence changes to flush
//	Server.loopsMu       creating a loop's state (Server.loopOf)
//	Server.reloadMu      one Reload at a time
//	auth.Authenticator.mu  the key sources; building a key set
//	ipShard.mu           a shard of the per-address connection counts
//	ingest.Server.mu     the producer connections; the port's closing
//	ingest.turns.mu      the producers' turn queue
//	idShard.mu           a shard of the duplicate window; held while storing
//
// Package cluster's locks are its own (see its doc); cluster.Bus.applyMu
// is held while Node.Apply stores a message, and so stands in the order
// they nest in: locksordering.txt, beside this file.
package gateway
