package gateway

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// gnetLogger routes gnet's logs to slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(format string, args ...any) { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Infof(format string, args ...any)  { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Warnf(format string, args ...any)  { g.l.Warn(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Errorf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Fatalf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }

// warnEvery is how often a repeated warning is logged: the counters carry
// the volume, the log says that it happens.
const warnEvery = 10 * time.Second

// throttle lets one of a repeated warning through per period and counts
// those it holds back. The zero value lets everything through; set period.
// Safe for concurrent use.
type throttle struct {
	period  time.Duration
	next    atomic.Int64 // mono time from which the next one may pass
	dropped atomic.Uint64
}

// allow reports whether a warning may be logged at now (mono), and how many
// were held back since the last one that was.
func (t *throttle) allow(now int64) (ok bool, dropped uint64) {
	next := t.next.Load()
	if now < next || !t.next.CompareAndSwap(next, now+int64(t.period)) {
		t.dropped.Add(1)
		return false, 0
	}
	return true, t.dropped.Swap(0)
}

// warn logs msg unless t held it back, adding how many were held back
// since the last one logged. Safe for concurrent use.
func (s *Server) warn(t *throttle, msg string, args ...any) {
	ok, dropped := t.allow(mono())
	if !ok {
		return
	}
	if dropped > 0 {
		args = append(args, "suppressed", dropped)
	}
	s.cfg.Logger.Warn(msg, args...)
}
