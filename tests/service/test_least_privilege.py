"""Least privilege and rotation (SPEC §19) through a real Envoy: shadow lines report and never
decide, never make the filter buffer; the previous secret of a rotated token works until its
`until`; promotion in one change; the notice when an old secret is still in use."""

import json
import time

import pytest

from harness import assert_jira_error
from service import Server, wait_for
from test_audit_store import audit, wait_lines
from test_notices import Receiver

SETTINGS = {"auth_methods": "both", "max_body_bytes": 1000}


def call(env, secret, method, path, body=None, ctype=None):
    h = {"Authorization": f"Bearer {secret}"}
    if ctype:
        h["Content-Type"] = ctype
    return env.request(method, path, headers=h, body=body)


def test_shadow_lines_report_and_never_change_a_decision(server, envoy_for):
    server.ok("PUT", "/api/v1/settings", SETTINGS)
    enforced = ["[get]/rest/api/2/issue/.*", "[post]/rest/api/2/issue/[A-Z]+-[0-9]+/comment"]
    shadow = ["[get]/rest/api/2/issue/JRA-[0-9]+", "[post]/rest/api/2/search[JsonData::jql==project = JRA]"]
    _, with_shadow = server.create(name="shadowed", id="shadowed", user="bot", limit_to=enforced,
                                   shadow_limit_to=shadow)
    _, plain = server.create(name="plain", id="plain", user="bot", limit_to=enforced)
    env = envoy_for(server, "envoy-shadow")
    wait_for(lambda: call(env, with_shadow, "GET", "/rest/api/2/issue/JRA-1").status == 200, 5)
    cases = [("GET", "/rest/api/2/issue/JRA-1", None, None, 1),      # allowed, shadow line 1
             ("GET", "/rest/api/2/issue/ABC-1", None, None, 0),      # allowed, shadow would refuse
             ("POST", "/rest/api/2/issue/ABC-1/comment", b'{"body":"x"}', "application/json", 0),
             ("DELETE", "/rest/api/2/issue/JRA-1", None, None, 0),   # refused stays refused
             # Only a shadow JsonData line could match, and no enforced line needs the body: not
             # buffered (a 5,000-byte body passes max_body_bytes 1,000), not evaluated (null).
             ("POST", "/rest/api/2/search", json.dumps({"jql": "project = JRA", "pad": "x" * 5000}).encode(),
              "application/json", None)]
    for method, path, body, ctype, _ in cases:
        a = call(env, with_shadow, method, path + "?c=1", body, ctype).status
        b = call(env, plain, method, path + "?c=1", body, ctype).status
        assert a == b, (method, path, a, b)
    assert call(env, with_shadow, "POST", "/rest/api/2/search", json.dumps({"jql": "x"}).encode(),
                "application/json").status == 403, "the search is not enforced: refused, as for `plain`"
    lines = [l for l in wait_lines(server, len(cases), token="shadowed") if l["query"] == ["c"]]
    got = {(l["method"], l["path"]): l for l in lines}
    for method, path, _, _, rule in cases:
        l = got[(method, path)]
        assert l["shadow_rule"] == rule, l
        assert "secret" not in l
    plain_lines = wait_lines(server, len(cases), token="plain")
    assert all("shadow_rule" not in l for l in plain_lines)
    rep = server.ok("GET", "/api/v1/tokens/shadowed/shadow?days=1")
    assert [x["calls"] for x in rep["lines"]] == [1 + 1, 0]  # the warm-up call too
    assert rep["would_refuse"] >= 3 and rep["not_evaluated"] >= 1
    # Promote: the shadow lines become the enforced ones, in one change, logged.
    t = server.ok("POST", "/api/v1/tokens/shadowed/promote")
    assert t["limit_to"] == shadow and t["shadow_limit_to"] == []
    wait_for(lambda: call(env, with_shadow, "GET", "/rest/api/2/issue/ABC-1").status == 403, 3, what="promoted")
    assert call(env, with_shadow, "GET", "/rest/api/2/issue/JRA-9").status == 200
    log = server.ok("GET", "/api/v1/admin-log")["entries"]
    assert log[0]["action"] == "token.promote" and log[0]["target"] == "shadowed"
    assert server.api("POST", "/api/v1/tokens/shadowed/promote").status == 409


def test_rotation_keeps_the_old_secret_until_its_time(db_url, tmp_path, started, envoy_for):
    rx = started(Receiver().start())
    srv = started(Server(str(tmp_path / "rot"), db_url, extra_args=[
        "--notify-url", f"http://127.0.0.1:{rx.port}/hook", "--notify-scan-seconds", "1"])).start()
    srv.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    tok, old = srv.create(name="rotated", id="rotated", user="bot")
    env = envoy_for(srv, "envoy-rotate")
    wait_for(lambda: call(env, old, "GET", "/rest/api/2/myself").status == 200, 5)
    grace_s = 8
    out = srv.ok("POST", "/api/v1/tokens/rotated/rotate", {"grace_hours": grace_s / 3600})
    new = out["secret"]
    assert new != old and new.startswith("tg_") and out["token"]["previous"]["sha256"] == tok["sha256"]
    wait_for(lambda: call(env, new, "GET", "/rest/api/2/myself").status == 200, 3, what="new secret live")
    t0 = time.monotonic()
    assert call(env, old, "GET", "/rest/api/2/myself?s=old").status == 200, "the old secret still works"
    # After half the grace period the old secret in use is worth a notice.
    time.sleep(max(0, grace_s / 2 + 0.5 - (time.monotonic() - t0)))
    assert call(env, old, "GET", "/rest/api/2/myself?s=old").status == 200
    wait_for(lambda: any(b["event"] == "token.secret_previous_used" for _, b in rx.got), 10, 0.1, "notice")
    # Past `until` it answers 401.
    time.sleep(max(0, grace_s + 0.5 - (time.monotonic() - t0)))
    r = call(env, old, "GET", "/rest/api/2/myself?s=late")
    assert_jira_error(r, 401, "token expired")
    assert call(env, new, "GET", "/rest/api/2/myself?s=new").status == 200
    lines = wait_lines(srv, 4, token="rotated")
    by = [(l["query"], l.get("secret"), l["decision"]) for l in lines if l["query"] == ["s"]]
    assert (["s"], "previous", "allow") in by and (["s"], "current", "allow") in by
    assert (["s"], "previous", "deny") in by
    assert [b["event"] for _, b in rx.got].count("token.secret_previous_used") == 1
    log = srv.ok("GET", "/api/v1/admin-log")["entries"]
    assert any(e["action"] == "token.rotate" and e["target"] == "rotated" for e in log)
    for bad in ({"grace_hours": -1}, {"grace_hours": 721}, {"grace": 1}):
        r = srv.api("POST", "/api/v1/tokens/rotated/rotate", bad)
        assert r.status == 400, r
    assert srv.api("POST", "/api/v1/tokens/nope/rotate", {}).status == 404
