package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestSmoke(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	ws, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/ws", s.Addr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth","token":"x","cityId":"nairobi"}`))
	for i := 0; i < 2; i++ {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("got %s", m)
	}
	pc, err := net.Dial("tcp", s.IngestAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(pc, `{"city":"nairobi","type":"data_update","data":{"pm25":12},"id":"a"}`+"\n")
	fmt.Fprintf(pc, `{"city":"nairobi","type":"alerts","alerts":[{"severity":"critical","message":"smoke"}]}`+"\n")
	fmt.Fprintf(pc, `{"city":"nairobi","type":"bad"}`+"\n")
	br := bufio.NewReader(pc)
	for i := 0; i < 2; i++ {
		l, _ := br.ReadString('\n')
		t.Logf("ingest: %s", l)
	}
	ws.SetReadDeadline(time.Now().Add(2 * time.Second))
	for i := 0; i < 2; i++ {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("got %s", m)
	}
	ws2, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/ws?cities=nairobi&since=0", s.Addr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		_, m, err := ws2.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("ws2 got %s", m)
	}
	t.Logf("%+v", s.Stats())
}
