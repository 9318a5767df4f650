"""Fixtures for the console tests: one tokengate-server (SQLite), one Envoy subscribed to it by
ECDS, the demo upstream, and a headless Chromium driven by Playwright; all real processes on
loopback, started once per module and stopped by pid.

Needs (installed by `make console-tools`, scripts/ensure-console-tools.sh): Debian's
`chromium`, Playwright from PyPI (requirements.txt), axe-core from npm (package-lock.json).
A missing one FAILS the tests with what to run; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "service"))

import service  # noqa: E402
from service import Server  # noqa: E402

import harness  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
AXE_JS = os.path.join(HERE, "node_modules", "axe-core", "axe.min.js")
SCREENSHOTS = os.path.join(harness.REPO, "docs", "screenshots")
PASSWORD = "correct horse battery staple"


def _fail(msg: str):
    pytest.fail(msg, pytrace=False)


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not os.path.isfile(AXE_JS):
        _fail(f"{AXE_JS} is missing: run `make console-tools` (npm ci in tests/console)")
    with open(AXE_JS, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _fail("Playwright is missing: run `make venv` (requirements.txt pins playwright)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _fail(f"Chromium is missing at {CHROMIUM}: run `make console-tools` (apt-get install chromium)")
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
    yield b
    b.close()
    pw.stop()


@pytest.fixture(scope="module")
def demo():
    servers = harness.demo_server.DemoServers(upstream_port=0, audit_port=0).start()
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo):
    """(server, envoy): the service on SQLite with admin `alice`, and an Envoy on ECDS."""
    tmp = tmp_path_factory.mktemp("console")
    procs = []
    try:
        harness.require_artifacts()
        srv = Server(str(tmp / "server"), f"sqlite://{tmp}/tokengate.db")
        procs.append(srv)
        srv.start()
        srv.db_path = str(tmp / "tokengate.db")
        srv.cli("admin", "add", "alice", input_text=PASSWORD + "\n")
        env = service.service_envoy(str(tmp / "envoy"), demo.upstream.port, srv, node_id="envoy-console")
        procs.append(env)
        env.start()
    except harness.HarnessError as e:
        for p in reversed(procs):
            p.stop()
        _fail(str(e))
    yield srv, env
    for p in reversed(procs):
        try:
            p.stop()
        except Exception:  # noqa: BLE001 (stop the rest)
            pass


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    """The service on PostgreSQL (sessions, lock-out and CSRF there too), no Envoy."""
    tmp = tmp_path_factory.mktemp("console-pg")
    pg = service.Postgres()
    srv = None
    try:
        pg.start()
        srv = Server(str(tmp / "server"), pg.create_db("tg_console"))
        srv.start()
        srv.cli("admin", "add", "alice", input_text=PASSWORD + "\n")
    except harness.HarnessError as e:
        if srv:
            srv.stop()
        pg.stop()
        _fail(f"{e} (PostgreSQL: run `make service-tools`)")
    yield srv
    srv.stop()
    pg.stop()


@pytest.fixture
def context(browser):
    """A fresh browser context at 1280×800 that records CSP violations (the CSP stays on)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.csp_errors = []
    ctx.on("console", lambda m: ctx.csp_errors.append(m.text)
           if "Content Security Policy" in m.text or "Refused to" in m.text else None)
    yield ctx
    ctx.close()
