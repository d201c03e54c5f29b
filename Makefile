# metrocast — see README.md.
GO        ?= go
BIN       ?= bin/metrocast
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# helm for the chart's checks in `make test` (deploy/helm), built once.
HELM_VERSION := v4.3.2
HELM      := bin/tools/helm-$(HELM_VERSION)/helm
# Packages with concurrency run under the race detector in `make test`.
RACE_PKGS := ./gateway/... ./codec/...
# The load harness has goroutines per connection and a progress reader.
RACE_PKGS += ./loadtest/

.PHONY: all build run demo test test-web test-short fuzz bench lint clean k6-check \
	deps apt-deps node-check web-pack

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/metrocast

# One node on embedded defaults: WebSocket on :8080/ws, ingest on 127.0.0.1:7070,
# with a demo HMAC secret made on first use (for demos only), and a token for it.
DEMO_SECRET ?= bin/demo-hmac-secret
run: build
	@test -s $(DEMO_SECRET) || (umask 077 && head -c 32 /dev/urandom | base64 > $(DEMO_SECRET))
	@tok=$$(./$(BIN) token -auth-hmac-secret-file $(DEMO_SECRET) -sub demo -cities '*' -ttl 24h) && \
	  printf '\ndemo token (every city, 24 h, signed with %s):\n\n  %s\n\ntry: ./$(BIN) sub nairobi\n\n' \
	    '$(DEMO_SECRET)' "$$tok"
	./$(BIN) serve -auth-hmac-secret-file $(DEMO_SECRET)

# The same node fed with synthetic data for 12 cities; prints the dashboard's
# URL (admin port, a token for every city in the fragment).
demo: build
	@test -s $(DEMO_SECRET) || (umask 077 && head -c 32 /dev/urandom | base64 > $(DEMO_SECRET))
	./$(BIN) serve -demo -auth-hmac-secret-file $(DEMO_SECRET)

# The whole suite, and all it needs on a fresh machine (see deps): gofmt and
# vet, unit + end-to-end tests (fuzz seed corpora and the README's first
# screen included), the race detector on the concurrent packages, one pass
# of every benchmark so they cannot rot, then the JavaScript client's tests
# and the k6 scripts' types. The deploy examples are checked by the tests
# of cmd/metrocast: helm lint and template on the chart, haproxy -c,
# systemd-analyze verify. Those tests skip without their tool under plain
# go test, and fail here.
test: export METROCAST_REQUIRE_TOOLS := 1
test: export METROCAST_HELM := $(CURDIR)/$(HELM)
test: deps lint
	$(GO) test -count=1 ./...
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 10x ./codec/ ./gateway/ ./gateway/cluster/ ./bench/
	$(MAKE) --no-print-directory test-web k6-check

# What `make test` needs beyond Go, installed when missing and left alone
# when present: Node ≥ 20 with npm (checked: Debian 12's nodejs is 18),
# Debian's Chromium, HAProxy and systemd-analyze (apt-get, as root; the
# deploy tests check haproxy.cfg and the unit with them), the npm packages
# of gateway/web and loadtest/k6 (npm ci, again when a package-lock.json
# changes) and helm (go install into bin/tools, once: a few minutes on a
# fresh machine).
deps: node-check apt-deps gateway/web/node_modules/.package-lock.json \
	loadtest/k6/node_modules/.package-lock.json $(HELM)

# Debian packages, as "command or file it provides=package".
APT_DEPS := /usr/bin/chromium=chromium haproxy=haproxy systemd-analyze=systemd curl=curl
apt-deps:
	@missing=; for d in $(APT_DEPS); do command -v $${d%%=*} >/dev/null 2>&1 || missing="$$missing $${d#*=}"; done; \
	test -z "$$missing" && exit 0; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make: missing:$$missing. Install as root (sudo apt-get install -y$$missing), or run make test as root." >&2; exit 1; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make: missing:$$missing, and there is no apt-get here: install them from this system's packages (the browser test runs /usr/bin/chromium)." >&2; exit 1; fi; \
	echo "make: installing$$missing (apt-get, once)"; mkdir -p bin; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing; } >bin/apt.log 2>&1 || \
	  { cat bin/apt.log >&2; echo "make: apt-get install$$missing failed (log above, kept in bin/apt.log)" >&2; exit 1; }

node-check:
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || \
	  { echo "make: the JavaScript tests need Node.js ≥ 20 with npm (Debian 12's nodejs is 18: take Node's own packages)" >&2; exit 1; }
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || \
	  { echo "make: the JavaScript tests need Node.js ≥ 20, found $$(node --version)" >&2; exit 1; }

# npm ci writes node_modules/.package-lock.json, newer than package-lock.json
# until the lock file changes.
$(HELM):
	@echo "make: building helm $(HELM_VERSION) into $(@D) (once)"
	GOBIN=$(CURDIR)/$(@D) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

%/node_modules/.package-lock.json: %/package-lock.json | node-check
	cd $* && npm ci --no-audit --no-fund --loglevel=error >/dev/null
	@touch $@

# metrocast.js and the dashboard under Node's test runner: unit tests,
# interop with Node's ws against the binary, and the dashboard in headless
# Chromium (/usr/bin/chromium). Screenshots land in gateway/web/test-results/.
test-web: build apt-deps gateway/web/node_modules/.package-lock.json
	cd gateway/web && METROCAST_BIN=$(BIN) node --test test/*.test.js

# The client's npm package, @metrocast/client, with the binary's version:
# bin/metrocast-client-<version>.tgz, the file a release ships (front-end
# teams `npm install` it; `npm publish` it to put it on a registry).
# test-web packs, installs and type-checks it too (test/package.test.js).
web-pack: build node-check
	@node gateway/web/scripts/pack.js $(BIN) bin

# Run every fuzz target of every package, one after the other, each for
# FUZZTIME (default 30s); FUZZFLAGS adds flags (e.g. -parallel 1 on a shared
# machine). The packages are found by their fuzz tests, so a new one is
# never skipped.
FUZZTIME  ?= 30s
FUZZFLAGS ?=
fuzz:
	@for p in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for t in $$($(GO) test $$p -list '^Fuzz' | grep ^Fuzz); do \
			echo "== $$p $$t"; $(GO) test $$p -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) || exit 1; \
		done; \
	done

# The benchmark suite (bench/): the micro-benchmarks with allocations, then
# the real binary under the load harness, checked against the targets;
# writes bench/results/<date>-<host>.{json,svg}. Under 12 minutes on 2 cores.
# BENCHFLAGS picks steps, e.g. '-micro=false -only hot,cities12,cities500'
# (the floor is measured in every run).
bench:
	$(GO) run ./bench $(BENCHFLAGS)

# Type-check the k6 scripts against k6's API (k6 itself is not installable
# here; a loadtest test sends their messages to a node).
k6-check: loadtest/k6/node_modules/.package-lock.json
	cd loadtest/k6 && npx --no-install tsc -p .

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf bin
