package main

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/auth"
	"github.com/metrocast/metrocast/gateway/producer"
)

// demoCities are the cities `serve -demo` feeds.
var demoCities = []string{
	"accra", "addis-ababa", "cairo", "casablanca", "dakar", "dar-es-salaam",
	"johannesburg", "kampala", "kinshasa", "lagos", "luanda", "nairobi",
}

// demoTick is how often each city gets a data_update: 12 cities at 4/s, a
// lively wall screen and a trickle for the node.
const demoTick = 250 * time.Millisecond

// metric is one gauge of a demo city: a mean-reverting random walk.
type metric struct {
	group, name string
	v, mean     float64
	step        float64 // standard deviation of one tick's move
	lo, hi      float64 // clamp
	digits      int
}

func (m *metric) next(r *rand.Rand) {
	m.v += (m.mean-m.v)*0.02 + r.NormFloat64()*m.step
	m.v = math.Max(m.lo, math.Min(m.hi, m.v))
}

func (m *metric) value() float64 {
	p := math.Pow(10, float64(m.digits))
	return math.Round(m.v*p) / p
}

// demoCity is the synthetic state of one city.
type demoCity struct {
	name    string
	metrics []*metric
	r       *rand.Rand
}

func newDemoCity(name string) *demoCity {
	h := fnv.New64a()
	h.Write([]byte(name))
	seed := h.Sum64()
	r := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	// Each city gets its own character from its name: a dusty one, a
	// congested one, a river city.
	f := func(k uint) float64 { return 0.6 + float64((seed>>(k*8))&0xff)/255*0.8 }
	c := &demoCity{name: name, r: r}
	add := func(group, name string, mean, step, lo, hi float64, digits int) {
		c.metrics = append(c.metrics, &metric{group: group, name: name, v: mean, mean: mean, step: step, lo: lo, hi: hi, digits: digits})
	}
	add("air_quality", "aqi", 70*f(0), 4, 5, 400, 0)
	add("air_quality", "pm25", 25*f(0), 1.5, 1, 300, 1)
	add("air_quality", "no2", 30*f(1), 1.5, 1, 200, 1)
	add("air_quality", "o3", 40*f(2), 1.5, 1, 200, 1)
	add("traffic", "congestion_pct", 55*f(3), 2.5, 0, 100, 0)
	add("traffic", "avg_speed_kmh", 35/f(3), 1.2, 3, 90, 1)
	add("traffic", "incidents", 3*f(4), 0.3, 0, 40, 0)
	add("water", "river_level_m", 2.5*f(5), 0.05, 0.2, 9, 2)
	add("water", "reservoir_pct", 65*f(6), 0.3, 5, 100, 1)
	add("energy", "grid_load_mw", 900*f(7), 15, 100, 4000, 0)
	add("energy", "renewables_pct", 30*f(1), 0.8, 0, 100, 1)
	add("energy", "frequency_hz", 50, 0.01, 49.5, 50.5, 2)
	return c
}

// state returns the groups named (all of them when groups is empty) with
// their current values.
func (c *demoCity) state(groups ...string) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, m := range c.metrics {
		if len(groups) > 0 && !slices.Contains(groups, m.group) {
			continue
		}
		if out[m.group] == nil {
			out[m.group] = map[string]float64{}
		}
		out[m.group][m.name] = m.value()
	}
	return out
}

// step moves every gauge and returns the groups that changed this tick:
// one or two of the four, as a real feed updates a slice of the state.
func (c *demoCity) step() []string {
	groups := []string{"air_quality", "traffic", "water", "energy"}
	g := groups[c.r.IntN(len(groups))]
	changed := []string{g}
	if c.r.IntN(3) == 0 {
		if h := groups[c.r.IntN(len(groups))]; h != g {
			changed = append(changed, h)
		}
	}
	for _, m := range c.metrics {
		if slices.Contains(changed, m.group) {
			m.next(c.r)
		}
	}
	return changed
}

type demoAlert struct {
	Severity string `json:"severity"`
	Message  string `json:"message"`
}

// alert returns an occasional alert: about one a city every 15 s, of each
// severity, worded from the city's numbers.
func (c *demoCity) alert() []demoAlert {
	if c.r.Float64() >= float64(demoTick)/float64(15*time.Second) {
		return nil
	}
	s := c.state()
	switch x := c.r.Float64(); {
	case x < 0.15:
		msgs := []string{
			fmt.Sprintf("River level %.2f m: flood warning for low-lying districts", s["water"]["river_level_m"]+1.5),
			fmt.Sprintf("AQI %.0f: unhealthy air, limit outdoor activity", s["air_quality"]["aqi"]+90),
			fmt.Sprintf("Grid frequency %.2f Hz: load shedding in 2 zones", s["energy"]["frequency_hz"]-0.4),
		}
		return []demoAlert{{"critical", msgs[c.r.IntN(len(msgs))]}}
	case x < 0.5:
		msgs := []string{
			fmt.Sprintf("Congestion %.0f%% on the ring road", math.Min(99, s["traffic"]["congestion_pct"]+20)),
			fmt.Sprintf("PM2.5 %.1f µg/m³ above the daily guideline", s["air_quality"]["pm25"]+15),
			fmt.Sprintf("Reservoir at %.1f%%: pressure reduced overnight", s["water"]["reservoir_pct"]-20),
		}
		return []demoAlert{{"warning", msgs[c.r.IntN(len(msgs))]}}
	default:
		msgs := []string{
			fmt.Sprintf("%.0f traffic incidents cleared in the last hour", s["traffic"]["incidents"]+2),
			fmt.Sprintf("Renewables at %.1f%% of supply", s["energy"]["renewables_pct"]),
			"Sensor maintenance on the eastern monitoring station",
		}
		return []demoAlert{{"info", msgs[c.r.IntN(len(msgs))]}}
	}
}

// runDemo feeds the demo cities through the node's ingest port, as an
// upstream producer would, until ctx ends: a snapshot and an info alert
// per city, then (after calling seeded) data_updates every demoTick and
// occasional alerts.
func runDemo(ctx context.Context, s *gateway.Server, cfg gateway.Config, log *slog.Logger, seeded func()) error {
	addr := s.IngestAddr().(*net.TCPAddr)
	opts := producer.Options{Logger: log}
	if !cfg.Insecure && !addr.IP.IsLoopback() {
		// An ingest port beyond loopback wants a token with a publish claim.
		opts.Token = func() (string, error) { return demoToken(cfg, "demo-feed", nil, []string{"*"}, time.Hour) }
	}
	dial := addr.AddrPort().String()
	if addr.IP.IsUnspecified() {
		dial = net.JoinHostPort("127.0.0.1", fmt.Sprint(addr.Port))
	}
	p, err := producer.Dial(ctx, dial, opts)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer p.Close()
	cities := make([]*demoCity, len(demoCities))
	for i, name := range demoCities {
		cities[i] = newDemoCity(name)
		if _, err := p.Publish(ctx, name, "snapshot", cities[i].state()); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if _, err := p.Publish(ctx, name, "alerts", []demoAlert{{"info", "Demo feed online"}}); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	seeded()
	t := time.NewTicker(demoTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, c := range cities {
			// Errors are the node stopping or a lost connection: the
			// producer redials; a demo tick is not worth more.
			_, _ = p.Publish(ctx, c.name, "data_update", c.state(c.step()...))
			if a := c.alert(); a != nil {
				_, _ = p.Publish(ctx, c.name, "alerts", a)
			}
		}
	}
}

// demoToken mints a token with the node's HMAC secret, or fails when the
// node has none (public keys only: mint one with the private key).
func demoToken(cfg gateway.Config, sub string, cities, publish []string, ttl time.Duration) (string, error) {
	secret := []byte(cfg.AuthHMACSecret)
	if cfg.AuthHMACSecretFile != "" {
		b, err := os.ReadFile(cfg.AuthHMACSecretFile)
		if err != nil {
			return "", err
		}
		secret = bytes.TrimSpace(b)
	}
	if len(secret) == 0 {
		return "", fmt.Errorf("no HMAC secret to sign a demo token with; mint one with `metrocast token -key …`")
	}
	now := time.Now()
	c := auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			Issuer:    cfg.AuthIssuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Cities:  cities,
		Publish: publish,
	}
	if cfg.AuthAudience != "" {
		c.Audience = jwt.ClaimStrings{cfg.AuthAudience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, &c).SignedString(secret)
}

// dashboardURL is the admin port's dashboard, with a token for every city
// in the fragment (which browsers do not send) when the node has an HMAC
// secret, and none when it is insecure.
func dashboardURL(s *gateway.Server, cfg gateway.Config) (string, error) {
	a := s.AdminAddr().(*net.TCPAddr)
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	u := "http://" + net.JoinHostPort(host, fmt.Sprint(a.Port)) + "/"
	if cfg.Insecure {
		return u, nil
	}
	tok, err := demoToken(cfg, "dashboard", []string{"*"}, nil, 24*time.Hour)
	if err != nil {
		return u, err
	}
	return u + "#token=" + tok, nil
}

// startDemo runs the demo feed, printing the dashboard's URL once the
// cities are seeded, until the returned function is called, which waits
// for the feed to stop.
func startDemo(s *gateway.Server, cfg gateway.Config, log *slog.Logger) (stop func()) {
	// The URL comes once every city is seeded, so the page lists them all.
	seeded := func() {
		u, err := dashboardURL(s, cfg)
		if err != nil {
			log.Warn("demo: cannot mint a dashboard token; open the dashboard with #token=<token>", "err", err)
		}
		fmt.Printf("\ndemo dashboard (the token in the URL fragment, if any, is for every city, 24 h):\n\n  %s\n\n", u)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := runDemo(ctx, s, cfg, log, seeded); err != nil {
			log.Error("demo feed stopped", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
