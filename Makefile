# metrocast — see README.md.
GO        ?= go
BIN       ?= bin/metrocast
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# Packages with concurrency run under the race detector in `make test`.
RACE_PKGS := ./gateway/... ./codec/...
# The load harness has goroutines per connection and a progress reader.
RACE_PKGS += ./loadtest/

.PHONY: all build run demo test test-web test-short fuzz bench lint clean k6-check

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/metrocast

# One node on embedded defaults: WebSocket on :8080/ws, ingest on 127.0.0.1:7070,
# with a demo HMAC secret made on first use (for demos only), and a token for it.
DEMO_SECRET ?= bin/demo-hmac-secret
run: build
	@test -s $(DEMO_SECRET) || (umask 077 && head -c 32 /dev/urandom | base64 > $(DEMO_SECRET))
	@tok=$$(./$(BIN) token -auth-hmac-secret-file $(DEMO_SECRET) -sub demo -cities '*' -ttl 24h) && \
	  printf '\ndemo token (every city, 24 h, signed with %s):\n\n  %s\n\ntry: websocat "ws://127.0.0.1:8080/ws?cities=nairobi&token=%s"\n\n' \
	    '$(DEMO_SECRET)' "$$tok" "$$tok"
	./$(BIN) serve -auth-hmac-secret-file $(DEMO_SECRET)

# The same node fed with synthetic data for 12 cities; prints the dashboard's
# URL (admin port, a token for every city in the fragment).
demo: build
	@test -s $(DEMO_SECRET) || (umask 077 && head -c 32 /dev/urandom | base64 > $(DEMO_SECRET))
	./$(BIN) serve -demo -auth-hmac-secret-file $(DEMO_SECRET)

# The whole suite: vet, unit + end-to-end tests (fuzz seed corpora included),
# the race detector on the concurrent packages, and one pass of every
# benchmark so they cannot rot; then the JavaScript client's tests.
test:
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 10x ./codec/ ./gateway/
	$(MAKE) --no-print-directory test-web

# metrocast.js and the dashboard under Node's test runner (Node ≥ 20): unit
# tests, interop with Node's ws against the binary, and the dashboard in
# headless Chromium (/usr/bin/chromium; .ci/run installs it). Screenshots
# land in gateway/web/test-results/.
test-web: build
	@cd gateway/web && { test -d node_modules || npm ci --no-audit --no-fund --loglevel=error; }
	cd gateway/web && METROCAST_BIN=$(BIN) node --test test/*.test.js

# Run each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	@for p in ./codec/ ./gateway/; do \
		for t in $$($(GO) test $$p -list '^Fuzz' | grep ^Fuzz); do \
			echo "== $$p $$t"; $(GO) test $$p -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) || exit 1; \
		done; \
	done

# The benchmark suite (bench/): the micro-benchmarks with allocations, then
# the real binary under the load harness, checked against the targets;
# writes bench/results/<date>-<host>.{json,svg}. Under 10 minutes on 2 cores.
bench:
	$(GO) run ./bench

# Type-check the k6 scripts (needs `npm --prefix loadtest/k6 install` once).
k6-check:
	cd loadtest/k6 && npx --no-install tsc -p .

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf bin
