package gateway

// liveSettings are the settings Server.Reload changes on a running server,
// by config key. This is the reload hook: a setting joins by an entry here
// and by being read where a change reaches it (a loop's cfg, refreshed each
// housekeeping pass, or Server.live), never from a copy taken at start-up.
// The other settings take a restart.
var liveSettings = [...]struct {
	key   string
	apply func(dst, src *Config)
}{
	{"max_message_bytes", func(d, s *Config) { d.MaxMessageBytes = s.MaxMessageBytes }},
	{"max_subscriptions", func(d, s *Config) { d.MaxSubscriptions = s.MaxSubscriptions }},
	{"max_client_errors", func(d, s *Config) { d.MaxClientErrors = s.MaxClientErrors }},
	{"max_backlog_bytes", func(d, s *Config) { d.MaxBacklogBytes = s.MaxBacklogBytes }},
	{"slow_timeout", func(d, s *Config) { d.SlowTimeout = s.SlowTimeout }},
	{"socket_send_buffer", func(d, s *Config) { d.SocketSendBuffer = s.SocketSendBuffer }},
	{"ping_interval", func(d, s *Config) { d.PingInterval = s.PingInterval }},
	{"idle_timeout", func(d, s *Config) { d.IdleTimeout = s.IdleTimeout }},
	{"handshake_timeout", func(d, s *Config) { d.HandshakeTimeout = s.HandshakeTimeout }},
	{"frame_timeout", func(d, s *Config) { d.FrameTimeout = s.FrameTimeout }},
	{"ingest_max_conns", func(d, s *Config) { d.IngestMaxConns = s.IngestMaxConns }},
	{"ingest_write_timeout", func(d, s *Config) { d.IngestWriteTimeout = s.IngestWriteTimeout }},
	{"ingest_line_timeout", func(d, s *Config) { d.IngestLineTimeout = s.IngestLineTimeout }},
	{"drain_window", func(d, s *Config) { d.DrainWindow = s.DrainWindow }},
	{"city_idle_ttl", func(d, s *Config) { d.CityIdleTTL = s.CityIdleTTL }},
}

// LiveKeys returns the config keys that Server.Reload applies to a running
// server.
func LiveKeys() []string {
	keys := make([]string, len(liveSettings))
	for i, ls := range liveSettings {
		keys[i] = ls.key
	}
	return keys
}

// Reload applies the live settings of next (LiveKeys) to the running
// server and ignores the others, which take a restart. next is completed
// with WithDefaults; the running config with those settings applied must
// pass Validate, or nothing changes. Event loops apply the change at once (a housekeeping
// pass is scheduled), producers at their next write or connection. Safe
// for concurrent use.
func (s *Server) Reload(next Config) error {
	// Only the live keys of next matter: the merge below is what must be
	// valid (next alone may lack what only start-up needs, such as keys).
	next = next.WithDefaults()
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg := *s.live.Load()
	for _, ls := range liveSettings {
		ls.apply(&cfg, &next)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.live.Store(&cfg)
	s.housekeepAll()
	return nil
}
