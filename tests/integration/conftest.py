"""pytest fixtures for the tokengate integration tests (see harness.py)."""

from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "wasm_only: tests of the proxy-wasm build only (ECDS hot reload through scripts/publish-tokens.py, "
        "proxy-wasm PluginConfig options); the native pass deselects them and says so")


def pytest_report_header(config):
    where = harness.WASM_PATH if harness.BUILD == "wasm" else harness.NATIVE_LIB
    return f"tokengate build under test: {harness.BUILD} ({where})"


def pytest_collection_modifyitems(config, items):
    if harness.BUILD != "native":
        return
    wasm_only = [i for i in items if i.get_closest_marker("wasm_only")]
    if wasm_only:
        items[:] = [i for i in items if not i.get_closest_marker("wasm_only")]
        config.hook.pytest_deselected(items=wasm_only)
        config._tokengate_wasm_only = [i.nodeid for i in wasm_only]


def pytest_terminal_summary(terminalreporter, config):
    ids = getattr(config, "_tokengate_wasm_only", [])
    if ids:
        terminalreporter.write_line(
            f"native build: {len(ids)} wasm-only test(s) deselected (they run in the wasm pass):")
        for nodeid in ids:
            terminalreporter.write_line(f"  {nodeid}")


@pytest.fixture(scope="module")
def demo():
    """Demo upstream (Jira stand-in) + audit sink, in-process, on free ports."""
    servers = harness.demo_server.DemoServers(upstream_port=0, audit_port=0).start()
    yield servers
    servers.stop()


@pytest.fixture(autouse=True)
def _reset_demo(request):
    """Fresh upstream record and a healthy sink for every test that uses the demo servers."""
    if "demo" in request.fixturenames or "envoys" in request.fixturenames:
        servers = request.getfixturevalue("demo")
        servers.reset()
    yield


class EnvoyPool:
    """Starts Envoys on demand, one per distinct configuration, and keeps the last few running
    (tests are grouped by configuration). Every process it started is stopped at teardown."""

    def __init__(self, workdir: str, demo, keep: int = 2):
        self.workdir = workdir
        self.demo = demo
        self.keep = keep
        self._running: OrderedDict[str, harness.Envoy] = OrderedDict()
        self._all: list[harness.Envoy] = []

    def get(self, plugin_config=None, *, as_string: bool = False, hcm_overrides: dict | None = None,
            plugin_overrides: dict | None = None, with_filter: bool = True, concurrency: int = 1,
            log_level: str = "info") -> harness.Envoy:
        try:
            harness.require_artifacts(need_wasm=with_filter)
        except harness.HarnessError as e:
            pytest.fail(str(e), pytrace=False)
        key = json.dumps([plugin_config, as_string, hcm_overrides, plugin_overrides, with_filter, concurrency,
                          log_level], sort_keys=True)
        env = self._running.get(key)
        if env is not None and env.running:
            self._running.move_to_end(key)
            return env
        while len(self._running) >= self.keep:
            _, old = self._running.popitem(last=False)
            old.stop()
        env = harness.Envoy(self.workdir, self.demo.upstream.port, self.demo.sink.port,
                            plugin_config=plugin_config, as_string=as_string, hcm_overrides=hcm_overrides,
                            plugin_overrides=plugin_overrides, with_filter=with_filter,
                            concurrency=concurrency, log_level=log_level)
        self._all.append(env)
        try:
            env.start()
        except harness.HarnessError as e:
            pytest.fail(f"Envoy did not start: {e}", pytrace=False)
        self._running[key] = env
        return env

    def expect_start_failure(self, plugin_config=None, **kwargs) -> tuple:
        """(exit_code, log) of an Envoy that must refuse `plugin_config`."""
        try:
            harness.require_artifacts()
        except harness.HarnessError as e:
            pytest.fail(str(e), pytrace=False)
        env = harness.Envoy(self.workdir, self.demo.upstream.port, self.demo.sink.port,
                            plugin_config=plugin_config, **kwargs)
        self._all.append(env)
        env.start(wait_ready=False)
        try:
            rc = env.wait_exit()
        finally:
            env.stop()
        return rc, env.log()

    def stop_all(self) -> None:
        for env in self._all:
            env.stop()
        self._running.clear()


@pytest.fixture(scope="module")
def envoys(demo, tmp_path_factory):
    pool = EnvoyPool(str(tmp_path_factory.mktemp("envoy")), demo)
    yield pool
    pool.stop_all()
