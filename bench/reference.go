package main

// reference is the floor of the machine the README's Performance section
// was measured on, in the run it quotes: a run elsewhere (or on a busier
// day) divides its own floor by it to say how its machine compares, so
// that a slower machine is not read as a regression. Update it with the
// README, from the same run's result (its "floor").
var reference = struct {
	Run      string  // when and on what
	WriteNs  float64 // floorFigures.WriteNs
	WritevNs float64 // floorFigures.WritevNs
}{
	Run:      "2026-12-07 at 276b097, 2 vCPUs (Intel Xeon, a Firecracker VM), Linux 6.18, load 0.72",
	WriteNs:  3_680,
	WritevNs: 3_930,
}
