"""Fixtures for the app-server tests: one real Tomcat (tomcat.py) and Envoys + tokengate in front
of it, on free ports, stopped by pid at teardown (also when a test fails)."""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
import tomcat as tomcat_mod  # noqa: E402

# Envoy's own path handling: the shipped HCM (normalising) and everything off (the filter must
# stay safe without it).
MODES = {
    "normalising": None,
    "raw": {"normalize_path": False, "merge_slashes": False, "path_with_escaped_slashes_action": "KEEP_UNCHANGED"},
}


@pytest.fixture(scope="session")
def tomcat(tmp_path_factory):
    tc = tomcat_mod.Tomcat(str(tmp_path_factory.mktemp("tomcat")))
    try:
        tc.start()
    except tomcat_mod.TomcatError as e:
        tc.stop()
        pytest.fail(str(e), pytrace=False)
    yield tc
    tc.stop()


@pytest.fixture(scope="session")
def tomcat_envoys(tomcat, tmp_path_factory):
    """mode -> a running Envoy (2 workers) with the differential token set, upstream Tomcat."""
    import differential
    try:
        harness.require_artifacts()
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    work = str(tmp_path_factory.mktemp("envoy"))
    started = {}
    try:
        for mode, hcm in MODES.items():
            env = harness.Envoy(work, tomcat.port, harness.free_port(), concurrency=2, log_level="warning",
                                plugin_config=differential.plugin_config(), hcm_overrides=hcm)
            started[mode] = env
            env.start()
        yield started
    except harness.HarnessError as e:
        pytest.fail(f"Envoy did not start: {e}", pytrace=False)
    finally:
        for env in started.values():
            env.stop()
