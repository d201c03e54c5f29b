package nodetest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Producer is an ingest connection.
type Producer struct {
	C  net.Conn
	BR *bufio.Reader
}

// Answer is an ingest ack or error line.
type Answer struct {
	Ack   string `json:"ack"`
	Seq   uint64 `json:"seq"`
	Error string `json:"error"`
	Line  int    `json:"line"`
}

// DialProducer connects to the ingest port at addr; the connection is
// closed when the test ends.
func DialProducer(t testing.TB, addr string) *Producer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ReadTimeout)
	if err != nil {
		t.Fatalf("cannot dial ingest: %s", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &Producer{C: c, BR: bufio.NewReader(c)}
}

// Write sends lines, each followed by a newline.
func (p *Producer) Write(t testing.TB, lines ...string) {
	t.Helper()
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	_ = p.C.SetWriteDeadline(time.Now().Add(ReadTimeout))
	if _, err := p.C.Write(b.Bytes()); err != nil {
		t.Fatalf("cannot write ingest lines: %s", err)
	}
}

// Next reads one answer line, waiting at most timeout.
func (p *Producer) Next(timeout time.Duration) (Answer, error) {
	var a Answer
	_ = p.C.SetReadDeadline(time.Now().Add(timeout))
	line, err := p.BR.ReadBytes('\n')
	if err != nil {
		return a, fmt.Errorf("cannot read ingest answer: %w", err)
	}
	if err := json.Unmarshal(line, &a); err != nil {
		return a, fmt.Errorf("cannot parse ingest answer %q: %w", line, err)
	}
	return a, nil
}

// Answer reads one answer line, failing the test on error.
func (p *Producer) Answer(t testing.TB) Answer {
	t.Helper()
	a, err := p.Next(ReadTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Publish sends one line, which must carry "id", and returns the seq of
// its ack.
func (p *Producer) Publish(t testing.TB, line string) uint64 {
	t.Helper()
	p.Write(t, line)
	a := p.Answer(t)
	if a.Error != "" || a.Ack == "" {
		t.Fatalf("line %s: got answer %+v, want an ack", line, a)
	}
	return a.Seq
}

// lineID numbers the lines of DataLine and AlertLine; tests run in
// parallel.
var lineID atomic.Int64

// DataLine returns an ingest line of type typ ("data_update" or
// "snapshot") with a unique id.
func DataLine(city, typ, data string) string {
	return fmt.Sprintf(`{"id":"l%d","city":%q,"type":%q,"data":%s}`, lineID.Add(1), city, typ, data)
}

// AlertLine returns an alerts ingest line with a unique id.
func AlertLine(city string, sevs ...string) string {
	var b strings.Builder
	for i, s := range sevs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"severity":%q,"message":"m%d"}`, s, i)
	}
	return fmt.Sprintf(`{"id":"l%d","city":%q,"type":"alerts","alerts":[%s]}`, lineID.Add(1), city, b.String())
}
