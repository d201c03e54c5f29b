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
	// From a make bench on a busy machine: the next run on a quiet one
	// replaces it, with the README's figures.
	Run:      "2026-12-07 at ffbca2f, 2 vCPUs (AMD EPYC, a Firecracker VM), Linux 6.18, load 12.6",
	WriteNs:  10_950,
	WritevNs: 11_630,
}
