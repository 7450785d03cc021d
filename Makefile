# taskqueue: `make help` lists the targets. Every target needs only Go; the real-Redis integration tests also
# want a redis-server binary on PATH (the tests start their own on a free loopback port).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
GOLANGCI_LINT_VERSION := v2.15.0## the golangci-lint release `make lint` installs and runs
FUZZ_TARGET ?= FuzzDecodeEnvelope## the fuzz target of `make fuzz`
FUZZTIME ?= 2m## how long `make fuzz` runs (Go duration, or Nx for N inputs)
SHORT_FUZZTIME ?= 10s## how long the fuzz step of `make test` runs
TEST_TIMEOUT ?= 10m## go test -timeout for each package
BENCH ?= .## the -bench pattern of `make bench`
BENCHTIME ?= 1s## the -benchtime of `make bench`
BENCHCOUNT ?= 1## the -count of `make bench` (use 10 for benchstat)
BENCH_ROUNDS ?= 5## the rounds of `make bench-compare` (each runs every library, in alternating order)
BENCH_QUICK ?= 0## 1 makes `make bench-compare` a smoke test of a minute or two (small counts)

BIN := $(CURDIR)/bin
# The version is part of the path, so changing GOLANGCI_LINT_VERSION installs the new release.
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
COVERPROFILE := $(BIN)/cover.out

# The root module first: its tests are the library's, and a failure there stops the run before the nested modules
# (cmd/..., contrib/..., bench/) compile. Those are tested, vetted, linted and tidy-checked too; tools/ holds no
# code of ours.
MODULES := . $(sort $(patsubst %/go.mod,%,$(shell find . -mindepth 2 -name go.mod -not -path './bin/*' \
	-not -path './tools/*' -not -path '*/testdata/*' 2>/dev/null)))

# in_modules CMD: print and run CMD in every module, stop at the first failure.
in_modules = @for m in $(MODULES); do echo "[$$m] $(1)"; (cd "$$m" && $(1)) || exit 1; done

.PHONY: help
help: ## List the targets and the variables they take
	@echo 'Usage: make TARGET [VAR=value ...]'
	@echo
	@echo 'Targets:'
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9_-]*:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo 'Variables:'
	@awk 'BEGIN {FS = " [:?]?= |## "} /^[A-Z_]+ [:?]?= .*## / {printf "  %-22s %s (default %s)\n", $$1, $$3, $$2}' \
		$(MAKEFILE_LIST)

.PHONY: demo
demo: ## Run the quickstart example: a producer and a worker (embedded miniredis unless REDIS_URL is set)
	$(GO) run ./examples/quickstart

.PHONY: test
# `go vet -race` reads the same -race builds of the dependencies that `go test -race` links, so they compile once, not
# once for vet and again for the tests. The fuzz step's instrumented build is the one other compile.
test: ## Each module's go vet and tests under -race (the root module first), then a short fuzz of the envelope decoder (what CI runs)
	@$(MAKE) warn-no-redis
	$(call in_modules,$(GO) vet -race ./... && $(GO) test -race -count=1 -timeout=$(TEST_TIMEOUT) ./...)
	$(GO) test -run='^$$' -fuzz='^$(FUZZ_TARGET)$$' -fuzztime=$(SHORT_FUZZTIME) .

.PHONY: test-short
test-short: ## Every test with -short and without -race: the quick loop while editing
	@$(MAKE) warn-no-redis
	$(call in_modules,$(GO) test -short -count=1 -timeout=$(TEST_TIMEOUT) ./...)

.PHONY: fuzz
fuzz: ## Fuzz the envelope decoder for FUZZTIME (skips, saying so, while the target does not exist)
	@list=$$($(GO) test -list '^$(FUZZ_TARGET)$$' .) || { echo "$$list"; exit 1; }; \
	if grep -qx '$(FUZZ_TARGET)' <<<"$$list"; then \
		echo "$(GO) test -run='^\$$' -fuzz='^$(FUZZ_TARGET)\$$' -fuzztime=$(FUZZTIME) ."; \
		$(GO) test -run='^$$' -fuzz='^$(FUZZ_TARGET)$$' -fuzztime=$(FUZZTIME) .; \
	else \
		echo "SKIP fuzz: no fuzz target $(FUZZ_TARGET) in the root package"; \
	fi

.PHONY: compile
compile: ## Compile every package and test binary under -race (what `make test` runs), running nothing
	$(call in_modules,$(GO) vet -race ./... && $(GO) test -race -c -o $(BIN)/tests/$$m/ ./...)

.PHONY: bench
bench: ## Run the benchmarks with allocation counts (BENCH, BENCHTIME, BENCHCOUNT)
	$(call in_modules,$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) ./...)

.PHONY: bench-compare
bench-compare: ## Compare with a floor and the peers on a redis-server of its own (bench/): table, bench/results/latest.json
	cd bench && BENCH_ROUNDS=$(BENCH_ROUNDS) BENCH_QUICK=$(BENCH_QUICK) $(GO) run .

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (pinned, installed into ./bin on first use) on code and tests
	$(call in_modules,$(GOLANGCI_LINT) run ./...)

.PHONY: tidy-lint
tidy-lint: ## Check that go.mod/go.sum are tidy and every Go file is gofmt -s clean (changes nothing)
	$(call in_modules,$(GO) mod tidy -diff)
	@files=$$(find . -name '*.go' -not -path './bin/*' -not -path '*/testdata/*' | sort); \
	bad=$$(gofmt -s -l $$files); \
	if [ -n "$$bad" ]; then echo "gofmt -s would change:"; echo "$$bad"; exit 1; fi; \
	echo "go.mod tidy, gofmt clean"

.PHONY: cover
cover: ## Test coverage of the library (examples left out): bin/cover.out, bin/cover.html, the total last
	@mkdir -p $(BIN)
	$(GO) test -count=1 -timeout=$(TEST_TIMEOUT) -covermode=atomic -coverprofile=$(COVERPROFILE) \
		$$($(GO) list ./... | grep -v /examples/)
	$(GO) tool cover -html=$(COVERPROFILE) -o $(BIN)/cover.html
	@$(GO) tool cover -func=$(COVERPROFILE) | tail -n 1

.PHONY: clean
clean: ## Remove ./bin (installed tools, coverage reports)
	rm -rf $(BIN)

# Installs golangci-lint from source through the Go module proxy: the module's go.sum and the checksum database
# pin every dependency, so the same version builds the same binary on any machine with Go.
$(GOLANGCI_LINT):
	@echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) into $(@D) (first use only)"
	GOBIN=$(@D) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: warn-no-redis
warn-no-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "WARNING: no redis-server on PATH: the real-Redis integration tests will be SKIPPED" \
			"(under CI=true they FAIL). Install it (Debian: apt-get install redis-server) to run them."; }

.PHONY: test-chaos
test-chaos: ## Chaos tests (tag chaos): workers and redis-server killed, frozen, restarted; see docs/reliability.md
	@$(MAKE) warn-no-redis
	$(GO) test -race -tags chaos -count=1 -timeout 8m -run Chaos .

.PHONY: test-cluster
test-cluster: ## Cluster and Sentinel tests (tag cluster): real multi-node topologies, failovers; see docs/scaling.md
	@$(MAKE) warn-no-redis
	$(GO) test -race -tags cluster -count=1 -timeout 8m -run 'Cluster|Sentinel' .
