// Package bench is the home of the end-to-end benchmark suite, which arrives
// with the bench issue. It holds no code yet, on purpose.
//
// Micro-benchmarks live beside the code they measure, in *_timing_test.go
// files, because they need the packages' internals:
//
//   - gateway/ring_timing_test.go: BenchmarkRingAppend (encode once, merge,
//     append), BenchmarkRingGet (the per-frame read in the fanout) and
//     BenchmarkFanout (subs=1, 100, 10000: a real Server with two loops and
//     real WebSocket subscribers over loopback, held by a child process; it
//     reports ns/delivery, the server's cpu-ns/delivery and allocs/op,
//     which must not grow with the number of subscribers), and
//     BenchmarkFanoutBurst (16 frames per subscriber per wake: the writev
//     batching the design counts on under load).
//   - codec/*_timing_test.go: the parsers and encoders.
//
// Run them with
//
//	go test ./gateway ./codec -run '^$' -bench . -benchmem
//
// Load against a running node (RSS per idle connection, CPU per delivery,
// ingest-to-client latency) is measured by the program in loadtest/.
package bench
