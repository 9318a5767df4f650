"""The service as the audit store (SPEC §11 delivery, §16): through a real Envoy into SQLite or
PostgreSQL, each decided request stored exactly once, usage counted, outages survived, batches
refused whole, lines forwarded to a pipeline."""

import base64
import json
import re
import subprocess
import threading
import time
import urllib.request

import pytest

from harness import basic
from service import SERVER_BIN, Server, wait_for

FIELDS = ["ts", "request_id", "token_id", "token_name", "user", "acting_as", "client_ip", "method", "path",
          "query", "decision", "reason", "rule", "status", "duration_ms"]
ISSUE = "/rest/api/2/issue/TG-1"
SETTINGS = {"auth_methods": "both", "unknown_credentials": "deny", "max_body_bytes": 1000}


def audit(server, **params):
    q = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in params.items())
    return server.ok("GET", "/api/v1/audit?" + q)


def wait_lines(server, count, timeout=15, **params):
    got, _ = wait_for(lambda: (lambda l: l if len(l) >= count else None)(
        audit(server, limit=1000, **params)["lines"]), timeout, interval=0.1, what=f"{count} stored line(s)")
    time.sleep(1.2)  # one more flush interval: a duplicate would show up
    return audit(server, limit=1000, **params)["lines"]


def credential(server) -> str:
    """The audit credential, as the pushed configuration carries it (export shows it)."""
    cfg = json.loads(server.cli("export", "--format", "json").stdout)
    return cfg["audit"]["authorization"]


@pytest.fixture
def store(server, envoy_for):
    server.ok("PUT", "/api/v1/settings", SETTINGS)
    toks = {}
    for name, fields in {
        "bound": {"user": "Alice.Smith", "run_as": ["bob"]},
        "userless": {},
        "expired": {"user": "carol", "expires": "2020-01-01T00:00:00Z"},
        "revoked": {"user": "carol"},
        "ip": {"user": "dave", "ips": ["10.0.0.0/8"]},
        "lines": {"user": "erin", "limit_to": ["[get]/rest/api/2/issue/.*",
                                              "[post]/rest/api/2/issue[JsonData::fields.project.key==KAN]"]},
    }.items():
        _, secret = server.create(name=name, id=name, **fields)
        toks[name] = secret
    server.ok("POST", "/api/v1/tokens/revoked/revoke")
    env = envoy_for(server, "envoy-audit")
    wait_for(lambda: env.request("GET", ISSUE, auth=("erin", toks["lines"])).status == 200, 5, what="tokens live")
    wait_lines(server, 1)  # that request's own line
    return server, env, toks


def _cases(t):
    unknown = "tg_" + "A" * 38
    return {
        "ok": ("GET", ISSUE, {"auth": ("erin", t["lines"])}, 200, "lines", "erin"),
        "unknown_token": ("GET", ISSUE, {"bearer": unknown}, 401, None, None),
        "unknown_credentials": ("GET", ISSUE, {"auth": ("jdoe", "hunter2")}, 401, None, None),
        "malformed_credentials": ("GET", ISSUE, {"authorization": "Basic !!!"}, 401, None, None),
        "expired": ("GET", ISSUE, {"auth": ("carol", t["expired"])}, 401, "expired", "carol"),
        "revoked": ("GET", ISSUE, {"auth": ("carol", t["revoked"])}, 401, "revoked", "carol"),
        "user_mismatch": ("GET", ISSUE, {"auth": ("mallory", t["bound"])}, 401, "bound", "Alice.Smith"),
        "method_scheme": ("GET", ISSUE, {"bearer": t["userless"]}, 401, "userless", None),
        "ip": ("GET", ISSUE, {"auth": ("dave", t["ip"])}, 403, "ip", "dave"),
        "run_as": ("GET", ISSUE, {"auth": ("alice.smith", t["bound"]), "headers": {"contextUser": "eve"}}, 403,
                   "bound", "Alice.Smith"),
        "restricted": ("DELETE", ISSUE, {"auth": ("erin", t["lines"])}, 403, "lines", "erin"),
        "bad_request": ("GET", ISSUE, {"auth": ("erin", t["lines"]), "headers": {"X-HTTP-Method-Override": "DELETE"}},
                        400, "lines", "erin"),
        "body_too_large": ("POST", "/rest/api/2/issue", {"auth": ("erin", t["lines"]), "body": "x" * 2000,
                                                         "headers": {"Content-Type": "application/json"}}, 413,
                           "lines", "erin"),
        "media_type": ("POST", "/rest/api/2/issue", {"auth": ("erin", t["lines"]), "body": "a=b",
                                                     "headers": {"Content-Type": "text/plain"}}, 415, "lines", "erin"),
    }


def _send(env, method, path, kw):
    return env.request(method, path, **kw)


def test_every_reason_gives_exactly_one_stored_line_and_usage_counts(store):
    server, env, toks = store
    before = {t["id"]: t["usage"] for t in server.ok("GET", "/api/v1/tokens")["tokens"]}
    t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    cases = _cases(toks)
    for i, (reason, (method, path, kw, status, _, _)) in enumerate(cases.items()):
        r = _send(env, method, path + f"?case={reason}&n={i}", kw)
        assert r.status == status, (reason, r)
    wait_for(lambda: len([l for l in audit(server, limit=1000, **{"from": t0})["lines"] if "case" in l["query"]])
             >= len(cases), 15, interval=0.1, what="every case stored")
    time.sleep(1.2)  # a duplicate would show up
    lines = [l for l in audit(server, limit=1000, **{"from": t0})["lines"] if "case" in l["query"]]
    by_reason = {}
    for l in lines:
        assert list(l) == FIELDS, l
        by_reason.setdefault(l["reason"], []).append(l)
    assert {r: len(v) for r, v in by_reason.items()} == {r: 1 for r in cases}, by_reason
    for reason, (method, path, _, status, token_id, user) in cases.items():
        l = by_reason[reason][0]
        assert (l["method"], l["path"], l["status"], l["token_id"], l["user"]) == (method, path, status, token_id,
                                                                                  user), l
        assert l["decision"] == ("allow" if reason == "ok" else "deny")
        assert l["query"] == ["case", "n"] and l["client_ip"] == "127.0.0.1" and l["request_id"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", l["ts"])
    after = {t["id"]: t["usage"] for t in server.ok("GET", "/api/v1/tokens")["tokens"]}
    counted = {}
    for reason, (_, _, _, _, token_id, _) in cases.items():
        if token_id:
            c = counted.setdefault(token_id, [0, 0])
            c[0 if reason == "ok" else 1] += 1
    for tid, (allowed, denied) in counted.items():
        b, a = before[tid], after[tid]
        assert (a["allowed"] - b["allowed"], a["denied"] - b["denied"], a["calls"] - b["calls"]) == \
            (allowed, denied, allowed + denied), (tid, b, a)
    lu = after["lines"]
    assert lu["last_client_ip"] == "127.0.0.1" and lu["last_used_at"] >= by_reason["ok"][0]["ts"]
    # A refused call is not a use (SPEC §16).
    assert after["revoked"]["last_used_at"] is None and after["revoked"]["denied"] >= 1
    # Never the secret, in any stored line.
    raw = json.dumps(audit(server, limit=1000))
    for s in toks.values():
        assert s not in raw and base64.b64encode(s.encode()).decode() not in raw


def test_queries_filter_and_page_newest_first(store):
    server, env, toks = store
    for i in range(12):
        assert env.request("GET", f"/rest/api/2/issue/Q-{i}", auth=("erin", toks["lines"])).status == 200
    for i in range(3):
        assert env.request("DELETE", f"/rest/api/2/issue/Q-{i}", auth=("erin", toks["lines"])).status == 403
    wait_lines(server, 15, token="lines", user="erin")
    denied = audit(server, token="lines", decision="deny")["lines"]
    assert [l["path"] for l in denied][:3] == [f"/rest/api/2/issue/Q-{i}" for i in (2, 1, 0)]
    assert all(l["reason"] == "restricted" for l in denied)
    assert audit(server, reason="restricted", user="erin")["lines"] == denied
    p1 = audit(server, token="lines", limit=5)
    p2 = audit(server, token="lines", limit=5, cursor=p1["next"])
    ts = [l["ts"] for l in p1["lines"] + p2["lines"]]
    assert ts == sorted(ts, reverse=True) and len(set(l["request_id"] for l in p1["lines"] + p2["lines"])) == 10
    newest = p1["lines"][0]["ts"]
    assert audit(server, token="lines", to=newest)["lines"][0]["ts"] < newest
    assert all(l["ts"] >= newest for l in audit(server, token="lines", **{"from": newest})["lines"])
    # NDJSON export: the whole selection, streamed.
    req = urllib.request.Request(server.base + "/api/v1/audit?token=lines",
                                 headers={"Authorization": f"Bearer {server.key}", "Accept": "application/x-ndjson"})
    with urllib.request.urlopen(req) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        rows = [json.loads(l) for l in r.read().decode().splitlines()]
    assert len(rows) == len(audit(server, token="lines", limit=1000)["lines"]) >= 16
    for bad in ({"decision": "maybe"}, {"reason": "nope"}, {"from": "yesterday"}, {"limit": "0"}, {"cursor": "x"}):
        r = server.api("GET", "/api/v1/audit?" + "&".join(f"{k}={v}" for k, v in bad.items()))
        assert r.status == 400 and r.json()["field"] == next(iter(bad)), (bad, r)


def test_a_10s_outage_of_the_service_loses_nothing_and_stores_nothing_twice(store):
    server, env, toks = store
    stop, sent = threading.Event(), []

    def loop():
        i = 0
        while not stop.is_set():
            r = env.request("GET", f"/rest/api/2/issue/OUT-{i}", auth=("erin", toks["lines"]))
            sent.append((i, r.status))
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    time.sleep(1)
    server.stop()
    time.sleep(10)
    server.start()
    time.sleep(1)
    stop.set()
    t.join(10)
    assert sent and all(s == 200 for _, s in sent), "enforcement went on while the service was away"
    lines = [l for l in wait_lines(server, len(sent), timeout=40, token="lines") if "/OUT-" in l["path"]]
    paths = [l["path"] for l in lines]
    assert len(paths) == len(set(paths)) == len(sent), (len(paths), len(set(paths)), len(sent))
    assert env.stat("tokengate.audit.dropped") == 0
    print(f"\noutage: {len(sent)} requests sent, {len(paths)} lines stored, "
          f"{len(paths) - len(set(paths))} duplicates")


def test_the_receiver_refuses_what_it_should(server):
    cred = credential(server)
    line = {"ts": "2026-12-01T10:00:00.000Z", "request_id": "r1", "token_id": "t", "token_name": "T",
            "user": "u", "acting_as": "u", "client_ip": "10.0.0.1", "method": "GET", "path": "/rest/x",
            "query": [], "decision": "allow", "reason": "ok", "rule": None, "status": 200, "duration_ms": 1}

    def post(body: bytes, auth=cred, batch="b-1"):
        h = {"Content-Type": "application/x-ndjson"}
        if auth:
            h["Authorization"] = auth
        if batch:
            h["x-tokengate-batch"] = batch
        return server.api("POST", "/audit", raw=body, key=None, headers=h)

    good = (json.dumps(line) + "\n").encode()
    assert post(good, auth=None).status == 401
    assert post(good, auth="Bearer wrong").status == 401
    assert post(good, auth=cred + "x").status == 401
    assert post(good, batch=None).status == 400
    two = good + (json.dumps({**line, "request_id": "r2"}) + "\n").encode()
    for bad in (two + b"{not json\n", two + (json.dumps({**line, "token": "tg_x"}) + "\n").encode(),
                two + (json.dumps({k: v for k, v in line.items() if k != "status"}) + "\n").encode(),
                two + (json.dumps({**line, "decision": "maybe"}) + "\n").encode(), b"", b"\n\n"):
        r = post(bad, batch="bad-" + str(len(bad)))
        assert r.status == 400, (bad, r)
    assert audit(server)["lines"] == [], "a refused batch stores nothing"
    assert post(two, batch="b-2").json() == {"stored": 2}
    assert post(two, batch="b-2").json() == {"stored": 0, "duplicate": True}
    assert [l["request_id"] for l in audit(server)["lines"]] == ["r2", "r1"]
    assert server.ok("GET", "/api/v1/tokens") == {"tokens": [], "next": None}


def test_lines_are_forwarded_to_a_pipeline_through_its_outage(db_url, tmp_path, started, envoy_for):
    # The pipeline: a second tokengate-server (Vector and Fluent Bit are in no registry here).
    sink = started(Server(str(tmp_path / "sink"), f"sqlite://{tmp_path}/sink.db")).start()
    sink_cred = credential(sink)
    main = Server(str(tmp_path / "main"), db_url,
                  extra_args=["--audit-forward", sink.base + "/audit", "--audit-forward-authorization", sink_cred])
    started(main).start()
    main.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    _, secret = main.create(name="fwd", id="fwd", user="zed")
    env = envoy_for(main, "envoy-fwd")
    wait_for(lambda: env.request("GET", ISSUE, headers={"Authorization": f"Bearer {secret}"}).status == 200, 5)
    for i in range(10):
        env.request("GET", f"/rest/api/2/issue/F-{i}", headers={"Authorization": f"Bearer {secret}"})
    wait_lines(sink, 11, token="fwd")
    sink.stop()
    for i in range(10, 30):
        env.request("GET", f"/rest/api/2/issue/F-{i}", headers={"Authorization": f"Bearer {secret}"})
    wait_lines(main, 31, token="fwd")
    time.sleep(2)  # the forwarder retries into a pipeline that is away
    sink.start()
    got = wait_lines(sink, 31, timeout=30, token="fwd")
    paths = [l["path"] for l in got if "/F-" in l["path"]]
    assert sorted(paths) == sorted(f"/rest/api/2/issue/F-{i}" for i in range(30)), paths
    metrics = main.api("GET", "/metrics", key=None).body.decode()
    assert re.search(r"tokengate_server_forward_failed_total [1-9]", metrics), metrics
    assert "tokengate_server_forward_dropped_total 0" in metrics
    assert "tokengate_server_forward_queued 0" in metrics
