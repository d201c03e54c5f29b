package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway"
)

// The deployment examples under deploy/ cannot be run here (no Docker, no
// Kubernetes), so these tests keep them from drifting away from the
// binary: every flag, environment variable and config key they set must
// load as `metrocast serve` would load it, and every port, path and metric
// they point at must be the one the node configured that way listens on,
// serves or exposes.

const deployDir = "../../deploy"

// yamlDocs parses every YAML document in path.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %s", path, err)
		}
		docs = append(docs, d)
	}
}

// get walks a parsed YAML value by map keys and list indexes.
func get(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("want a mapping with %q, got %T", k, v)
			}
			if v, ok = m[k]; !ok {
				t.Fatalf("missing key %q", k)
			}
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("want a list with item %d, got %v", k, v)
			}
			v = l[k]
		}
	}
	return v
}

func yamlStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// deployedConfig loads the configuration a node started with args (after
// the binary's name) and env runs with; files maps the config file path
// the deployment uses to the repository's file.
func deployedConfig(t *testing.T, where string, args []string, env map[string]string, files map[string]string) *config {
	t.Helper()
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("%s: command %q, want serve …", where, args)
	}
	for k, v := range env {
		if !strings.HasPrefix(k, "METROCAST_") {
			continue
		}
		c := newConfig("serve")
		if k != "METROCAST_CONFIG" && c.fs.Lookup(flagName(strings.ToLower(strings.TrimPrefix(k, "METROCAST_")))) == nil {
			t.Errorf("%s: %s is not a setting's variable", where, k)
			continue
		}
		if v != "" {
			t.Setenv(k, v)
		}
	}
	c, sf, err := serveConfig(args[1:])
	if err != nil {
		t.Fatalf("%s: %s", where, err)
	}
	file := sf.file
	if file != "" {
		repo, ok := files[file]
		if !ok {
			t.Fatalf("%s: config file %s does not come from the repository", where, file)
		}
		file = repo
	}
	if err := c.load(file); err != nil {
		t.Fatalf("%s: invalid configuration: %s", where, err)
	}
	return c
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %s", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %s", addr, err)
	}
	return n
}

// adminNode is a running node whose admin port answers for the paths and
// metrics the deployments point at.
type adminNode struct{ s *gateway.Server }

func startAdminNode(t *testing.T) adminNode {
	t.Helper()
	s, err := gateway.New(gateway.Config{
		Addr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Loops: 1, Insecure: true,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx, 0)
	})
	return adminNode{s}
}

func (a adminNode) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.s.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// checkAdminPath fails unless the admin port serves path with 200.
func (a adminNode) checkAdminPath(t *testing.T, where, path string) {
	t.Helper()
	if code, _ := a.get(t, path); code != http.StatusOK {
		t.Errorf("%s: admin path %s answers %d", where, path, code)
	}
}

// checkMetric fails unless /metrics exposes the series name.
func (a adminNode) checkMetric(t *testing.T, where, name string) {
	t.Helper()
	_, body := a.get(t, "/metrics")
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `[ {]`).MatchString(body) {
		t.Errorf("%s: metric %s is not exposed", where, name)
	}
}

// dockerCopies maps the image paths the Dockerfile copies the repository's
// files to, to those files.
func dockerCopies(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^COPY (deploy/\S+) (\S+)$`).FindAllStringSubmatch(string(b), -1) {
		out[m[2]] = filepath.Join("../..", m[1])
	}
	return out
}

func TestDeployCompose(t *testing.T) {
	admin := startAdminNode(t)
	dir := filepath.Join(deployDir, "compose")
	docs := yamlDocs(t, filepath.Join(dir, "docker-compose.yml"))
	files := dockerCopies(t, filepath.Join(deployDir, "Dockerfile"))
	services := get(t, docs[0], "services").(map[string]any)
	natsConf, err := os.ReadFile(filepath.Join(dir, "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	natsPort := regexp.MustCompile(`(?m)^port: (\d+)$`).FindSubmatch(natsConf)
	if natsPort == nil {
		t.Fatal("nats.conf: no client port")
	}

	// HAProxy's fixed address, which the nodes must trust for
	// X-Forwarded-For.
	haproxyAddr := netip.MustParseAddr(fmt.Sprint(get(t, services["haproxy"], "networks", "default", "ipv4_address")))

	var node *config
	nodes := 0
	for name, svc := range services {
		if !strings.HasPrefix(name, "metrocast-") {
			continue
		}
		nodes++
		env := map[string]string{}
		for k, v := range get(t, svc, "environment").(map[string]any) {
			env[k] = fmt.Sprint(v)
		}
		c := deployedConfig(t, name, yamlStrings(get(t, svc, "command")), env, files)
		node = c
		for _, u := range strings.Split(c.cluster.URL, ",") {
			host, port, err := net.SplitHostPort(strings.TrimPrefix(u, "nats://"))
			if err != nil || services[host] == nil || port != string(natsPort[1]) {
				t.Errorf("%s: NATS URL %s is not a compose NATS server on port %s", name, u, natsPort[1])
			}
		}
		grace, err := time.ParseDuration(fmt.Sprint(get(t, svc, "stop_grace_period")))
		if err != nil || grace <= c.gw.DrainWindow {
			t.Errorf("%s: stop_grace_period %v must exceed drain_window %s", name, get(t, svc, "stop_grace_period"), c.gw.DrainWindow)
		}
		check := yamlStrings(get(t, svc, "healthcheck", "test"))
		u := check[len(check)-1]
		m := regexp.MustCompile(`^http://127\.0\.0\.1:(\d+)(/\S*)$`).FindStringSubmatch(u)
		if m == nil || m[1] != strconv.Itoa(portOf(t, c.gw.AdminAddr)) {
			t.Errorf("%s: health check %s is not on the admin port (%s)", name, u, c.gw.AdminAddr)
		} else {
			admin.checkAdminPath(t, name+" healthcheck", m[2])
		}
		if !slices.ContainsFunc(c.gw.TrustedProxies, func(p string) bool {
			pf, err := netip.ParsePrefix(p)
			return p == haproxyAddr.String() || err == nil && pf.Contains(haproxyAddr)
		}) {
			t.Errorf("%s: trusted_proxies %v does not hold HAProxy's %s", name, c.gw.TrustedProxies, haproxyAddr)
		}
		if c.cluster.Replicas > 3 {
			t.Errorf("%s: nats_replicas %d, but compose runs 3 NATS servers", name, c.cluster.Replicas)
		}
	}
	if nodes != 3 || node == nil {
		t.Fatalf("%d metrocast services, want 3", nodes)
	}

	// HAProxy: backends on the nodes' ports, health on the admin port.
	cfg, err := os.Open(filepath.Join(dir, "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	wantPort := map[string]int{
		"metrocast_ws":     portOf(t, node.gw.Addr),
		"metrocast_ingest": portOf(t, node.gw.IngestAddr),
	}
	backend, servers, forwardfor := "", 0, false
	sc := bufio.NewScanner(cfg)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0 || strings.HasPrefix(f[0], "#"):
		case f[0] == "backend" || f[0] == "frontend":
			backend = f[1]
		case f[0] == "server":
			host, port, _ := net.SplitHostPort(f[2])
			if services[host] == nil || port != strconv.Itoa(wantPort[backend]) {
				t.Errorf("haproxy.cfg %s: server %s, want a node on port %d", backend, f[2], wantPort[backend])
			}
			servers++
		case f[0] == "default-server":
			for i := range f[:len(f)-1] {
				if f[i] == "port" && f[i+1] != strconv.Itoa(portOf(t, node.gw.AdminAddr)) {
					t.Errorf("haproxy.cfg %s: checks port %s, admin port is %s", backend, f[i+1], node.gw.AdminAddr)
				}
			}
		case len(f) >= 2 && f[0] == "option" && f[1] == "forwardfor":
			forwardfor = backend == "wss"
		case len(f) >= 4 && f[0] == "option" && f[1] == "httpchk":
			admin.checkAdminPath(t, "haproxy.cfg "+backend, f[3])
		case len(f) >= 4 && f[0] == "acl" && f[2] == "path":
			for _, path := range f[3:] {
				if path != node.gw.Path && path != codec.SSEPath && path != codec.HistoryPath {
					t.Errorf("haproxy.cfg: acl on path %s, the client paths are %s, %s and %s", path, node.gw.Path, codec.SSEPath, codec.HistoryPath)
				}
			}
		}
	}
	if servers != 6 {
		t.Errorf("haproxy.cfg: %d servers, want each of 3 nodes in 2 backends", servers)
	}
	if !forwardfor {
		t.Error("haproxy.cfg: the wss frontend does not send X-Forwarded-For (option forwardfor)")
	}
}

// helmTool returns the helm that make test built into bin/tools
// (METROCAST_HELM), or one on PATH.
func helmTool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("METROCAST_HELM"); p != "" {
		return p
	}
	return needTool(t, "helm", "make deps builds it into bin/tools")
}

const chartDir = deployDir + "/helm/metrocast"

// helm runs helm with args and returns its stdout, failing the test on an
// error unless wantErr, when it returns stderr instead.
func helm(t *testing.T, wantErr bool, args ...string) string {
	t.Helper()
	cmd := exec.Command(helmTool(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	switch {
	case wantErr && err == nil:
		t.Fatalf("helm %s: no error", strings.Join(args, " "))
	case wantErr:
		return stderr.String()
	case err != nil:
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// helmObjects renders the chart with the values given and returns its
// objects by kind.
func helmObjects(t *testing.T, set ...string) map[string][]map[string]any {
	t.Helper()
	args := []string{"template", "rel", chartDir}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out := map[string][]map[string]any{}
	dec := yaml.NewDecoder(strings.NewReader(helm(t, false, args...)))
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template: %v", err)
		}
		if d != nil {
			out[fmt.Sprint(d["kind"])] = append(out[fmt.Sprint(d["kind"])], d)
		}
	}
	return out
}

// TestDeployHelm: helm lint and helm template pass on the chart, it refuses
// to render without an image repository or a secret, and the objects it
// renders hold together with the binary: the config loads as serve loads
// it, the ports, probes, paths, metrics and time-outs are the node's.
func TestDeployHelm(t *testing.T) {
	helm(t, false, "lint", "--strict", chartDir, "--set", "image.repository=registry.example.com/metrocast",
		"--set", "auth.existingSecret=metrocast-auth")
	for want, set := range map[string][]string{
		"image.repository": {"template", "rel", chartDir, "--set", "auth.existingSecret=s"},
		"auth.hmacSecret":  {"template", "rel", chartDir, "--set", "image.repository=r"},
	} {
		if msg := helm(t, true, set...); !strings.Contains(msg, want) {
			t.Errorf("helm %v: %s, want it to name %s", set, msg, want)
		}
	}
	if objs := helmObjects(t, "image.repository=r", "auth.existingSecret=mine"); len(objs["Secret"]) != 0 ||
		get(t, objs["Deployment"][0], "spec", "template", "spec", "volumes", 1, "secret", "secretName") != "mine" {
		t.Error("auth.existingSecret: the chart still makes a Secret, or does not mount the one named")
	}

	admin := startAdminNode(t)
	objs := helmObjects(t, "image.repository=registry.example.com/metrocast", "image.tag=v1.2.3",
		"auth.hmacSecret=0123456789abcdef0123456789abcdef", "auth.adminToken=admin",
		"ingress.enabled=true", "serviceMonitor.enabled=true", "autoscaling.enabled=true")
	for _, kind := range []string{"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
		"HorizontalPodAutoscaler", "ServiceMonitor", "Ingress"} {
		if len(objs[kind]) == 0 {
			t.Fatalf("no %s", kind)
		}
	}
	cm := get(t, objs["ConfigMap"][0], "data", "metrocast.yaml").(string)
	cmFile := filepath.Join(t.TempDir(), "metrocast.yaml")
	if err := os.WriteFile(cmFile, []byte(cm), 0o600); err != nil {
		t.Fatal(err)
	}
	dep := objs["Deployment"][0]
	pod := get(t, dep, "spec", "template", "spec")
	ctr := get(t, pod, "containers", 0)
	if img := get(t, ctr, "image"); img != "registry.example.com/metrocast:v1.2.3" {
		t.Errorf("image %v, want image.repository:image.tag", img)
	}
	mounts := map[string]string{} // volume → mount path
	for _, m := range get(t, ctr, "volumeMounts").([]any) {
		mounts[fmt.Sprint(get(t, m, "name"))] = fmt.Sprint(get(t, m, "mountPath"))
	}
	env := map[string]string{}
	for _, e := range get(t, ctr, "env").([]any) {
		// Values from the downward API are set at run time; the name
		// must still be a setting's.
		env[fmt.Sprint(get(t, e, "name"))] = fmt.Sprint(e.(map[string]any)["value"])
		if _, ok := e.(map[string]any)["value"]; !ok {
			env[fmt.Sprint(get(t, e, "name"))] = ""
		}
	}
	c := deployedConfig(t, "deployment.yaml", yamlStrings(get(t, ctr, "args")), env,
		map[string]string{mounts["config"] + "/metrocast.yaml": cmFile})

	// The auth files the config names are the Secret's, where it is mounted.
	secret := get(t, objs["Secret"][0], "data").(map[string]any)
	for key, path := range map[string]string{"auth_hmac_secret_file": c.gw.AuthHMACSecretFile, "admin_token_file": c.gw.AdminTokenFile} {
		dir, name := filepath.Split(path)
		if filepath.Clean(dir) != mounts["auth"] || secret[name] == nil {
			t.Errorf("%s %s is not a key of the Secret mounted at %s", key, path, mounts["auth"])
		}
	}

	ports := map[string]int{}
	for _, p := range get(t, ctr, "ports").([]any) {
		ports[fmt.Sprint(get(t, p, "name"))] = get(t, p, "containerPort").(int)
	}
	for name, addr := range map[string]string{"ws": c.gw.Addr, "ingest": c.gw.IngestAddr, "admin": c.gw.AdminAddr} {
		if ports[name] != portOf(t, addr) {
			t.Errorf("containerPort %s = %d, the node listens on %s", name, ports[name], addr)
		}
		if host, _, _ := net.SplitHostPort(addr); host == "127.0.0.1" || host == "localhost" {
			t.Errorf("%s listens on %s: unreachable from outside the pod", name, addr)
		}
	}
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		port := fmt.Sprint(get(t, ctr, probe, "httpGet", "port"))
		if port != "admin" {
			t.Errorf("%s on port %s, want the admin port", probe, port)
		}
		admin.checkAdminPath(t, probe, fmt.Sprint(get(t, ctr, probe, "httpGet", "path")))
	}
	if got := fmt.Sprint(get(t, ctr, "readinessProbe", "httpGet", "path")); got != "/readyz" {
		t.Errorf("readiness on %s, want /readyz (503 while draining or cut off from NATS)", got)
	}
	grace := time.Duration(get(t, pod, "terminationGracePeriodSeconds").(int)) * time.Second
	if grace <= c.gw.DrainWindow+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %s must exceed drain_window %s with room to spare", grace, c.gw.DrainWindow)
	}
	if cmd := strings.Join(yamlStrings(get(t, ctr, "lifecycle", "preStop", "exec", "command")), " "); !strings.Contains(cmd, "kill -TERM 1") {
		t.Errorf("preStop %q does not start the drain (SIGTERM)", cmd)
	}
	if c.cluster.URL == "" {
		t.Error("config: nats_url unset: the pods would not share a stream")
	}
	// The image's user (deploy/Dockerfile), not root.
	df, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	user := regexp.MustCompile(`(?m)^USER (\d+)`).FindSubmatch(df)
	if user == nil || string(user[1]) == "0" || fmt.Sprint(get(t, pod, "securityContext", "runAsUser")) != string(user[1]) {
		t.Errorf("runAsUser %v, Dockerfile USER %s: want the image's non-root user", get(t, pod, "securityContext", "runAsUser"), user)
	}

	internal := ""
	for _, svc := range objs["Service"] {
		for _, p := range get(t, svc, "spec", "ports").([]any) {
			if target := fmt.Sprint(get(t, p, "targetPort")); ports[target] == 0 {
				t.Errorf("Service %v: targetPort %s is not a container port", get(t, svc, "metadata", "name"), target)
			} else if target == "admin" {
				internal = fmt.Sprint(get(t, svc, "metadata", "name"))
			}
		}
	}
	for _, m := range get(t, objs["HorizontalPodAutoscaler"][0], "spec", "metrics").([]any) {
		admin.checkMetric(t, "hpa.yaml", fmt.Sprint(get(t, m, "pods", "metric", "name")))
	}
	sm := objs["ServiceMonitor"][0]
	if port := get(t, sm, "spec", "endpoints", 0, "port"); port != "admin" {
		t.Errorf("ServiceMonitor scrapes port %v, want admin", port)
	}
	admin.checkAdminPath(t, "ServiceMonitor", fmt.Sprint(get(t, sm, "spec", "endpoints", 0, "path")))
	if internal == "" {
		t.Error("no Service exposes the admin port for the ServiceMonitor")
	}
	ing := objs["Ingress"][0]
	paths := get(t, ing, "spec", "rules", 0, "http", "paths").([]any)
	for i, want := range []string{c.gw.Path, codec.SSEPath, codec.HistoryPath} {
		if i >= len(paths) || get(t, paths[i], "path") != want || get(t, paths[i], "backend", "service", "port", "name") != "ws" {
			t.Errorf("Ingress paths %v, want %s, %s and %s on the ws port only", paths, c.gw.Path, codec.SSEPath, codec.HistoryPath)
			break
		}
	}
	if len(paths) != 3 {
		t.Errorf("Ingress paths %v, want the client paths only", paths)
	}
	// ingress-nginx closes a WebSocket quiet for proxy-read-timeout (60s by
	// default): it must outlast the node's own idle time-out.
	ann := get(t, ing, "metadata", "annotations").(map[string]any)
	for _, k := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
		if s, err := strconv.Atoi(fmt.Sprint(ann[k])); err != nil || time.Duration(s)*time.Second <= c.gw.IdleTimeout {
			t.Errorf("Ingress %s %v: want more than idle_timeout %s", k, ann[k], c.gw.IdleTimeout)
		}
	}
}

// TestDeployDockerfile: the image builds the binary with the version it is
// given, runs as a user that is not root, and its build context keeps out
// what is built, installed or secret but not the sources.
func TestDeployDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	if !strings.Contains(df, "ARG VERSION") || !strings.Contains(df, "-X main.version=${VERSION}") {
		t.Error("Dockerfile: the version does not come from a build argument into main.version")
	}
	if u := regexp.MustCompile(`(?m)^USER (\S+)`).FindAllStringSubmatch(df, -1); len(u) == 0 || strings.HasPrefix(u[len(u)-1][1], "0") || strings.HasPrefix(u[len(u)-1][1], "root") {
		t.Errorf("Dockerfile: USER %v, want one that is not root", u)
	}
	ig, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	ignored := map[string]bool{}
	for _, l := range strings.Split(string(ig), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			ignored[l] = true
		}
	}
	for _, p := range []string{".git", "bin", "**/node_modules", "deploy/compose/hmac-secret", "deploy/compose/certs"} {
		if !ignored[p] {
			t.Errorf("Dockerfile.dockerignore does not keep out %s", p)
		}
	}
	for p := range ignored {
		for _, need := range []string{"go.mod", "go.sum", "cmd", "gateway", "codec", "deploy", "deploy/metrocast.yaml"} {
			if p == need {
				t.Errorf("Dockerfile.dockerignore keeps out %s, which the build needs", p)
			}
		}
	}
}

func TestDeploySystemd(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "systemd", "metrocast.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			unit[k] = v
		}
	}
	args := strings.Fields(unit["ExecStart"])
	if len(args) < 2 || filepath.Base(args[0]) != "metrocast" {
		t.Fatalf("ExecStart %q", unit["ExecStart"])
	}
	c := deployedConfig(t, "metrocast.service", args[1:], nil,
		map[string]string{"/etc/metrocast/metrocast.yaml": filepath.Join(deployDir, "metrocast.yaml")})
	stop, err := time.ParseDuration(unit["TimeoutStopSec"])
	if err != nil || stop <= c.gw.DrainWindow {
		t.Errorf("TimeoutStopSec %q must exceed drain_window %s", unit["TimeoutStopSec"], c.gw.DrainWindow)
	}
	if n, err := strconv.Atoi(unit["LimitNOFILE"]); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE %q: want room for tens of thousands of connections", unit["LimitNOFILE"])
	}

	// The service's own user (DynamicUser) cannot read a root-only secret:
	// it gets a copy as a credential, the one the node reads, and a step of
	// the set-up creates the secret it is copied from.
	if unit["DynamicUser"] != "yes" {
		t.Errorf("DynamicUser %q, want yes", unit["DynamicUser"])
	}
	name, src, _ := strings.Cut(unit["LoadCredential"], ":")
	if want := "METROCAST_AUTH_HMAC_SECRET_FILE=%d/" + name; name == "" || unit["Environment"] != want {
		t.Errorf("LoadCredential %q, Environment %q: want the secret as a credential, and %s", unit["LoadCredential"], unit["Environment"], want)
	}
	if !strings.Contains(string(b), "> "+src+")") {
		t.Errorf("no set-up step creates %s, the secret LoadCredential copies", src)
	}
	c = deployedConfig(t, "metrocast.service", args[1:], map[string]string{"METROCAST_AUTH_HMAC_SECRET_FILE": "/run/credentials/metrocast.service/" + name},
		map[string]string{"/etc/metrocast/metrocast.yaml": filepath.Join(deployDir, "metrocast.yaml")})
	if c.from["auth_hmac_secret_file"] != "METROCAST_AUTH_HMAC_SECRET_FILE" {
		t.Errorf("auth_hmac_secret_file comes from %s, want the credential's variable", c.from["auth_hmac_secret_file"])
	}

	// systemd's own check of the unit (Debian has systemd-analyze), with
	// ExecStart pointing at a binary that exists here.
	analyze := needTool(t, "systemd-analyze", "apt-get install -y systemd")
	copy := filepath.Join(t.TempDir(), "metrocast.service")
	text := strings.ReplaceAll(string(b), args[0], "/bin/true")
	if err := os.WriteFile(copy, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", copy).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDeploySysctl checks that every setting of deploy/sysctl.conf says
// why it is there (a comment right above it or its group).
func TestDeploySysctl(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "sysctl.conf"))
	if err != nil {
		t.Fatal(err)
	}
	prev, settings := "", 0
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			k, _, ok := strings.Cut(line, "=")
			if !ok || !regexp.MustCompile(`^[a-z0-9_.-]+$`).MatchString(strings.TrimSpace(k)) {
				t.Errorf("sysctl.conf:%d: %q is not key = value", i+1, line)
			}
			if prev == "" {
				t.Errorf("sysctl.conf:%d: %s has no comment saying why", i+1, k)
			}
			settings++
		}
		if line == "" {
			prev = ""
		} else {
			prev = line
		}
	}
	if settings == 0 {
		t.Fatal("sysctl.conf sets nothing")
	}
}

// needTool returns the path of an external program a test runs. Plain go
// test skips without it; make test, which installs it, sets
// METROCAST_REQUIRE_TOOLS so that a missing one fails instead.
func needTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("METROCAST_REQUIRE_TOOLS") != "" {
		t.Fatalf("%s is not installed (%s)", name, install)
	}
	t.Skipf("%s is not installed (%s; make test does)", name, install)
	return ""
}

// TestDeployComposeHAProxy: HAProxy itself checks haproxy.cfg (with a
// certificate made here in place of certs/metrocast.pem); the nodes are
// found again through Docker's DNS after they are recreated; ingest is
// bound to a private address and published on the host's loopback only.
func TestDeployComposeHAProxy(t *testing.T) {
	dir := filepath.Join(deployDir, "compose")
	b, err := os.ReadFile(filepath.Join(dir, "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	resolvers := regexp.MustCompile(`(?m)^resolvers (\S+)$`).FindStringSubmatch(text)
	if resolvers == nil {
		t.Fatal("haproxy.cfg: no resolvers section: a recreated node (new address) would not be found again")
	}
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "default-server" &&
			!strings.Contains(line, " resolvers "+resolvers[1]+" ") {
			t.Errorf("haproxy.cfg: %q does not resolve the nodes with %s", strings.TrimSpace(line), resolvers[1])
		}
	}
	m := regexp.MustCompile(`(?s)frontend ingest\n.*?\n  bind (\S+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("haproxy.cfg: no ingest frontend")
	}
	host, _, err := net.SplitHostPort(m[1])
	if ip, perr := netip.ParseAddr(host); err != nil || perr != nil || !ip.IsPrivate() && !ip.IsLoopback() {
		t.Errorf("haproxy.cfg: ingest bound to %s, want a private address", m[1])
	}
	services := get(t, yamlDocs(t, filepath.Join(dir, "docker-compose.yml"))[0], "services").(map[string]any)
	for _, p := range yamlStrings(get(t, services["haproxy"], "ports")) {
		if strings.HasSuffix(p, ":7070") && !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("docker-compose.yml: haproxy publishes ingest as %q, want the host's loopback only", p)
		}
	}

	haproxy := needTool(t, "haproxy", "apt-get install -y haproxy")
	tmp := t.TempDir()
	pem := filepath.Join(tmp, "metrocast.pem")
	if err := os.WriteFile(pem, selfSignedPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	const crt = "/usr/local/etc/haproxy/certs/metrocast.pem"
	if !strings.Contains(text, crt) {
		t.Fatalf("haproxy.cfg: no certificate at %s (docker-compose.yml mounts certs/ there)", crt)
	}
	cfg := filepath.Join(tmp, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(text, crt, pem)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(haproxy, "-c", "-f", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Configuration file is valid") {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	// The node names resolve on the compose network only.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "[WARNING]") && !strings.Contains(line, "could not resolve address 'metrocast-") {
			t.Errorf("haproxy -c: %s", line)
		}
	}
}

// selfSignedPEM returns a certificate for localhost and its key, in one
// PEM file as HAProxy wants them.
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})...)
}
