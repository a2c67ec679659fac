SHELL := /bin/bash
# Lockstep. `make help` lists the targets.
GO        ?= go
PREFIX    ?= /usr/local
BIN       := bin
CLANG     ?= clang-14
GOFLAGS   ?=
CC        ?= gcc

.PHONY: generate-check test-all help build test fuzz root-test integration generate install bench bench-order bench-serve bench-egress bench-logd demo vet clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/lockstep, lockstep-logd, the containerd shim and its exec helper, bin/mkimage
	$(GO) build $(GOFLAGS) -o $(BIN)/lockstep ./cmd/lockstep
	$(GO) build $(GOFLAGS) -o $(BIN)/containerd-shim-lockstep-v1 ./cmd/containerd-shim-lockstep-v1
	$(GO) build $(GOFLAGS) -o $(BIN)/mkimage ./hack/mkimage
	$(GO) build $(GOFLAGS) -o $(BIN)/lockstep-logd ./cmd/lockstep-logd
	$(CC) -static -O2 -Wall -Wextra -o $(BIN)/lockstep-shim-exec shim/helper/exec.c

vet: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

test: vet ## unprivileged unit tests (fast)
	$(GO) test -count=1 ./...

root-test: ## tests that need root: the tracer and the agent on this kernel
	@test "$$(id -u)" = 0 || { echo "root-test: run as root"; exit 1; }
	LOCKSTEP_ROOT_TESTS=1 $(GO) test -count=1 -v -run . ./runner/ ./seccomp/... ./tracer/ ./hostcap/ 2>&1 | tee /tmp/lockstep-root-test.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+exec_root_test)' ; test $${PIPESTATUS[0]} -eq 0

integration: ## tests against real containerd and runc (private containerd instances, the shim)
	@test "$$(id -u)" = 0 || { echo "integration: run as root"; exit 1; }
	LOCKSTEP_INTEGRATION=1 $(GO) test -count=1 -v -timeout 20m ./integration/ 2>&1 | tee /tmp/lockstep-integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\w+_test.go)' ; test $${PIPESTATUS[0]} -eq 0

generate: ## rebuild the eBPF object and its Go bindings (bpf2go, pinned clang-14; CI checks nothing changes)
	cd ebpf && $(GO) generate ./

bench: build ## benchmark against native in the same run (docs/performance.md)
	hack/bench-exec.sh

bench-time: build ## time: Go HTTP, Python asyncio, threads, clock reads, CPU against native and an allow-all filter (docs/performance.md)
	hack/bench-time.sh

bench-order: build ## processes that wake each other, ordered: make -j2, xargs -P 4, 5-stage pipelines against --unordered-wakes and native (docs/performance.md)
	hack/bench-order.sh

bench-egress: build ## lockstep run fetching 100 MiB through the guard (3 replicas) against one plain container (docs/egress.md)
	hack/bench-egress.sh

bench-serve: build ## lockstep serve of a Go key-value service against plain runc, 16 keep-alive clients (docs/serve.md)
	hack/bench-serve.sh

bench-logd: ## logd's durable appends against bare etcd, one and three members (docs/performance.md)
	$(GO) test -run XXX -bench Append -benchtime 5s ./logd/ 2>&1 | grep -E '^(Benchmark|ok|FAIL)'

install: build ## install lockstep, the shim and its helper into $(PREFIX)/bin (hack/install.sh configures containerd)
	install -D -m 0755 $(BIN)/lockstep $(DESTDIR)$(PREFIX)/bin/lockstep
	install -D -m 0755 $(BIN)/containerd-shim-lockstep-v1 $(DESTDIR)$(PREFIX)/bin/containerd-shim-lockstep-v1
	install -D -m 0755 $(BIN)/lockstep-shim-exec $(DESTDIR)$(PREFIX)/bin/lockstep-shim-exec
	install -D -m 0755 $(BIN)/lockstep-logd $(DESTDIR)$(PREFIX)/bin/lockstep-logd

demo: build ## the main job: a verified three-replica run, a two-stage pipe, a cheater named (private containerd)
	hack/demo.sh

clean: ## remove build output
	rm -rf $(BIN) testdata/probes/build

generate-check: generate ## fail if the committed eBPF output differs from a rebuild
	@git diff --exit-code -- ebpf/ || { echo "generate-check: ebpf/ differs from make generate: commit the regenerated files"; exit 1; }

test-all: test root-test integration generate-check ## every test tier (what CI runs)

fuzz: ## differential fuzzing of the calls Lockstep answers instead of the kernel, a minute (FUZZTIME) per target, as root
	@test "$$(id -u)" = 0 || { echo "fuzz: run as root"; exit 1; }
	$(GO) test -count=1 -run XXX -fuzz FuzzEmulatedCalls -fuzztime $${FUZZTIME:-60s} ./runner/
