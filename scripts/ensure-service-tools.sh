#!/usr/bin/env bash
# What the token service tests (tests/service/) need besides the build: Debian's PostgreSQL
# server (the tests start their own, as the `postgres` user, on a free port) and openssl (the
# xDS TLS test makes its certificates). Installs the missing ones from Debian's packages.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && id postgres >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  echo "ensure-service-tools: installing ${need[*]} (Debian packages)"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
  # Debian's package starts a cluster of its own; the tests never use it.
else
  echo "ensure-service-tools: please install ${need[*]} (PostgreSQL >= 13 server, openssl)" >&2
  exit 1
fi
