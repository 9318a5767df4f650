#!/usr/bin/env bash
# Tools the deployment-file tests use (tests/integration/test_deploy_files.py):
#   a compose parser (`docker compose` or Debian's docker-compose) to check docker-compose.yml,
#   skopeo to check the OCI image layout that `make image` writes.
# Installs the missing ones from Debian's packages when apt-get is there; no Docker engine needed.
set -euo pipefail
need=()
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  need+=(docker-compose)
fi
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  echo "deploy-tools: installing ${need[*]} (Debian packages)"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "deploy-tools: please install ${need[*]} (a compose parser: docker compose or docker-compose; skopeo)" >&2
  exit 1
fi
