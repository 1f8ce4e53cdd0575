# The two commands a newcomer needs: `make demo` and `make test`. Both install what is missing.
CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
EXAMPLES := examples/target/$(WASM_TARGET)/release
BIN := $(or $(CARGO_TARGET_DIR),target)/debug

.PHONY: setup build examples test lint demo bench clean

setup:
	@deploy/setup.sh

build: setup
	$(CARGO) build --workspace --bins

examples: setup
	cd examples && CARGO_TARGET_DIR=$(CURDIR)/examples/target $(CARGO) build --release --target $(WASM_TARGET)

# The whole suite: formatting, unit tests beside the code, end-to-end tests with real processes.
test: build examples
	$(CARGO) fmt --all --check
	$(CARGO) test --workspace

lint: setup
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# A one-node cluster, the hello-http example with 5 replicas, served through the proxy.
demo: build examples
	@BIN=$(BIN) EXAMPLES=$(EXAMPLES) deploy/demo.sh

# Performance figures: instantiate latency, deploy-to-ready, proxy vs bare throughput, and
# 3-node control-plane writes/s next to etcd (installs Debian's etcd-server if missing).
bench: build examples
	@command -v etcd >/dev/null 2>&1 || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; $$sudo apt-get install -y -qq etcd-server >/dev/null; }
	$(BIN)/wasmkube-bench --wasm $(EXAMPLES)/hello_http.wasm

clean:
	$(CARGO) clean
	cd examples && $(CARGO) clean
