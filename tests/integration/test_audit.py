"""SPEC §11 (audit) and §12 (observability) through the real Envoy 1.40 and the real wasm.

Every decided request yields exactly one NDJSON line at the audit sink (demo/server.py); a
pass-through request yields none. Delivery survives a sink that is down or answers 500, keeps
the order, and accounts for every line it had to drop. Counters, the gauge and the access log
(filter state) follow.
"""

import base64
import json
import re
import threading
import time

import pytest

import harness
from harness import basic, new_token, sha256_hex

ISSUE = "/rest/api/2/issue/TG-1"
FIELDS = ["ts", "request_id", "token_id", "token_name", "user", "acting_as", "client_ip", "method", "path",
          "query", "decision", "reason", "rule", "status", "duration_ms"]
REASONS = ["ok", "unknown_token", "unknown_credentials", "malformed_credentials", "expired", "revoked",
           "user_mismatch", "method_scheme", "ip", "run_as", "restricted", "bad_request", "body_too_large",
           "media_type"]

T = {name: new_token() for name in ("bound", "userless", "expired", "revoked", "ip", "lines", "runas")}


def tok(id_, key, **extra):
    return {"id": id_, "name": f"Token {id_}", "sha256": sha256_hex(T[key]), **extra}


TOKENS = [
    tok("bound", "bound", user="Alice.Smith", run_as=["bob"]),
    tok("userless", "userless"),
    tok("expired", "expired", user="carol", expires="2020-01-01T00:00:00Z"),
    tok("revoked", "revoked", user="carol", revoked=True),
    tok("ip", "ip", user="dave", ips=["10.0.0.0/8"]),
    tok("lines", "lines", user="erin", limit_to=[
        "[get]/rest/api/2/myself",
        "[get]/rest/api/2/issue/.*",
        "[post]/rest/api/2/issue[JsonData::fields.project.key==KAN]",
    ]),
]

AUDIT = {"flush_interval_ms": 200, "batch_max_lines": 50, "queue_max_lines": 1000, "timeout_ms": 1000}
MAIN = {"auth_methods": "both", "unknown_credentials": "deny", "max_body_bytes": 1024, "audit": AUDIT,
        "tokens": TOKENS}


def with_audit(**changes):
    cfg = dict(MAIN)
    cfg["audit"] = {**AUDIT, **changes}
    return cfg


@pytest.fixture
def main(envoys):
    return envoys.get(MAIN)


def lines_for(demo, count, timeout=10.0, predicate=None):
    """Waits for `count` lines, then a little longer to catch any extra one."""
    got = demo.sink.wait_for_lines(count, timeout=timeout, predicate=predicate)
    assert len(got) >= count, f"expected {count} audit line(s), got {len(got)}: {got}"
    time.sleep(0.4)  # two flush intervals: a duplicate or stray line would show up
    return [l for l in demo.sink.lines if predicate is None or predicate(l)]


def one_line(demo, timeout=10.0):
    got = lines_for(demo, 1, timeout)
    assert len(got) == 1, got
    line = got[0]
    assert list(line) == FIELDS, list(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"]), line
    assert isinstance(line["duration_ms"], int) and 0 <= line["duration_ms"] < 10_000, line
    assert line["client_ip"] == "127.0.0.1", line
    assert line["decision"] in ("allow", "deny") and line["reason"] in REASONS, line
    return line


def no_secret_in_sink(demo):
    """No raw batch holds any token, its base64 form, or a Basic credential built from it."""
    raw = b"".join(p["body"] for p in demo.sink.posts)
    for t in list(T.values()) + [UNKNOWN_TG]:
        for form in (t, base64.b64encode(t.encode()).decode(), t[3:], t[-12:]):
            assert form.encode() not in raw, f"token material {form!r} in an audit batch"
        for user in ("Alice.Smith", "dave", "erin", "carol", "x", "jdoe", ""):
            assert basic(user, t).split(" ", 1)[1].encode() not in raw


UNKNOWN_TG = new_token()


# --------------------------------------------------------------------------- one line each


def test_allowed_request_line(main, demo):
    r = main.request("GET", ISSUE + "?expand=names&fields=summary&expand=x&my+field=1",
                     auth=("alice.smith", T["bound"]))
    assert r.status == 200, r
    (rec,) = demo.upstream.requests
    line = one_line(demo)
    assert line == {**line, "token_id": "bound", "token_name": "Token bound", "user": "Alice.Smith",
                    "acting_as": "Alice.Smith", "method": "GET", "path": ISSUE,
                    "query": ["expand", "fields", "my field"], "decision": "allow", "reason": "ok",
                    "rule": None, "status": 200}
    # Envoy's x-request-id, the one the upstream saw
    assert line["request_id"] == rec.header("x-request-id") and line["request_id"], rec.headers
    no_secret_in_sink(demo)


def test_run_as_keeps_both_users(main, demo):
    r = main.request("GET", ISSUE, bearer=T["bound"], headers={"contextUser": "bob"})
    assert r.status == 200, r
    line = one_line(demo)
    assert (line["user"], line["acting_as"], line["decision"]) == ("Alice.Smith", "bob", "allow"), line
    assert line["query"] == [], line


def test_userless_token_names_the_basic_user(main, demo):
    r = main.request("DELETE", "/rest/api/2/issue/TG-2", auth=("frank", T["userless"]))
    assert r.status == 200, r
    line = one_line(demo)
    assert (line["user"], line["acting_as"], line["method"], line["path"]) == \
        ("frank", "frank", "DELETE", "/rest/api/2/issue/TG-2"), line


def test_rule_number_of_the_matching_line(main, demo):
    r = main.request("GET", ISSUE, auth=("erin", T["lines"]))
    assert r.status == 200, r
    assert one_line(demo)["rule"] == 2


def test_body_decided_request_line(main, demo):
    body = json.dumps({"fields": {"project": {"key": "KAN"}, "summary": "secret summary"}})
    r = main.request("POST", "/rest/api/2/issue?notify=false", headers={"Content-Type": "application/json"},
                     body=body, auth=("erin", T["lines"]))
    assert r.status == 200, r
    line = one_line(demo)
    assert (line["decision"], line["rule"], line["method"], line["path"], line["query"], line["status"]) == \
        ("allow", 3, "POST", "/rest/api/2/issue", ["notify"], 200), line
    assert line["request_id"], line
    raw = b"".join(p["body"] for p in demo.sink.posts)
    assert b"secret summary" not in raw and b"KAN" not in raw


def _req(kind):
    """(method, path, kwargs, status, reason, token_id, user) for one refusal reason."""
    tg = T
    return {
        "unknown_token": ("GET", ISSUE, {"auth": ("x", UNKNOWN_TG)}, 401, None, None),
        "unknown_credentials": ("GET", ISSUE, {"auth": ("jdoe", "hunter2")}, 401, None, None),
        "malformed_credentials": ("GET", ISSUE, {"authorization": "Basic !!!" + tg["bound"]}, 401, None, None),
        "expired": ("GET", ISSUE, {"auth": ("carol", tg["expired"])}, 401, "expired", "carol"),
        "revoked": ("GET", ISSUE, {"auth": ("carol", tg["revoked"])}, 401, "revoked", "carol"),
        "user_mismatch": ("GET", ISSUE, {"auth": ("mallory", tg["bound"])}, 401, "bound", "Alice.Smith"),
        "method_scheme": ("GET", ISSUE, {"bearer": tg["userless"]}, 401, "userless", None),
        "ip": ("GET", ISSUE, {"auth": ("dave", tg["ip"])}, 403, "ip", "dave"),
        "run_as": ("GET", ISSUE, {"auth": ("alice.smith", tg["bound"]), "headers": {"contextUser": "eve"}},
                   403, "bound", "Alice.Smith"),
        "restricted": ("PUT", ISSUE, {"auth": ("erin", tg["lines"]), "body": "{}",
                                      "headers": {"Content-Type": "application/json"}}, 403, "lines", "erin"),
        "bad_request": ("GET", ISSUE + "?a=1", {"auth": ("erin", tg["lines"]),
                                                "headers": {"X-HTTP-Method-Override": "DELETE"}},
                        400, "lines", "erin"),
        "body_too_large": ("POST", "/rest/api/2/issue", {"auth": ("erin", tg["lines"]), "body": "x" * 2000,
                                                         "headers": {"Content-Type": "application/json"}},
                           413, "lines", "erin"),
        "media_type": ("POST", "/rest/api/2/issue", {"auth": ("erin", tg["lines"]), "body": "a=b",
                                                     "headers": {"Content-Type": "text/plain"}},
                       415, "lines", "erin"),
    }[kind]


@pytest.mark.parametrize("reason", REASONS[1:])
def test_each_refusal_reason_yields_one_line(main, demo, reason):
    method, path, kw, status, token_id, user = _req(reason)
    before = main.stat(f"tokengate.denied.{reason}")
    r = main.request(method, path, **kw)
    assert r.status == status, r
    assert demo.upstream.requests == []
    line = one_line(demo)
    assert line == {**line, "decision": "deny", "reason": reason, "status": status, "token_id": token_id,
                    "token_name": f"Token {token_id}" if token_id else None, "user": user, "acting_as": None,
                    "rule": None, "method": method, "path": path.split("?")[0]}, line
    assert main.stat(f"tokengate.denied.{reason}") == before + 1
    assert main.stat("tokengate.audit.sent") >= 1
    no_secret_in_sink(demo)


def test_query_names_of_a_refused_malformed_query(main, demo):
    r = main.request("GET", "/rest/api/2/search?jql=x&b=%zz&jql=y", auth=("erin", T["lines"]))
    assert r.status == 400, r
    line = one_line(demo)
    assert (line["reason"], line["query"]) == ("bad_request", ["jql", "b"]), line


def test_passthrough_requests_yield_no_line(main, demo):
    before = main.stat("tokengate.passthrough")
    assert main.request("GET", ISSUE).status == 200  # no credentials
    assert main.request("GET", "/secure/Dashboard.jspa", auth=("x", T["bound"])).status == 200  # unprotected
    # then one decided request: exactly its line arrives
    assert main.request("GET", "/rest/api/2/myself", auth=("erin", T["lines"])).status == 200
    line = one_line(demo)
    assert line["path"] == "/rest/api/2/myself" and line["rule"] == 1
    assert main.stat("tokengate.passthrough") == before + 2


def test_passthrough_unknown_credentials_yield_no_line(envoys, demo):
    env = envoys.get({**MAIN, "unknown_credentials": "passthrough"})
    assert env.request("GET", ISSUE, auth=("jdoe", "hunter2")).status == 200
    assert env.request("GET", ISSUE, authorization="Negotiate abc").status == 200
    assert env.request("GET", ISSUE, auth=("carol", T["revoked"])).status == 401
    line = one_line(demo)
    assert line["reason"] == "revoked"


def test_batch_post_shape(main, demo):
    for i in range(3):
        assert main.request("GET", f"/rest/api/2/issue/TG-{i}", auth=("erin", T["lines"])).status == 200
    got = lines_for(demo, 3)
    assert [l["path"] for l in got] == [f"/rest/api/2/issue/TG-{i}" for i in range(3)]
    for post in demo.sink.posts:
        headers = {k.lower(): v for k, v in post["headers"]}
        assert headers["content-type"] == "application/x-ndjson"
        assert headers["host"] == "audit"
        # An id per batch (SPEC §11); no credential unless `audit.authorization` is set.
        assert re.fullmatch(r"[0-9a-f]{32}", headers["x-tokengate-batch"]), headers
        assert "authorization" not in headers
        body = post["body"].decode()
        assert body.endswith("\n") and "\n\n" not in body
        for raw in body.splitlines():
            assert list(json.loads(raw)) == FIELDS


# --------------------------------------------------------------------------- stats, access log


def test_counters_and_access_log(main, demo):
    s0 = {k: main.stat(f"tokengate.{k}") for k in ("allowed", "denied", "denied.revoked", "passthrough",
                                                  "audit.sent")}
    ok = main.request("GET", ISSUE, auth=("alice.smith", T["bound"]), headers={"X-Request-Id": "ignored"})
    assert ok.status == 200
    assert main.request("GET", ISSUE, auth=("carol", T["revoked"])).status == 401
    assert main.request("GET", "/secure/x").status == 200
    got = lines_for(demo, 2)
    assert len(got) == 2
    deadline = time.monotonic() + 5
    while main.stat("tokengate.audit.sent") < s0["audit.sent"] + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    s1 = {k: main.stat(f"tokengate.{k}") for k in s0}
    assert {k: s1[k] - s0[k] for k in s0} == {"allowed": 1, "denied": 1, "denied.revoked": 1, "passthrough": 1,
                                             "audit.sent": 2}
    assert main.stat("tokengate.audit.queued") == 0
    # the access log reads token id, user and decision from filter state
    rid = got[0]["request_id"]
    entry = main.wait_access_log(re.escape(f"id={rid}"))
    assert "token=bound user=Alice.Smith decision=allow reason=ok" in entry, entry
    rid = got[1]["request_id"]
    entry = main.wait_access_log(re.escape(f"id={rid}"))
    assert " 401 token=revoked user=carol decision=deny reason=revoked" in entry, entry
    entry = main.wait_access_log(r'"GET /secure/x" 200')
    assert "token=- user=- decision=- reason=-" in entry, entry


def test_without_audit_lines_go_to_the_envoy_log(envoys, demo):
    cfg = {k: v for k, v in MAIN.items() if k != "audit"}
    env = envoys.get(cfg)
    r = env.request("GET", "/rest/api/2/issue/LOG-1?a=1", auth=("carol", T["expired"]))
    assert r.status == 401
    deadline = time.monotonic() + 5
    found = []
    while not found and time.monotonic() < deadline:
        found = [l for l in env.log().splitlines() if "tokengate audit:" in l and "LOG-1" in l]
        time.sleep(0.1)
    assert len(found) == 1, env.log()[-3000:]
    line = json.loads(found[0].split("tokengate audit: ", 1)[1])
    assert list(line) == FIELDS
    assert (line["reason"], line["status"], line["token_id"]) == ("expired", 401, "expired")
    assert T["expired"] not in env.log()
    time.sleep(0.3)
    assert demo.sink.posts == []


# --------------------------------------------------------------------------- delivery


def test_full_batch_goes_before_the_timer(envoys, demo):
    env = envoys.get(with_audit(flush_interval_ms=60_000, batch_max_lines=5, queue_max_lines=100))
    t0 = time.monotonic()
    for i in range(5):
        assert env.request("GET", f"/rest/api/2/issue/B-{i}", auth=("erin", T["lines"])).status == 200
    got = demo.sink.wait_for_lines(5, timeout=10)
    assert len(got) == 5 and time.monotonic() - t0 < 10
    assert len(demo.sink.posts) == 1
    assert [l["path"] for l in got] == [f"/rest/api/2/issue/B-{i}" for i in range(5)]


def _lines(demo, prefix):
    """Sink lines of this test's requests (an Envoy of an earlier test may still deliver)."""
    return [l for l in demo.sink.lines if l["path"].startswith(f"/rest/api/2/issue/{prefix}-")]


def _wait_lines(demo, prefix, count, timeout):
    deadline = time.monotonic() + timeout
    while len(_lines(demo, prefix)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a duplicate would show up
    return _lines(demo, prefix)


def _client_loop(env, stop, results, prefix):
    i = 0
    while not stop.is_set():
        t = time.monotonic()
        r = env.request("GET", f"/rest/api/2/issue/{prefix}-{i}", auth=("erin", T["lines"]), timeout=10)
        results.append((r.status, time.monotonic() - t))
        i += 1
        time.sleep(0.05)


def test_sink_down_for_10s_loses_nothing(envoys, demo):
    env = envoys.get(with_audit(flush_interval_ms=200, batch_max_lines=20, queue_max_lines=10_000))
    # baseline latency with the sink up
    base = []
    for i in range(10):
        t = time.monotonic()
        assert env.request("GET", f"/rest/api/2/issue/UP-{i}", auth=("erin", T["lines"])).status == 200
        base.append(time.monotonic() - t)
    assert len(_wait_lines(demo, "UP", 10, 10)) == 10
    demo.sink.reset()
    failed0 = env.stat("tokengate.audit.failed")

    demo.sink.go_down()
    stop, results = threading.Event(), []
    worker = threading.Thread(target=_client_loop, args=(env, stop, results, "DOWN"))
    worker.start()
    time.sleep(10)
    stop.set()
    worker.join(20)
    n = len(results)
    assert n >= 20, n
    assert all(status == 200 for status, _ in results), results
    # no added delay: the outage does not slow requests down (generous bound: shared CPU)
    slow = [d for _, d in results if d > max(base) + 0.5]
    assert len(slow) <= n // 20, (slow, max(base))
    assert env.stat("tokengate.audit.failed") > failed0
    assert env.stat("tokengate.audit.queued") >= 1
    assert _lines(demo, "DOWN") == []

    demo.sink.come_up()
    got = _wait_lines(demo, "DOWN", n, 30)
    assert len(got) == n, (len(got), n)
    assert [l["path"] for l in got] == [f"/rest/api/2/issue/DOWN-{i}" for i in range(n)], "order kept"
    assert env.stat("tokengate.audit.dropped") == 0
    deadline = time.monotonic() + 5
    while env.stat("tokengate.audit.queued") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert env.stat("tokengate.audit.queued") == 0


def test_sink_answering_500_then_recovering(envoys, demo):
    env = envoys.get(with_audit(flush_interval_ms=100, batch_max_lines=4, queue_max_lines=1000))
    failed0 = env.stat("tokengate.audit.failed")
    demo.sink.set_mode("error")
    for i in range(10):
        assert env.request("GET", f"/rest/api/2/issue/E-{i}", auth=("erin", T["lines"])).status == 200
    deadline = time.monotonic() + 10
    while len([p for p in demo.sink.posts if p["status"] == 500]) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    refused = [p for p in demo.sink.posts if p["status"] == 500]
    assert len(refused) >= 3, demo.sink.posts
    # every retry starts again from the oldest line: in order, nothing skipped
    for p in refused:
        paths = [json.loads(l)["path"] for l in p["body"].decode().splitlines()]
        assert paths == [f"/rest/api/2/issue/E-{i}" for i in range(len(paths))], paths
    # A retry carries the same lines, so the same x-tokengate-batch: a receiver stores it once.
    ids = {}
    for p in refused:
        h = {k.lower(): v for k, v in p["headers"]}
        ids.setdefault(p["body"], set()).add(h["x-tokengate-batch"])
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({next(iter(v)) for v in ids.values()}) == len(ids)
    demo.sink.set_mode("ok")
    got = _wait_lines(demo, "E", 10, 15)
    assert [l["path"] for l in got] == [f"/rest/api/2/issue/E-{i}" for i in range(10)]
    assert env.stat("tokengate.audit.failed") >= failed0 + 3
    first_ok = next(p for p in demo.sink.posts if p["status"] == 200)
    h = {k.lower(): v for k, v in first_ok["headers"]}
    assert h["x-tokengate-batch"] == next(iter(ids[refused[0]["body"]]))


def test_authorization_is_sent_with_every_batch(envoys, demo):
    env = envoys.get(with_audit(flush_interval_ms=100, authorization="Bearer sink-credential"))
    for i in range(3):
        assert env.request("GET", f"/rest/api/2/issue/AZ-{i}", auth=("erin", T["lines"])).status == 200
    assert len(_wait_lines(demo, "AZ", 3, 10)) == 3
    for p in demo.sink.posts:
        h = {k.lower(): v for k, v in p["headers"]}
        assert h["authorization"] == "Bearer sink-credential"
    # The credential never reaches the Envoy log.
    assert "sink-credential" not in env.log()


def test_overflow_drops_oldest_and_counts_exactly(envoys, demo):
    env = envoys.get(with_audit(flush_interval_ms=100, batch_max_lines=5, queue_max_lines=20))
    sent0, dropped0 = env.stat("tokengate.audit.sent"), env.stat("tokengate.audit.dropped")
    demo.sink.go_down()
    produced = 60
    for i in range(produced):
        assert env.request("GET", f"/rest/api/2/issue/O-{i}", auth=("erin", T["lines"])).status == 200
    deadline = time.monotonic() + 5
    while env.stat("tokengate.audit.queued") != 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.stat("tokengate.audit.queued") == 20
    dropped = env.stat("tokengate.audit.dropped") - dropped0
    assert dropped == produced - 20, dropped
    demo.sink.come_up()
    got = _wait_lines(demo, "O", produced - dropped, 20)
    sent = env.stat("tokengate.audit.sent") - sent0
    assert len(got) == sent == produced - dropped, (len(got), sent, dropped)
    assert env.stat("tokengate.audit.dropped") - dropped0 == dropped
    # the newest lines survive, in order (the oldest were dropped)
    nums = [int(l["path"].rsplit("-", 1)[1]) for l in got]
    assert nums == sorted(nums) and nums[-1] == produced - 1, nums
    assert env.stat("tokengate.audit.queued") == 0


# --------------------------------------------------------------------------- config update


@pytest.mark.wasm_only
def test_lines_left_by_a_replaced_config_go_out_from_the_next_one(demo, tmp_path):
    """Receiver away across a token-set update (SPEC §11): the old configuration cannot deliver
    on its way out, so its lines move to the configuration that replaced it and go out from
    there, in order, once the receiver is back; none is dropped or sent twice."""
    from test_hot_reload import TOKEN_C, HotEnvoy, token_set

    fast = {"flush_interval_ms": 200, "batch_max_lines": 50, "queue_max_lines": 1000, "timeout_ms": 500}
    h = HotEnvoy(str(tmp_path), demo, {**token_set(), "audit": fast})
    h.env.start()
    try:
        demo.sink.go_down()
        for i in range(30):
            assert h.env.request("GET", f"/rest/api/2/issue/H-{i}", auth=("c", TOKEN_C)).status == 200
        h.publish({**token_set(b=True), "audit": fast})
        for i in range(30, 40):
            assert h.env.request("GET", f"/rest/api/2/issue/H-{i}", auth=("c", TOKEN_C)).status == 200
        deadline = time.monotonic() + 10
        while "took over" not in h.env.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        # One VM per worker: each worker's new configuration takes over its own old lines.
        taken = sum(int(n) for n in re.findall(r"took over (\d+) line", h.env.log()))
        assert taken >= 30, h.env.log()[-3000:]
        demo.sink.come_up()
        got = [l["path"] for l in _wait_lines(demo, "H", 40, 30)]
        assert sorted(got) == sorted(f"/rest/api/2/issue/H-{i}" for i in range(40)), got  # each once
        # Two workers deliver independently; within each batch the lines keep their order.
        for p in demo.sink.posts:
            if p["status"] == 200:
                ts = [json.loads(l)["ts"] for l in p["body"].decode().splitlines()]
                assert ts == sorted(ts), ts
        assert h.env.stat("tokengate.audit.dropped") == 0
    finally:
        h.env.stop()


@pytest.mark.wasm_only
def test_token_set_update_flushes_what_the_old_config_held(demo, tmp_path):
    """A new token set (ECDS) replaces the root context: the old one sends its queue on its
    way out, long before its own flush timer (60 s) would have."""
    from test_hot_reload import TOKEN_C, HotEnvoy, token_set

    slow = {"flush_interval_ms": 60_000, "batch_max_lines": 500, "queue_max_lines": 1000}
    h = HotEnvoy(str(tmp_path), demo, {**token_set(), "audit": slow})
    h.env.start()
    try:
        for i in range(6):
            assert h.env.request("GET", f"/rest/api/2/issue/U-{i}", auth=("c", TOKEN_C)).status == 200
        time.sleep(0.5)
        assert _lines(demo, "U") == []
        t0 = time.monotonic()
        h.publish({**token_set(b=True), "audit": slow})
        got = _wait_lines(demo, "U", 6, 20)
        assert sorted(l["path"] for l in got) == [f"/rest/api/2/issue/U-{i}" for i in range(6)]
        assert time.monotonic() - t0 < 20
    finally:
        h.env.stop()
