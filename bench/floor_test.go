package main

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// BenchmarkLoopbackWriteFloor is this machine's loopback floor, the least
// one delivery can cost: the sender's CPU for a write of one 130-byte frame
// (frames=1) and a writev of 8 (frames=8) to thousands of sockets that
// another thread drains. Run it beside the fanout benchmarks and compare
// their cpu-ns/delivery with its cpu-ns/frame:
//
//	go test -run '^$' -bench 'Fanout|LoopbackWriteFloor' ./gateway/ ./bench/
func BenchmarkLoopbackWriteFloor(b *testing.B) {
	n := floorSockets
	if testing.Short() {
		n = 200
	}
	f, err := newFloorFixture(n)
	if err != nil {
		b.Fatal(err)
	}
	defer f.close()
	if _, err := f.writes(2*n, 1); err != nil {
		b.Fatal(err)
	}
	for _, batch := range []int{1, floorBatch} {
		b.Run(fmt.Sprintf("sockets=%d/frames=%d", n, batch), func(b *testing.B) {
			b.ReportAllocs()
			eagain := f.eagain.Load()
			cpu, err := f.writes(b.N, batch)
			if err != nil {
				b.Fatal(err)
			}
			ns := float64(cpu.Nanoseconds())
			b.ReportMetric(ns/float64(b.N), "cpu-ns/write")
			b.ReportMetric(ns/float64(b.N*batch), "cpu-ns/frame")
			if d := f.eagain.Load() - eagain; d > 0 {
				b.Logf("%d writes met a full socket (the drainer fell behind)", d)
			}
		})
	}
}

func TestFloorFrame(t *testing.T) {
	if b := floorFrame(); len(b) != floorFrameBytes || b[0] != 0x81 || b[1] != 126 {
		t.Errorf("floor frame of %d bytes, header % x: want %d, a text frame with a 16-bit length", len(b), b[:2], floorFrameBytes)
	}
}

// TestMeasureFloor measures a small floor: every pass must have a positive
// cost, and a frame in a writev of 8 cost less than a frame written alone
// (a system call and a wake-up shared by 8).
func TestMeasureFloor(t *testing.T) {
	f, err := measureFloor(100, 2000, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.WritePasses) != 3 || len(f.WritevPasses) != 3 || f.Sockets != 100 || f.FrameBytes != floorFrameBytes {
		t.Fatalf("floor %+v: want 3 passes of each over 100 sockets", f)
	}
	if f.WriteNs <= 0 || f.perFrame() <= 0 || f.perFrame() >= f.WriteNs {
		t.Errorf("floor %+v: want 0 < a frame of a writev < a write", f)
	}
}

// TestMain lets this test binary be a paced floor's reader (floorReader).
func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(readerEnv); ok {
		os.Exit(floorReader(spec))
	}
	os.Exit(m.Run())
}

// TestMeasurePacedFloor measures a small floor at a load's pace, its
// reader a process of its own: every pass costs something, every socket
// was written (the reader kept up), and the reader ends with the fixture.
func TestMeasurePacedFloor(t *testing.T) {
	f, err := newPacedFixture(120)
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.measure(pace{conns: 120, cities: 3, rate: 50}, 100*time.Millisecond, 200*time.Millisecond, 2)
	if err != nil {
		f.close()
		t.Fatal(err)
	}
	if len(res.Passes) != 2 || res.WriteNs <= 0 || res.EAGAIN != 0 || res.Sockets != 120 || res.Cities != 3 {
		t.Errorf("paced floor %+v: want 2 passes, a positive cost, no full socket", res)
	}
	f.close()
	if st := f.reader.ProcessState; st == nil || !st.Success() {
		t.Errorf("the reader ended with %v: want exit status 0", st)
	}
}
