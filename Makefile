# Starling build, test and demo entry points. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
BIN := bin
PY ?= python3
VENV := .venv
TRITON_VENV := .venv-triton
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BINARIES := starling-agent starling-control starlingctl
PKG_starling-agent := ./agent/cmd/starling-agent
PKG_starling-control := ./controlplane/cmd/starling-control
PKG_starlingctl := ./tools/starlingctl
CROSS_TARGETS := linux/amd64 linux/arm64 linux/arm/7
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/starling-edge/starling/shared/version.Version=$(VERSION)

.PHONY: all build demo test test-deps lint cross models conformance bench-tflite bench-serve clean

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(foreach b,$(BINARIES),$(PKG_$(b)))

# One command, end to end: control plane + embedded broker, one agent, a signed
# model pushed and assigned, an inference over the unix socket.
demo: build
	bash tools/demo/demo.sh

# Services the tests talk to: a real Mosquitto (Debian), the Go modules,
# and the official Triton client the local API is checked with.
test-deps: $(TRITON_VENV)/.installed
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { \
		echo "installing mosquitto"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto >/dev/null; }
	@command -v curl >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq curl >/dev/null; }
	$(GO) mod download

# The Python tritonclient (HTTP and gRPC) that agent/serve's tests drive.
$(TRITON_VENV)/.installed: agent/serve/testdata/tritonclient/requirements.txt
	$(PY) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q -r agent/serve/testdata/tritonclient/requirements.txt
	@touch $@ # a stamp: bin/python is a symlink, touching it touches the system's

test: test-deps lint
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory cross

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The agent must stay one static binary without cgo on every target.
cross:
	@set -e; for t in $(CROSS_TARGETS); do \
		os=$${t%%/*}; rest=$${t#*/}; arch=$${rest%%/*}; arm=""; \
		[ "$$arch" = arm ] && arm=$${rest#*/}; \
		out=dist/$$os-$$arch$${arm:+v$$arm}; mkdir -p $$out; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out/ $(foreach b,$(BINARIES),$(PKG_$(b))); \
		echo "cross $$t: $$(du -h $$out/starling-agent | cut -f1) agent"; \
	done

# TensorFlow (the official converter and interpreter) for modelgen and the
# benchmarks. A stamp file: bin/python is a symlink to the system's.
$(VENV)/.installed: tools/modelgen/requirements.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tools/modelgen/requirements.txt
	@touch $@

# Rebuild the test models and re-record the official interpreter's outputs.
models: $(VENV)/.installed
	$(VENV)/bin/python tools/modelgen/modelgen.py --out testdata/models

# Re-record every reference with the live official interpreter, then hold
# gotflite to it. CI runs the recorded-reference suite on every change.
conformance: models
	$(GO) test -count=1 -run Conformance ./agent/runtime/gotflite/

# gotflite against the official interpreter (XNNPACK), MobileNet v2 1.0 224,
# float32 and int8, 1 and 2 threads. Results go in docs/BENCHMARKS.md.
BENCH_MODELS := .cache/bench-models
bench-tflite: $(VENV)/.installed
	$(VENV)/bin/python tools/tflitebench/makemodels.py --out $(BENCH_MODELS)
	$(GO) run ./tools/tflitebench --models $(BENCH_MODELS) --python $(VENV)/bin/python $(BENCH_ARGS)

# The serving benchmark (docs/BENCHMARKS.md): the agent's local API against
# the in-process call and the FastAPI + TFLite peer, and dynamic batching.
SERVEPEER_VENV := .venv-servepeer
$(SERVEPEER_VENV)/.installed: tools/servepeer/requirements.txt
	$(PY) -m venv $(SERVEPEER_VENV)
	$(SERVEPEER_VENV)/bin/pip install -q -r tools/servepeer/requirements.txt
	@touch $@

bench-serve: $(SERVEPEER_VENV)/.installed $(VENV)/.installed
	PEER_PY=$(SERVEPEER_VENV)/bin/python MODELGEN_PY=$(VENV)/bin/python BENCH_DIR=$(BENCH_MODELS) bash tools/servebench/bench-serve.sh

clean:
	rm -rf $(BIN) dist
