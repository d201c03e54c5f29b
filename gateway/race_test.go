//go:build race

package gateway

// raceEnabled: the race detector is on, and makes the node ~40 times
// slower; tests that fill a node scale down under it.
const raceEnabled = true
