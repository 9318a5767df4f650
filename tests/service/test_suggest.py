"""Suggested lines from real use (SPEC §19): from a recorded week of a bot's calls, lines that,
enforced, allow every recorded call and refuse the near misses."""

import datetime
import hashlib
import json
import random
import time

from test_audit_store import credential

NOW = time.time()


def recorded_week(seed=5):
    """(method, path) calls of a Jira bot over seven days: issue keys, numeric ids, dates, and a
    few one-off calls."""
    rnd = random.Random(seed)
    calls = []
    for day in range(7):
        date = datetime.date.fromtimestamp(NOW - (7 - day) * 86400).isoformat()
        for _ in range(40):
            calls.append(("GET", f"/rest/api/2/issue/JRA-{rnd.randrange(1, 5000)}"))
        for _ in range(15):
            calls.append(("PUT", f"/rest/api/2/issue/JRA-{rnd.randrange(1, 5000)}"))
        for _ in range(10):
            calls.append(("POST", f"/rest/api/2/issue/KANBAN-{rnd.randrange(1, 900)}/comment"))
        for _ in range(5):
            calls.append(("GET", f"/rest/api/2/filter/{rnd.randrange(10000, 99999)}"))
        calls.append(("GET", f"/rest/tempo-timesheets/4/worklogs/{date}"))
        calls.append(("GET", "/rest/api/2/myself"))
    calls += [("GET", "/rest/api/2/serverInfo"), ("DELETE", "/rest/api/2/issue/JRA-77/watchers")]
    return calls


NEAR_MISSES = [
    ("GET", "/rest/api/2/issue/ABC-12"),            # another project
    ("DELETE", "/rest/api/2/issue/JRA-12"),         # another method
    ("POST", "/rest/api/2/issue/JRA-12"),
    ("GET", "/rest/api/2/issue/JRA-12/comment"),    # a sibling endpoint with a method not seen there
    ("POST", "/rest/api/2/issue/JRA-12/comment"),   # comments seen on KANBAN only
    ("GET", "/rest/api/2/issue/JRA-12/worklog"),
    ("GET", "/rest/api/2/filter/favourite"),        # not a number
    ("PUT", "/rest/api/2/filter/12345"),
    ("GET", "/rest/api/2/project"),
    ("GET", "/rest/api/2/myself/extra"),
    ("GET", "/rest/tempo-timesheets/4/worklogs/tomorrow"),
    ("GET", "/rest/api/2/issue/JRA-12a"),
    ("GET", "/rest/api/2/issue/JRA-"),
    ("GET", "/rest/api/2/user"),
    ("POST", "/rest/api/2/serverInfo"),
    ("DELETE", "/rest/api/2/issue/JRA-78/watchers/bob"),
]


def store_calls(server, token_id, calls, user="bot"):
    cred = credential(server)
    lines = []
    for i, (method, path) in enumerate(calls):
        ts = datetime.datetime.fromtimestamp(NOW - 7 * 86400 + i * (7 * 86400 / len(calls)), datetime.timezone.utc)
        lines.append(json.dumps({
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z", "request_id": f"r{i}",
            "token_id": token_id, "token_name": "bot", "user": user, "acting_as": user, "client_ip": "10.0.0.5",
            "method": method, "path": path, "query": [], "decision": "allow", "reason": "ok", "rule": None,
            "status": 200, "duration_ms": 3}))
    # One refused call is not a use: it must not be suggested.
    lines.append(json.dumps({
        "ts": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"), "request_id": "rx",
        "token_id": token_id, "token_name": "bot", "user": user, "acting_as": None, "client_ip": "10.0.0.5",
        "method": "DELETE", "path": "/rest/api/2/project/JRA", "query": [], "decision": "deny",
        "reason": "ip", "rule": None, "status": 403, "duration_ms": 1}))
    body = ("\n".join(lines) + "\n").encode()
    r = server.api("POST", "/audit", raw=body, key=None, headers={
        "Authorization": cred, "x-tokengate-batch": hashlib.sha256(body).hexdigest()[:32],
        "Content-Type": "application/x-ndjson"})
    assert r.status == 200, r


def test_suggested_lines_cover_the_week_and_refuse_the_near_misses(server):
    server.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    server.create(name="bot", id="bot", user="bot")
    week = recorded_week()
    store_calls(server, "bot", week)
    out = server.ok("GET", "/api/v1/tokens/bot/suggest?days=30")
    lines = [l["line"] for l in out["lines"]]
    assert out["calls"] == len(week) and out["distinct_calls"] == len(set(week))
    assert sum(l["calls"] for l in out["lines"]) == len(week)
    assert "[GET,PUT]/rest/api/2/issue/JRA-[0-9]+" in lines, lines
    assert "[POST]/rest/api/2/issue/KANBAN-[0-9]+/comment" in lines, lines
    assert not any("project" in l for l in lines), "a refused call is not suggested"
    # Enforce them on a new token and ask the filter's own decision.
    _, secret = server.create(name="tight", id="tight", user="bot", limit_to=lines)
    time.sleep(0.4)

    def decision(method, path):
        return server.ok("POST", "/api/v1/explain", {"method": method, "url": path,
                                                      "headers": [["Authorization", f"Bearer {secret}"]]})["decision"]

    for method, path in sorted(set(week)):
        assert decision(method, path) == "allow", (method, path)
    for method, path in NEAR_MISSES:
        assert decision(method, path) == "deny", (method, path)
    print(f"\nsuggest: {len(week)} calls, {len(set(week))} distinct, {len(lines)} lines, "
          f"{len(set(week))} covered, {len(NEAR_MISSES)} near misses refused")
    r = server.api("GET", "/api/v1/tokens/bot/suggest?days=0")
    assert r.status == 400 and r.json()["field"] == "days"
    assert server.api("GET", "/api/v1/tokens/nobody/suggest").status == 404
