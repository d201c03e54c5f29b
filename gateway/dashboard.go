package gateway

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
)

// webFiles are the demo dashboard and the browser client, embedded so that
// the binary serves them with nothing beside it. Named one by one: the
// directory also holds tests and node_modules.
//
//go:embed web/index.html web/dashboard.css web/dashboard.js web/metrocast.js web/metrocast.d.ts web/use-city-stream.js web/use-city-stream.d.ts
var webFiles embed.FS

// webRoot is webFiles without the web/ prefix.
var webRoot = func() fs.FS {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic("BUG: embedded web directory: " + err.Error())
	}
	return sub
}()

// clientInfo is the body of /api/client: where the dashboard, served on the
// admin port, finds the WebSocket endpoint.
type clientInfo struct {
	// WSPort is the WebSocket listen port; the page pairs it with the host
	// name it was loaded from.
	WSPort int    `json:"ws_port"`
	WSPath string `json:"ws_path"`
	Epoch  uint64 `json:"epoch"`
	// Insecure: the node needs no token.
	Insecure bool `json:"insecure"`
}

// routeDashboard adds the dashboard (GET /), its files (GET /web/…) and
// /api/client to mux.
func (s *Server) routeDashboard(mux *http.ServeMux) {
	static := http.FileServerFS(webRoot)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		// The page takes its token from the URL fragment, which the
		// browser never sends; keep it out of Referer headers too.
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, webRoot, "index.html")
	})
	mux.Handle("GET /web/", http.StripPrefix("/web/", static))
	mux.HandleFunc("GET /api/client", func(w http.ResponseWriter, _ *http.Request) {
		info := clientInfo{WSPath: s.cfg.Path, Epoch: s.epoch, Insecure: s.cfg.Insecure}
		if a, ok := s.addr.(*net.TCPAddr); ok {
			info.WSPort = a.Port
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&info)
	})
}
