// Package ingest is metrocast's ingest: the TCP line protocol (Server,
// one goroutine per producer), HTTP publish on the admin port (Publish),
// the producers' tokens (their "publish" claim, checked with gateway/auth)
// and their pacing (MaxRate, the bad-line budget, and the turns they take
// so that they cannot starve the event loops). It parses, authenticates,
// paces and answers; it hands each accepted line to a Store, the node's
// bus, and never knows whether the store is a single node's rings or a
// cluster's log: it only sees an answer now, or one later (a Pending).
//
// Files: ingest.go (the TCP port, the protocol, the answers in line
// order), linereader.go (bounded lines with a time-out), turn.go (the
// producers' turns), publish.go (HTTP ingest), store.go (what a store
// answers).
package ingest
