package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway/ingest"
)

// TestIngestFlood floods the ingest port from 32 producers in another
// process, sending as fast as TCP allows, while one more sends one line at
// a time and waits for its ack, and a client follows its city. The light
// producer's lines must not wait behind the flood: between one of them
// arriving and its ack, the node stores about a turn of other lines, plus
// what it stores until Go's network poller notices the line (when a
// processor idles, at worst every 10 ms); without turns it stored tens of
// thousands (every flooder's scheduler time slice). The flooders must be
// served alike, and the client gets every frame.
func TestIngestFlood(t *testing.T) {
	s := startServer(t, Config{})
	c := dialGobwas(t, wsURL(s, "cities=tf-light"))
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")

	const flooders = 32
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodProcess$")
	cmd.Env = append(os.Environ(), floodEnv+"="+s.IngestAddr().String(), fmt.Sprintf("%s_N=%d", floodEnv, flooders))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close() // the flooders stop
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(readTimeout):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	// The flood is on once every flooder has been served. The bound is
	// for starting the other process (a test binary, seconds under -race
	// on a loaded machine) and its 32 connections.
	waitFor(t, 6*readTimeout, func() bool {
		n := 0
		for _, p := range s.Stats().Producers {
			if p.Lines > 2*ingest.TurnLines {
				n++
			}
		}
		return n == flooders
	})

	read := func() map[string]uint64 {
		m := map[string]uint64{}
		for _, p := range s.Stats().Producers {
			m[p.Addr] = p.Lines
		}
		return m
	}
	start := read()

	p := dialProducer(t, s)
	const lines = 40
	between := make([]uint64, 0, lines)
	for i := range lines {
		before := s.Stats().IngestFrames
		p.Publish(t, dataLine("tf-light", "data_update", fmt.Sprintf(`{"i":%d}`, i)))
		between = append(between, s.Stats().IngestFrames-before-1)
	}
	for i := range lines {
		m := readType(t, c, "data_update")
		if m.Seq != uint64(i+1) {
			t.Fatalf("frame %d has seq %d, want %d", i, m.Seq, i+1)
		}
	}
	slices.Sort(between)
	// Four rounds of the flood's turns.
	if med, most := between[lines/2], uint64(4*flooders*ingest.TurnLines); med > most {
		t.Errorf("median %d lines stored between a light producer's line arriving and its ack (all: %v), want ≤ %d",
			med, between, most)
	}

	var least, most uint64
	for addr, n := range read() {
		from, ok := start[addr]
		if !ok {
			continue // the light producer
		}
		if n -= from; least == 0 || n < least {
			least = n
		}
		most = max(most, n)
	}
	// Half the most, give or take a turn (a turn is the unit served).
	if 2*(least+ingest.TurnLines) < most {
		t.Errorf("flooders read %d to %d lines meanwhile: want each at least half the most, give or take %d", least, most, ingest.TurnLines)
	}
}

// floodEnv names the ingest address TestFloodProcess floods.
const floodEnv = "METROCAST_TEST_FLOOD"

// TestFloodProcess is TestIngestFlood's other process, and skips
// otherwise: it sends valid lines from $METROCAST_TEST_FLOOD_N producers to
// the ingest port at $METROCAST_TEST_FLOOD, as fast as TCP allows, until its
// stdin closes.
func TestFloodProcess(t *testing.T) {
	addr := os.Getenv(floodEnv)
	if addr == "" {
		t.Skip("the flooding process of TestIngestFlood")
	}
	n, _ := strconv.Atoi(os.Getenv(floodEnv + "_N"))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		fc, err := net.DialTimeout("tcp", addr, readTimeout)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for n := 0; b.Len() < 64<<10; n++ {
			fmt.Fprintf(&b, `{"city":"tf-flood-%d","type":"data_update","data":{"n":%d,"pad":"0123456789abcdef0123456789abcdef"}}`+"\n", i, n)
		}
		wg.Go(func() {
			defer fc.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = fc.SetWriteDeadline(time.Now().Add(readTimeout))
				if _, err := fc.Write(b.Bytes()); err != nil {
					return
				}
			}
		})
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	close(stop)
	wg.Wait()
}
