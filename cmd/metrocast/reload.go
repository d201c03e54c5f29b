package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/metrocast/metrocast/gateway"
)

// reloadKeysOnHUP reloads the node's auth keys on every SIGHUP until the
// returned stop is called. A failed reload keeps the old keys and is
// logged.
func reloadKeysOnHUP(s *gateway.Server, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				if err := s.ReloadKeys(); err != nil {
					log.Error("cannot reload auth keys; keeping the old ones", "err", err)
				}
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(hup); close(done) }
}
