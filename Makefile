# containerd-shim-wasmtime-v1: build, install, demo, tests and benchmarks.
#
#   make run     installs containerd/runc if missing, builds, starts a private
#                containerd under .dev/ and runs the hello module in it
#   make test    unit tests and end-to-end tests (ctr, CRI, Docker, the
#                node installer) against containerd 1.6 (Debian's), 1.7
#                and 2.1 (fetched into .dev/versions, not installed)

CARGO      ?= cargo
PREFIX     ?= /usr/local
DEV        := $(CURDIR)/.dev
RELEASE    := $(CURDIR)/target/release
SHIM       := $(RELEASE)/containerd-shim-wasmtime-v1
IMAGES     := $(DEV)/images
CTRD_DIR   := $(DEV)/containerd
RUNTIME    := io.containerd.wasmtime.v1
HELLO      := docker.io/wasmtime-shim-test/hello:latest
VERSIONS   := $(DEV)/versions
# The containerd releases the suites also run on, beside the system's 1.6.
MATRIX     := 1.7.24 2.1.9

.PHONY: all deps versions build install programs images run stop test soak lint bench clean wasmtime-cli

all: build

deps:
	@scripts/deps.sh

versions:
	@scripts/containerd-versions.sh $(VERSIONS)

# Every target of the workspace, tests included, in the one profile that
# `make test` uses too: dependencies are built once, with the features the
# tests also ask for, and `make test` after `make run` builds nothing more.
build:
	$(CARGO) build --release --workspace --all-targets

install: build
	install -D -m 0755 $(SHIM) $(DESTDIR)$(PREFIX)/bin/containerd-shim-wasmtime-v1

# The test programs that real toolchains build (a C module with zig cc,
# two Python components with componentize-py): scripts/wasm-tools.sh puts
# the pinned toolchains from PyPI into .dev/tools/venv, and test-images
# builds each program into .dev/programs/<name>-<hash of its inputs>.wasm
# unless that file is already there. The tests find them there.
programs: build
	$(RELEASE)/test-images --programs

# The binary `make build` made (a `cargo run` would build it again with
# the features of a non-test build); it writes the programs' images too.
images: build programs
	$(RELEASE)/test-images $(IMAGES)

# With CONTAINERD_ADDRESS set, the demo uses that containerd, which finds
# the shim on its PATH: the shim is installed into $(PREFIX)/bin first.
ifdef CONTAINERD_ADDRESS
run: deps install images
	ctr --address $(CONTAINERD_ADDRESS) images import --all-platforms $(IMAGES)/hello.tar
	ctr --address $(CONTAINERD_ADDRESS) run --rm --runtime $(RUNTIME) $(HELLO) hello-$$$$
else
run: deps build images
	@sock=$$(scripts/containerd.sh start $(CTRD_DIR) $(RELEASE)) && \
	ctr --address $$sock images import --all-platforms $(IMAGES)/hello.tar >/dev/null && \
	ctr --address $$sock run --rm --runtime $(RUNTIME) $(HELLO) hello-$$$$ && \
	echo "(private containerd at $$sock; try: ctr --address $$sock images ls; make stop to end it)"
endif

stop:
	scripts/containerd.sh stop $(CTRD_DIR)

# The whole suite on the system containerd, then the end-to-end suites on
# each other release of the matrix, then the installer on every release's
# default config, then each fuzz target for a bounded time (scripts/fuzz.sh).
# REQUIRE_MATRIX makes a missing release a failure.
test: deps versions build programs
	REQUIRE_MATRIX=1 $(CARGO) test --release --workspace
	@for v in $(MATRIX); do \
	    echo "== end-to-end suites on containerd $$v"; \
	    CONTAINERD_BIN_DIR=$(VERSIONS)/containerd-$$v/usr/bin REQUIRE_MATRIX=1 \
	        $(CARGO) test --release -p containerd-shim-wasmtime --tests || exit 1; \
	done
	deploy/installer/test.sh $(VERSIONS)
	scripts/fuzz.sh

# The churn test at full size (make test runs a smaller one).
soak: deps versions build programs
	CHURN_CYCLES=2000 REQUIRE_MATRIX=1 $(CARGO) test --release -p containerd-shim-wasmtime --test churn
	CRI_CHURN_PODS=2000 CRI_CHURN_CONTAINERS=1500 REQUIRE_MATRIX=1 $(CARGO) test --release -p containerd-shim-wasmtime --test cri_churn -- --nocapture

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# The wasmtime CLI of the version the shim embeds, the peer of the
# program rows of make bench (a release build of about 25 minutes).
WASMTIME_VERSION := 48.0.8
wasmtime-cli:
	@test -x $(DEV)/wasmtime/bin/wasmtime || $(CARGO) install wasmtime-cli --version $(WASMTIME_VERSION) \
		--locked --root $(DEV)/wasmtime --target-dir $(DEV)/wasmtime-build

bench: deps build images wasmtime-cli
	scripts/bench.sh $(SHIM) $(IMAGES) $(DEV)/bench

clean: stop
	rm -rf $(DEV)
	$(CARGO) clean
