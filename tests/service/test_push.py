"""ECDS push through real Envoys (SPEC §15): every change reaches every subscribed Envoy at once,
on SQLite and on PostgreSQL; the service away changes nothing; back, it catches up."""

import threading
import time

import pytest

import harness
from harness import assert_jira_error, basic
from service import acked, wait_for

ISSUE = "/rest/api/2/issue/TG-1"


@pytest.fixture(autouse=True)
def _bearer_too(request):
    """Bearer as well as Basic (the default is Basic only, SPEC §3): set through the API."""
    if "server" in request.fixturenames:
        request.getfixturevalue("server").ok("PUT", "/api/v1/settings", {"auth_methods": "both"})


def status(env, token, path=ISSUE, user=None, method="GET"):
    h = {"Authorization": basic(user, token) if user else f"Bearer {token}"}
    return env.request(method, path, headers=h).status


def test_create_edit_revoke_delete_reach_two_envoys(server, envoy_for):
    a = envoy_for(server, "envoy-a")
    b = envoy_for(server, "envoy-b")
    # A third token used in a loop all along: no push may ever fail one of its requests.
    _, steady = server.create(name="steady", user="carol")
    wait_for(lambda: all(status(e, steady) == 200 for e in (a, b)), 5, what="steady token live")
    failures, done = [], threading.Event()

    def loop():
        n = 0
        while not done.is_set():
            for e in (a, b):
                s = status(e, steady)
                n += 1
                if s != 200:
                    failures.append(s)
        failures.append(("count", n))

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        tok, secret = server.create(name="CI bot", user="bob", limit_to=["[get]/rest/api/2/issue/TG-.*"])
        _, dt = wait_for(lambda: all(status(e, secret) == 200 for e in (a, b)), 2, what="create in effect")
        for e in (a, b):
            assert status(e, secret, "/rest/api/2/project") == 403
        server.ok("PATCH", f"/api/v1/tokens/{tok['id']}", {"limit_to": ["[get]/rest/api/2/project"]})
        wait_for(lambda: all(status(e, secret, "/rest/api/2/project") == 200 and status(e, secret) == 403
                             for e in (a, b)), 2, what="edit in effect")
        server.ok("POST", f"/api/v1/tokens/{tok['id']}/revoke")
        wait_for(lambda: all(status(e, secret, "/rest/api/2/project") == 401 for e in (a, b)), 2, what="revoke")
        r = a.request("GET", "/rest/api/2/project", headers={"Authorization": f"Bearer {secret}"})
        assert_jira_error(r, 401, "token revoked")
        server.ok("DELETE", f"/api/v1/tokens/{tok['id']}", status=204)
        wait_for(lambda: all(e.request("GET", ISSUE, headers={"Authorization": f"Bearer {secret}"}).json()
                             == {"errorMessages": ["unknown token"], "errors": {}} for e in (a, b)), 2,
                 what="delete in effect")
    finally:
        done.set()
        t.join(10)
    real = [f for f in failures if not (isinstance(f, tuple) and f[0] == "count")]
    count = [f[1] for f in failures if isinstance(f, tuple)]
    assert real == [] and count and count[0] > 20, failures
    fleet = server.ok("GET", "/api/v1/fleet")
    nodes = {n["node_id"]: n for n in fleet["nodes"]}
    assert set(nodes) == {"envoy-a", "envoy-b"}
    for n in nodes.values():
        assert n["connected"] and n["acked_version"] == fleet["version"] and n["last_error"] is None, n
        assert n["cluster"] == "tokengate"


def test_service_away_keeps_enforcement_and_catches_up(server, envoy_for):
    env = envoy_for(server, "envoy-1")
    _, keep = server.create(name="keep", user="dave", limit_to=["[get]/rest/api/2/issue/.*"])
    wait_for(lambda: status(env, keep) == 200, 3, what="token live")
    server.stop()
    for _ in range(20):
        assert status(env, keep) == 200
        assert status(env, keep, "/rest/api/2/project") == 403
    server.start()
    _, later = server.create(name="later", user="erin")
    # Envoy reconnects with backoff; the new token arrives once it has.
    wait_for(lambda: status(env, later) == 200, 15, what="change after restart")
    assert status(env, keep) == 200


def test_envoy_started_while_the_service_is_away_fails_closed(tmp_path, demo, started, server, envoy_for):
    _, secret = server.create(name="pushed", user="fay")
    server.stop()
    env = envoy_for(server, "envoy-cold")
    # No token works until the service has pushed; identity headers are still stripped and
    # other credentials still reach the app.
    r = env.request("GET", ISSUE, headers={"Authorization": f"Bearer {secret}", "X-Forwarded-User": "admin"})
    assert_jira_error(r, 401, "unknown token")
    demo.reset()
    r = env.request("GET", ISSUE, headers={"Authorization": basic("fay", "a password"), "X-Forwarded-User": "admin"})
    assert r.status == 200
    rec = demo.upstream.wait_for(1)[-1]
    assert rec.header_values("x-forwarded-user") == []
    server.start()
    wait_for(lambda: status(env, secret) == 200, 15, what="first push after the service came up")


def test_a_refused_push_is_recorded_as_nack(db_url, tmp_path, started, envoy_for):
    from service import Server
    srv = started(Server(str(tmp_path / "s"), db_url, wasm="/nonexistent/tokengate.wasm")).start()
    env = envoy_for(srv, "envoy-nack")
    srv.create(name="x", user="u")
    fleet, _ = wait_for(lambda: (lambda f: f if f["nodes"] and f["nodes"][0]["last_error"] else None)(
        srv.ok("GET", "/api/v1/fleet")), 5, what="NACK recorded")
    node = fleet["nodes"][0]
    assert node["node_id"] == "envoy-nack" and node["acked_version"] != fleet["version"]
    assert "nonexistent" in node["last_error"] or "wasm" in node["last_error"].lower(), node
    assert env.running


def test_the_native_build_by_ecds(db_url, tmp_path, started, envoy_for):
    """--native-module: the service pushes the Envoy dynamic module instead of the wasm filter
    (SPEC §18), with the same configuration and the same decisions."""
    from service import Server
    import harness as h
    try:
        h.require_artifacts(build="native")
    except h.HarnessError as e:
        pytest.fail(f"{e}: run `make native`", pytrace=False)
    srv = started(Server(str(tmp_path / "native"), db_url, extra_args=["--native-module", h.NATIVE_MODULE_NAME])).start()
    srv.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    env = envoy_for(srv, "envoy-native", native=True)
    tok, secret = srv.create(name="native", user="nat", limit_to=["[get]/rest/api/2/issue/TG-.*"])
    wait_for(lambda: status(env, secret) == 200, 5, what="token live on the native filter")
    assert status(env, secret, "/rest/api/2/project") == 403
    assert "dynamicmodulescustom.tokengate.allowed" in env.admin("/stats?filter=tokengate")
    srv.ok("POST", f"/api/v1/tokens/{tok['id']}/revoke")
    wait_for(lambda: status(env, secret) == 401, 2, what="revoke on the native filter")
    fleet = srv.ok("GET", "/api/v1/fleet")
    assert fleet["nodes"][0]["acked_version"] == fleet["version"]
