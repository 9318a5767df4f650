"""Against the docker-compose stack (`make compose-test`; needs a Docker engine, so it lives
outside tests/integration and `make test` does not collect it): Envoy from the official image with envoy/envoy.yaml, the demo upstream, Vector as the
audit sink writing .run/compose/audit.ndjson."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import time
import urllib.request

import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import harness  # noqa: E402

LISTENER, ADMIN = 10000, 9901
AUDIT_FILE = os.environ.get("TOKENGATE_COMPOSE_AUDIT_FILE") or os.path.join(harness.REPO, ".run", "compose", "audit.ndjson")

_spec = importlib.util.spec_from_file_location("demo_run", os.path.join(harness.REPO, "demo", "run.py"))
demo_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_run)


@pytest.fixture(scope="module")
def client():
    deadline = time.monotonic() + 120  # images may still be starting
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the compose Envoy is not ready on 127.0.0.1:9901 after 120 s "
                        "(docker compose logs envoy)", pytrace=False)
        time.sleep(0.5)
    return harness.RawClient("127.0.0.1", LISTENER)


def audit_lines() -> list:
    try:
        with open(AUDIT_FILE) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def test_demo_token_allowed_and_audited_by_vector(client):
    path = f"/rest/api/2/issue/COMPOSE-{secrets.token_hex(4)}"
    r = client.request("GET", path, auth=("demo", demo_run.DEMO_TOKEN))
    assert r.status == 200, r
    assert r.json()["identity"] == "demo"
    deadline = time.monotonic() + 20
    while True:
        got = [line for line in audit_lines() if line.get("path") == path]
        if got:
            break
        assert time.monotonic() < deadline, f"no audit line for {path} in {AUDIT_FILE}"
        time.sleep(0.25)
    (line,) = got
    assert line["token_id"] == "demo" and line["decision"] == "allow" and line["status"] == 200
    assert "timestamp" not in line and "source_type" not in line  # exactly the filter's line


def test_revoked_token_refused(client):
    r = client.request("GET", "/rest/api/2/myself", auth=("demo", demo_run.REVOKED_TOKEN))
    harness.assert_jira_error(r, 401, "token revoked")


def test_identity_header_from_client_is_stripped(client):
    r = client.request("GET", "/rest/api/2/myself", headers={"X-Forwarded-User": "admin"})
    assert r.status == 200 and r.json()["identity"] is None


def test_counters_visible(client):
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/stats?filter=tokengate", timeout=5) as r:
        text = r.read().decode()
    assert "tokengate.allowed" in text, text
