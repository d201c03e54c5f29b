package gateway

import (
	"github.com/metrocast/metrocast/gateway/ingest"
)

// The node's side of ingest (gateway/ingest serves the TCP port and HTTP
// publish): its settings, the store its lines go to (the bus), and the
// event loops its producers yield to.

// listenIngest listens on the ingest port; Start serves it.
func (s *Server) listenIngest() (*ingest.Server, error) {
	return ingest.Listen(ingest.Config{
		Addr:         s.cfg.IngestAddr,
		MaxLineBytes: s.cfg.IngestMaxLineBytes,
		MaxErrors:    s.cfg.IngestMaxErrors,
		MaxRate:      s.cfg.IngestMaxRate,
		AuthTimeout:  s.cfg.AuthTimeout,
		TokenGrace:   s.cfg.TokenGrace,
		Live:         s.ingestLive,
		Auth:         s.auth,
		Store:        s.bus,
		LoopsWaiting: s.loopsWaiting,
		Logger:       s.cfg.Logger,
	})
}

// ingestLive is the live settings of ingest (Server.live). Safe for
// concurrent use.
func (s *Server) ingestLive() ingest.Live {
	c := s.live.Load()
	return ingest.Live{MaxConns: c.IngestMaxConns, LineTimeout: c.IngestLineTimeout, WriteTimeout: c.IngestWriteTimeout}
}

// loopsWaiting reports whether an event loop has been woken for new frames
// and has not started its fanout yet. Safe for concurrent use.
func (s *Server) loopsWaiting() bool {
	for _, l := range *s.loops.Load() {
		if l.scheduled.Load() {
			return true
		}
	}
	return false
}

// addIngest sets the ingest counters of st from the port's.
func (st *Stats) addIngest(in ingest.Stats) {
	st.IngestConns = in.Conns
	st.IngestFrames = in.Frames
	st.IngestBytes = in.Bytes
	st.IngestErrors = in.Errors
	st.IngestRejected = in.Rejected
	st.IngestAuthFailures = in.AuthFailures
	st.IngestDropped = in.Dropped
	st.IngestTimeouts = in.Timeouts
	st.IngestDuplicates = in.Duplicates
	st.Producers = in.Producers
}
