#!/usr/bin/env bash
# Builds dist/tokengate.wasm. One place decides how:
#  1. rustup with the wasm32-unknown-unknown target installed: the ordinary build.
#  2. otherwise Debian's rustc-web + rust-web-src + lld-19, building std from source
#     (the compiler and the std sources must be the same version, so Debian's compiler is used).
# Optional arguments build another proxy-wasm crate the same way (make bench uses it):
#   scripts/build-wasm.sh [PACKAGE OUTPUT [MANIFEST]]   (defaults: tokengate dist/tokengate.wasm Cargo.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
target=wasm32-unknown-unknown
pkg=${1:-tokengate}
out=${2:-dist/tokengate.wasm}
manifest=${3:-Cargo.toml}
artefact="${pkg//-/_}.wasm"
mkdir -p "$(dirname "$out")"

if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "build-wasm: using rustup's installed $target target"
  cargo build --release --target "$target" --manifest-path "$manifest" --target-dir target -p "$pkg"
  cp "target/$target/release/$artefact" "$out"
else
  debian_rustc=/usr/bin/rustc
  wasm_ld=/usr/lib/llvm-19/bin/wasm-ld
  if [ ! -x "$debian_rustc" ] || [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/src/rust ] || [ ! -x "$wasm_ld" ]; then
    echo "build-wasm: no rustup $target target; installing Debian's rustc-web, cargo-web, rust-web-src, lld-19"
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld-19 >/dev/null
  fi
  echo "build-wasm: building std from source with Debian's $($debian_rustc --version)"
  # A separate target dir: Debian's compiler must not reuse artefacts of rustup's.
  RUSTC="$debian_rustc" RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$wasm_ld" \
    CARGO_TARGET_DIR=target/debian \
    /usr/bin/cargo build --release --target "$target" --manifest-path "$manifest" -p "$pkg" -Zbuild-std=std,panic_abort
  cp "target/debian/$target/release/$artefact" "$out"
fi
echo "build-wasm: $out $(stat -c %s "$out") bytes"
