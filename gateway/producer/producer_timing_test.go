package producer

import (
	"context"
	"strings"
	"testing"
)

func benchLine() []byte {
	return []byte(`{"city":"nairobi","type":"data_update","data":{"temp":21.5,"note":"` + strings.Repeat("x", 100) + `"}}`)
}

func benchProducer(b *testing.B, opts Options) *Producer {
	b.Helper()
	g := (&fakeGateway{}).start(b)
	p, err := Dial(context.Background(), g.addr(), opts)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkSendAsync measures pipelined sends, answers included: Close waits
// for every one.
func BenchmarkSendAsync(b *testing.B) {
	p := benchProducer(b, Options{})
	line := benchLine()
	ctx := context.Background()
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		if err := p.SendAsync(ctx, line, nil); err != nil {
			b.Fatal(err)
		}
	}
	_ = p.Close()
}

// BenchmarkSend measures one round trip per message.
func BenchmarkSend(b *testing.B) {
	p := benchProducer(b, Options{})
	defer p.Close()
	line := benchLine()
	ctx := context.Background()
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Send(ctx, line); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseLine(b *testing.B) {
	line := benchLine()
	newID := func() string { return "gen-1" }
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseLine(line, DefaultMaxLineBytes, newID); err != nil {
			b.Fatal(err)
		}
	}
}
