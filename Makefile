# containerd-shim-wasmtime-v1: build, install, demo, tests and benchmarks.
#
#   make run     installs containerd/runc if missing, builds, starts a private
#                containerd under .dev/ and runs the hello module in it
#   make test    unit tests and end-to-end tests against a real containerd

CARGO      ?= cargo
PREFIX     ?= /usr/local
DEV        := $(CURDIR)/.dev
RELEASE    := $(CURDIR)/target/release
SHIM       := $(RELEASE)/containerd-shim-wasmtime-v1
IMAGES     := $(DEV)/images
CTRD_DIR   := $(DEV)/containerd
RUNTIME    := io.containerd.wasmtime.v1
HELLO      := docker.io/wasmtime-shim-test/hello:latest

.PHONY: all deps build install images run stop test lint bench clean

all: build

deps:
	@scripts/deps.sh

build:
	$(CARGO) build --release -p containerd-shim-wasmtime

install: build
	install -D -m 0755 $(SHIM) $(DESTDIR)$(PREFIX)/bin/containerd-shim-wasmtime-v1

images:
	$(CARGO) run --release -q -p test-images -- $(IMAGES)

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

test: deps
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: deps build images
	scripts/bench.sh $(SHIM) $(IMAGES) $(DEV)/bench

clean: stop
	rm -rf $(DEV)
	$(CARGO) clean
