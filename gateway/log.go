package gateway

import (
	"fmt"
	"log/slog"

	"github.com/metrocast/metrocast/gateway/internal/limit"
)

// gnetLogger routes gnet's logs to slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(format string, args ...any) { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Infof(format string, args ...any)  { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Warnf(format string, args ...any)  { g.l.Warn(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Errorf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Fatalf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }

// warn logs msg unless t held it back, adding how many were held back
// since the last one logged. Safe for concurrent use.
func (s *Server) warn(t *limit.Throttle, msg string, args ...any) {
	t.Warn(s.cfg.Logger, msg, args...)
}
