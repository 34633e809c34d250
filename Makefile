GO ?= go

.PHONY: all test bench lint vet fmt-check

all: test

test: vet fmt-check
	$(GO) test -race -count=1 -timeout 9m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint: vet fmt-check

vet:
	$(GO) vet ./...

# Fails listing the files that gofmt would change.
fmt-check:
	@out="$$(gofmt -l .)" || exit 1; \
	if [ -n "$$out" ]; then \
		echo "These files need gofmt -w:"; echo "$$out"; exit 1; \
	fi
