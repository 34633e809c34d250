GO ?= go

# Modules nested in the repository, each with its own go.mod: ./... of the
# root module does not reach them.
NESTED := examples/fencing chaos bench

.PHONY: all test bench bench-peers lint vet fmt-check chaos chaos-ci

all: test

# The mutex package's tests take the longest: they run alongside the
# others' rather than after them.
test: vet fmt-check
	@$(GO) test -race -count=1 -timeout 9m ./mutex/ & mutex=$$!; \
	$(GO) test -race -count=1 -timeout 9m $$($(GO) list ./... | grep -v '/distlock/mutex$$'); rc=$$?; \
	wait $$mutex || rc=1; exit $$rc
	for d in $(NESTED); do (cd $$d && $(GO) test -race -count=1 -timeout 5m ./...) || exit 1; done

# The fault suite (chaos/README.md): every scenario, about 10 minutes.
# CHAOS_FLAGS adds flags, e.g. CHAOS_FLAGS='-seed 7 -dir /tmp/chaos'.
chaos:
	cd chaos && $(GO) run ./cmd/chaos -duration 8s $(CHAOS_FLAGS)

# The CI subset of the fault suite, with fixed seeds: about 3.5 minutes.
chaos-ci:
	cd chaos && $(GO) run ./cmd/chaos -ci -duration 8s -seed 1 $(CHAOS_FLAGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# distlock against redsync, redislock and rueidislock on a redis-server of
# its own (bench/README.md): under 3 minutes, results and charts in
# docs/bench. BENCH_FLAGS adds flags, e.g. BENCH_FLAGS='-only serial,hot'.
bench-peers:
	cd bench && $(GO) run ./cmd/benchpeers $(BENCH_FLAGS)

# staticcheck at a pinned version, run through the module proxy with
# go run pkg@version: nothing to install, and no go.mod changes.
STATICCHECK_VERSION ?= v0.8.2
lint: vet fmt-check
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	for d in $(NESTED); do (cd $$d && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...) || exit 1; done

vet:
	$(GO) vet ./...
	for d in $(NESTED); do (cd $$d && $(GO) vet ./...) || exit 1; done

# Fails listing the files that gofmt would change.
fmt-check:
	@out="$$(gofmt -l .)" || exit 1; \
	if [ -n "$$out" ]; then \
		echo "These files need gofmt -w:"; echo "$$out"; exit 1; \
	fi
