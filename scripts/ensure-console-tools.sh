#!/usr/bin/env bash
# What the console tests (tests/console/) need besides the build and the venv (Playwright is
# pinned in requirements.txt): Debian's chromium (Playwright drives it with executable_path;
# no browser download) and axe-core from npm, pinned by tests/console/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v npm >/dev/null 2>&1 || need+=(npm)
  if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    echo "ensure-console-tools: installing ${need[*]} (Debian packages)"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
  else
    echo "ensure-console-tools: please install ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
lock=tests/console/package-lock.json
stamp=tests/console/node_modules/.stamp
if [ ! -f tests/console/node_modules/axe-core/axe.min.js ] || [ "$lock" -nt "$stamp" ]; then
  echo "ensure-console-tools: npm ci (axe-core, pinned by $lock)"
  (cd tests/console && npm ci --no-audit --no-fund --silent)
  touch "$stamp"
fi
