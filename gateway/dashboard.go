package gateway

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"strings"

	"github.com/metrocast/metrocast/gateway/auth"
)

// webFiles are the demo dashboard and the browser client, embedded so that
// the binary serves them with nothing beside it. Named one by one: the
// directory also holds tests and node_modules.
//
//go:embed web/index.html web/dashboard.css web/dashboard.js web/dashboard-format.js web/metrocast.js web/metrocast.d.ts web/use-city-stream.js web/use-city-stream.d.ts
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

// dashboardCSP lets the page load only its own files and talk only to its
// origin and the gateway's endpoints: WebSocket, and the Server-Sent Events
// stream it falls back to, both on another port (so any ws:/wss:, and
// http:/https:).
const dashboardCSP = "default-src 'self'; connect-src 'self' ws: wss: http: https:; img-src 'self' data:; " +
	"style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

// dashboardCities bounds /api/cities, as /api/stats's ?limit= would.
const dashboardCities = 1000

// routeDashboard adds the dashboard (GET /), its files (GET /web/…),
// /api/client and /api/cities to mux. The page and its files are public:
// they are the same for everyone and hold no data. What the page then
// fetches goes through viewer.
func (s *Server) routeDashboard(mux *http.ServeMux, a *admin) {
	static := http.StripPrefix("/web/", http.FileServerFS(webRoot))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		// The page takes its token from the URL fragment, which the
		// browser never sends; keep it out of Referer headers too.
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, webRoot, "index.html")
	})
	mux.HandleFunc("GET /web/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if strings.HasSuffix(r.URL.Path, ".d.ts") {
			// Go's table says .ts is an MPEG transport stream.
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		static.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /api/client", a.viewer(func(w http.ResponseWriter, _ *http.Request, _ *auth.Grant) {
		info := clientInfo{WSPath: s.cfg.Path, Epoch: s.epoch, Insecure: s.cfg.Insecure}
		if a, ok := s.addr.(*net.TCPAddr); ok {
			info.WSPort = a.Port
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&info)
	}))
	mux.HandleFunc("GET /api/cities", a.viewer(func(w http.ResponseWriter, _ *http.Request, g *auth.Grant) {
		resp := struct {
			Cities []string `json:"cities"`
		}{Cities: []string{}}
		for _, cc := range s.busiest(dashboardCities) {
			if g == nil || g.Allows(cc.c.name) {
				resp.Cities = append(resp.Cities, cc.c.name)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&resp)
	}))
}

// viewer wraps a route of the dashboard's data. On a port that is not
// open the request carries the admin token or, on a node with keys, a
// client token (the one the dashboard connects with), which the handler
// gets to narrow its answer to the token's cities (nil: every city). An
// insecure node's data is anyone's on its WebSocket port already, so
// there it needs neither.
func (a *admin) viewer(h func(http.ResponseWriter, *http.Request, *auth.Grant)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		au := a.s.auth
		if a.open || au == nil || a.isAdmin(r) {
			h(w, r, nil)
			return
		}
		tok, _ := auth.BearerToken(r)
		g, err := au.ClientGrant(tok)
		if err != nil {
			a.refuse(w, r, "a client token is required: Authorization: Bearer <jwt>")
			return
		}
		h(w, r, g)
	}
}
