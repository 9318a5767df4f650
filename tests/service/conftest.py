"""pytest fixtures for the token service tests (see service.py)."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import service  # noqa: E402
from service import Postgres, Server  # noqa: E402

import harness  # noqa: E402  (tests/integration/harness.py, put on the path by service.py)


def _fail(e: Exception):
    pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def pg():
    """One PostgreSQL server for the session; each test gets its own database."""
    p = Postgres()
    try:
        p.start()
    except harness.HarnessError as e:
        p.stop()
        _fail(e)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def demo():
    servers = harness.demo_server.DemoServers(upstream_port=0, audit_port=0).start()
    yield servers
    servers.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/tokengate.db"
    pg = request.getfixturevalue("pg")
    return pg.create_db("tg_" + uuid.uuid4().hex[:12])


@pytest.fixture
def started():
    """Processes a test starts; all stopped by pid at teardown, in reverse order."""
    procs = []

    def add(p):
        procs.append(p)
        return p

    yield add
    for p in reversed(procs):
        try:
            p.stop()
        except Exception:  # noqa: BLE001 (stop the rest)
            pass


@pytest.fixture
def server(db_url, tmp_path, started):
    try:
        harness.require_artifacts()
        return started(Server(str(tmp_path / "server"), db_url)).start()
    except harness.HarnessError as e:
        _fail(e)


@pytest.fixture
def envoy_for(tmp_path, demo, started):
    """envoy_for(server, node_id=...) -> a started Envoy subscribed to that server."""
    def make(srv, node_id="envoy-1", **kw):
        try:
            env = service.service_envoy(str(tmp_path / node_id), demo.upstream.port, srv, node_id=node_id, **kw)
            started(env)
            return env.start()
        except harness.HarnessError as e:
            _fail(e)
    return make
