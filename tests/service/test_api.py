"""The admin API of SPEC §15, endpoint by endpoint, allowed and refused, on SQLite and PostgreSQL."""

import json
import os
import re
import subprocess
import time

import pytest

import service
from service import SERVER_BIN, Server

TG = re.compile(r"^tg_[0-9A-Za-z]{38}$")


def settle():
    """Changes are pushed after a 100 ms coalescing window (SPEC §15); /config shows what was pushed."""
    time.sleep(0.35)


def err(r, status, field=None):
    assert r.status == status, r
    body = r.json()
    assert set(body) <= {"error", "field", "line", "column"} and body["error"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


# --------------------------------------------------------------------------- authentication


def test_every_endpoint_needs_an_admin_key(server):
    paths = [("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens"), ("GET", "/api/v1/tokens/x"),
             ("PATCH", "/api/v1/tokens/x"), ("DELETE", "/api/v1/tokens/x"), ("POST", "/api/v1/tokens/x/revoke"),
             ("GET", "/api/v1/settings"), ("PUT", "/api/v1/settings"), ("GET", "/api/v1/config"),
             ("GET", "/api/v1/fleet"), ("POST", "/api/v1/explain"), ("GET", "/api/v1/admin-log"),
             ("GET", "/api/v1/audit")]
    for method, path in paths:
        for key in (None, "tga_" + "x" * 40, "tg_notanadminkey", server.key[:-1]):
            r = server.api(method, path, {} if method in ("POST", "PUT", "PATCH") else None, key=key)
            err(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = server.api(method, path, None, key=None, headers={"Authorization": f"Basic {server.key}"})
        err(r, 401)
    assert server.api("GET", "/healthz", key=None).status == 200
    assert b"tokengate_server_config_generation" in server.api("GET", "/metrics", key=None).body


# --------------------------------------------------------------------------- tokens


def test_create_shows_the_secret_once_with_snippets(server):
    out = server.ok("POST", "/api/v1/tokens", {"name": "CI bot", "user": "ansible@jira.pl",
                                                "expires_in_days": 30, "ips": ["10.0.0.0/8", "127.0.0.1"],
                                                "run_as": ["alice"],
                                                "limit_to": "[get]/rest/api/2/.*<br>[post].*/comment"}, status=201)
    tok, secret = out["token"], out["secret"]
    assert TG.match(secret)
    assert tok["id"] == "ci-bot" and tok["name"] == "CI bot" and tok["user"] == "ansible@jira.pl"
    assert tok["limit_to"] == ["[get]/rest/api/2/.*", "[post].*/comment"]
    assert tok["status"] == "active" and tok["created_by"] == "admin" and tok["revoked_at"] is None
    assert tok["sha256"] == service.harness.sha256_hex(secret)
    assert tok["usage"] == {"calls": 0, "allowed": 0, "denied": 0, "last_used_at": None, "last_client_ip": None}
    assert set(out["snippets"]) == {"curl_basic", "curl_bearer", "javascript"}
    assert secret in out["snippets"]["curl_basic"] and "-u" in out["snippets"]["curl_basic"]
    assert f"Bearer {secret}" in out["snippets"]["curl_bearer"]
    # Never again: not in the token object, the list, the config, nor the admin log.
    for path in ("/api/v1/tokens/ci-bot", "/api/v1/tokens", "/api/v1/config", "/api/v1/admin-log"):
        assert secret not in server.api("GET", path).body.decode()
    # A second token with the same name gets its own id.
    t2, _ = server.create(name="CI bot")
    assert t2["id"].startswith("ci-bot-") and t2["user"] is None


def test_a_bad_line_is_refused_with_the_filters_message_and_position(server):
    r = server.api("POST", "/api/v1/tokens", {"name": "x", "limit_to": ["/rest/.*", "[get]/rest/(?<=a)b"]})
    body = err(r, 400, "limit_to[1]")
    assert body["line"] == 2 and body["column"] >= 6 and "look-behind" in body["error"], body
    assert server.ok("GET", "/api/v1/tokens")["tokens"] == []
    version = server.ok("GET", "/api/v1/config")["version"]
    assert version == "1", "nothing was stored, so nothing pushed"
    for bad, field in [({"name": ""}, "name"), ({"name": "x", "user": "a,b"}, "user"),
                       ({"name": "x", "ips": ["10.0.0.0/33"]}, "ips[0]"),
                       ({"name": "x", "expires": "tomorrow"}, "expires"),
                       ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
                       ({"name": "x", "expires": "2030-01-01T00:00:00Z", "expires_in_days": 3}, "expires"),
                       ({"name": "x", "colour": "red"}, "colour"),
                       ({"name": "x", "token": "has space"}, "token"),
                       ({"name": "x", "limit_to": [1]}, "limit_to[0]")]:
        err(server.api("POST", "/api/v1/tokens", bad), 400, field)
    err(server.api("POST", "/api/v1/tokens", raw=b"{not json", headers={"Content-Type": "application/json"}), 400)
    err(server.api("POST", "/api/v1/tokens", [1, 2]), 400)


def test_list_filters_search_and_pages(server):
    now = time.time()
    for i in range(5):
        server.create(name=f"bot {i}", id=f"bot-{i}", user="alice" if i % 2 else "bob")
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3 * 86400))
    server.create(name="expiring", id="exp-soon", expires=soon)
    server.create(name="old", id="exp-past", expires="2020-01-01T00:00:00Z")
    server.create(name="gone", id="rev")
    server.ok("POST", "/api/v1/tokens/rev/revoke")
    ids = lambda q: [t["id"] for t in server.ok("GET", "/api/v1/tokens" + q)["tokens"]]  # noqa: E731
    assert ids("?user=ALICE") == ["bot-1", "bot-3"]
    assert ids("?q=BOT") == ["bot-0", "bot-1", "bot-2", "bot-3", "bot-4"]
    assert ids("?status=revoked") == ["rev"]
    assert ids("?status=expired") == ["exp-past"]
    assert ids("?status=expiring") == ["exp-soon"]
    assert "rev" not in ids("?status=active") and "exp-past" not in ids("?status=active")
    assert set(ids("?status=unused")) == {"bot-0", "bot-1", "bot-2", "bot-3", "bot-4", "exp-soon"}
    page1 = server.ok("GET", "/api/v1/tokens?limit=3")
    assert len(page1["tokens"]) == 3 and page1["next"] == page1["tokens"][-1]["id"]
    page2 = server.ok("GET", f"/api/v1/tokens?limit=3&cursor={page1['next']}")
    page3 = server.ok("GET", f"/api/v1/tokens?limit=3&cursor={page2['next']}")
    assert page3["next"] is None
    all_ids = [t["id"] for p in (page1, page2, page3) for t in p["tokens"]]
    assert all_ids == sorted(all_ids) and len(all_ids) == 8
    err(server.api("GET", "/api/v1/tokens?status=sleeping"), 400, "status")
    err(server.api("GET", "/api/v1/tokens?limit=0"), 400, "limit")


def test_get_patch_revoke_delete(server):
    tok, _ = server.create(name="edit me", user="bob", expires="2030-01-01T00:00:00Z")
    tid = tok["id"]
    err(server.api("GET", "/api/v1/tokens/nope"), 404)
    err(server.api("PATCH", "/api/v1/tokens/nope", {"name": "x"}), 404)
    err(server.api("POST", "/api/v1/tokens/nope/revoke"), 404)
    err(server.api("DELETE", "/api/v1/tokens/nope"), 404)
    t = server.ok("PATCH", f"/api/v1/tokens/{tid}", {"name": "renamed", "limit_to": ["[get]/rest/.*"],
                                                      "ips": ["127.0.0.1"], "run_as": ["*"]})
    assert (t["name"], t["limit_to"], t["ips"], t["run_as"]) == ("renamed", ["[get]/rest/.*"], ["127.0.0.1"], ["*"])
    assert server.ok("GET", f"/api/v1/tokens/{tid}") == t
    # Never a later expiry; an earlier one is fine.
    err(server.api("PATCH", f"/api/v1/tokens/{tid}", {"expires": "2031-01-01T00:00:00Z"}), 409)
    t = server.ok("PATCH", f"/api/v1/tokens/{tid}", {"expires": "2029-06-01T00:00:00Z"})
    assert t["expires"] == "2029-06-01T00:00:00Z"
    # A token without expiry may get one; a past time expires it at once.
    t2, _ = server.create(name="no expiry")
    assert server.ok("PATCH", f"/api/v1/tokens/{t2['id']}", {"expires": "2020-01-01T00:00:00Z"})["status"] == "expired"
    for fixed in ("user", "id", "sha256", "token"):
        err(server.api("PATCH", f"/api/v1/tokens/{tid}", {fixed: "x"}), 400, fixed)
    body = err(server.api("PATCH", f"/api/v1/tokens/{tid}", {"limit_to": ["[get](a"]}), 400, "limit_to[0]")
    assert body["line"] == 1
    r1 = server.ok("POST", f"/api/v1/tokens/{tid}/revoke")
    assert r1["status"] == "revoked" and r1["revoked_by"] == "admin" and r1["revoked_at"]
    time.sleep(0.01)
    r2 = server.ok("POST", f"/api/v1/tokens/{tid}/revoke")
    assert r2["revoked_at"] == r1["revoked_at"], "a second revoke keeps revoked_at"
    err(server.api("PATCH", f"/api/v1/tokens/{tid}", {"name": "again"}), 409)
    assert server.api("DELETE", f"/api/v1/tokens/{tid}").status == 204
    err(server.api("GET", f"/api/v1/tokens/{tid}"), 404)
    log = server.ok("GET", "/api/v1/admin-log")["entries"]
    actions = [(e["action"], e["target"]) for e in log if e["target"] == tid]
    assert actions == [("token.delete", tid), ("token.revoke", tid), ("token.edit", tid), ("token.edit", tid),
                       ("token.create", tid)], actions
    assert all(e["admin"] == "admin" and e["at"].endswith("Z") for e in log)


def test_duplicate_ids_and_imported_secrets_conflict(server):
    server.create(name="a", id="same")
    err(server.api("POST", "/api/v1/tokens", {"name": "b", "id": "same"}), 409)
    legacy = "legacy-token-1234567890"
    out = server.ok("POST", "/api/v1/tokens", {"name": "imported", "user": "bob", "token": legacy}, status=201)
    assert "secret" not in out and "snippets" not in out
    assert out["token"]["sha256"] == service.harness.sha256_hex(legacy)
    err(server.api("POST", "/api/v1/tokens", {"name": "again", "token": legacy}), 409)


def test_secure_mode_allows_create_revoke_delete_but_no_edit(server):
    tok, _ = server.create(name="before", user="bob")
    server.ok("PUT", "/api/v1/settings", {"secure_mode": True})
    err(server.api("PATCH", f"/api/v1/tokens/{tok['id']}", {"name": "after"}), 409)
    t2, secret = server.create(name="created in secure mode")
    assert TG.match(secret)
    server.ok("POST", "/api/v1/tokens", {"name": "import", "token": "imported-in-secure-mode"}, status=201)
    server.ok("POST", f"/api/v1/tokens/{tok['id']}/revoke")
    assert server.api("DELETE", f"/api/v1/tokens/{t2['id']}").status == 204
    # The pushed configuration holds digests only.
    settle()
    cfg = server.ok("GET", "/api/v1/config")["configuration"]
    assert cfg["secure_mode"] is True and all("token" not in t and len(t["sha256"]) == 64 for t in cfg["tokens"])


# --------------------------------------------------------------------------- settings, config, explain


def test_settings_round_trip_and_the_audit_credential_stays_the_services(server):
    assert server.ok("GET", "/api/v1/settings") == {}
    s = {"auth_methods": "both", "protected_paths": ["/rest/", "/jira/rest/"], "max_body_bytes": 65536}
    assert server.ok("PUT", "/api/v1/settings", s) == s
    assert server.ok("GET", "/api/v1/settings") == s
    err(server.api("PUT", "/api/v1/settings", {"audit": {"authorization": "Bearer mine"}}), 400, "audit.authorization")
    err(server.api("PUT", "/api/v1/settings", {"auth_methods": "digest"}), 400, "auth_methods")
    err(server.api("PUT", "/api/v1/settings", {"tokens": []}), 400, "tokens")
    err(server.api("PUT", "/api/v1/settings", {"frobnicate": 1}), 400, "frobnicate")
    settle()
    cfg = server.ok("GET", "/api/v1/config")
    assert cfg["configuration"]["auth_methods"] == "both"
    audit = cfg["configuration"]["audit"]
    assert audit["cluster"] == "tokengate_server" and audit["path"] == "/audit"
    assert "tgs_" not in json.dumps(cfg), "GET /config never shows the audit credential"
    # Settings PUT replaces everything: absent fields take their defaults again.
    server.ok("PUT", "/api/v1/settings", {})
    settle()
    assert "auth_methods" not in server.ok("GET", "/api/v1/config")["configuration"]
    assert [e["action"] for e in server.ok("GET", "/api/v1/admin-log")["entries"]][:2] == ["settings.update"] * 2


def test_a_settings_change_that_would_break_a_stored_token_is_refused(server):
    server.ok("POST", "/api/v1/tokens", {"name": "legacy", "token": "plain-legacy-token"}, status=201)
    # secure_mode refuses plaintext tokens in a config; the service stores digests only, so this holds.
    server.ok("PUT", "/api/v1/settings", {"secure_mode": True})


def test_explain_gives_the_filters_decision(server):
    server.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    _, secret = server.create(name="lines", user="bob",
                              limit_to=["[get]/rest/api/2/issue/KAN-.*", "[post]/rest/api/2/issue[JsonData::fields.project.key==KAN]"])
    settle()

    def explain(method, url, body=None):
        req = {"method": method, "url": url, "headers": [["Authorization", f"Bearer {secret}"]]}
        if body is not None:
            req["body"] = body
            req["headers"].append(["Content-Type", "application/json"])
        return server.ok("POST", "/api/v1/explain", req)

    ok = explain("GET", "https://jira.example.com/rest/api/2/issue/KAN-7")
    assert (ok["decision"], ok["status"], ok["rule"]) == ("allow", None, 1), ok  # forwarded: the app answers
    no = explain("GET", "/rest/api/2/issue/OTHER-1")
    assert (no["decision"], no["status"], no["reason"]) == ("deny", 403, "restricted"), no
    assert len(no["lines"]) == 2, no
    body = explain("POST", "/rest/api/2/issue", '{"fields":{"project":{"key":"KAN"}}}')
    assert (body["decision"], body["rule"]) == ("allow", 2), body
    err(server.api("POST", "/api/v1/explain", {"method": "GET"}), 400, "url")
    err(server.api("POST", "/api/v1/explain", {"url": "/rest", "headers": [["x"]]}), 400, "headers[0]")


def test_admin_log_pages(server):
    for i in range(5):
        server.create(name=f"t{i}", id=f"t{i}")
    p1 = server.ok("GET", "/api/v1/admin-log?limit=2")
    p2 = server.ok("GET", f"/api/v1/admin-log?limit=2&cursor={p1['next']}")
    p3 = server.ok("GET", f"/api/v1/admin-log?limit=2&cursor={p2['next']}")
    got = [e["target"] for p in (p1, p2, p3) for e in p["entries"]]
    assert got == ["t4", "t3", "t2", "t1", "t0"] and p3["next"] is None
    err(server.api("GET", "/api/v1/admin-log?cursor=abc"), 400, "cursor")


def test_unknown_paths_are_json_404(server):
    r = server.api("GET", "/api/v1/nothing-here")
    err(r, 404)
    assert r.headers["content-type"].startswith("application/json")


# --------------------------------------------------------------------------- the binary


def test_admin_cli_hashes_passwords_and_keys(db_url, tmp_path):
    srv = Server(str(tmp_path), db_url)
    p = srv.cli("admin", "add", "carol", input_text="a long enough password\n")
    assert p.stdout == ""
    short = srv.cli("admin", "add", "dave", input_text="short\n", check=False)
    assert short.returncode == 2 and "12 characters" in short.stderr
    key = srv.admin_key("carol")
    assert key.startswith("tga_") and len(key) == 44
    listing = srv.cli("admin", "list").stdout
    assert "carol\tpassword: set\tapi keys: 1" in listing
    assert "a long enough password" not in listing and key not in listing
    srv.cli("admin", "remove", "carol")
    assert "carol" not in srv.cli("admin", "list").stdout
    gone = srv.cli("admin", "remove", "carol", check=False)
    assert gone.returncode == 2 and "no admin" in gone.stderr


def test_bad_flags_and_databases_exit_2_with_one_line(tmp_path):
    service.require_server()
    cases = [["--frobnicate"], ["--db", "mysql://x/y"], ["--db", "sqlite://"],
             ["--db", "postgres://u:secretpw@127.0.0.1:1/db"]]
    for args in cases:
        t = time.monotonic()
        p = subprocess.run([SERVER_BIN, *args, "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                           timeout=20, cwd=tmp_path)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert time.monotonic() - t < 10, args
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        assert lines, args
        assert "secretpw" not in p.stderr
        if args[0] == "--frobnicate":
            assert "--frobnicate" in p.stderr
        else:
            assert len(lines) == 1, p.stderr


def test_xds_on_a_non_loopback_address_needs_tls(tmp_path):
    service.require_server()
    p = subprocess.run([SERVER_BIN, "--db", f"sqlite://{tmp_path}/x.db", "--xds", "0.0.0.0:0"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 2 and "--xds-tls-cert" in p.stderr


def test_env_variables_configure_the_server(tmp_path, started):
    srv = Server(str(tmp_path), f"sqlite://{tmp_path}/env.db")
    port = service.free_port()
    srv.port = port
    env = {"TOKENGATE_DB": f"sqlite://{tmp_path}/env.db", "TOKENGATE_LISTEN": f"127.0.0.1:{port}",
           "TOKENGATE_XDS": f"127.0.0.1:{service.free_port()}"}
    log = open(tmp_path / "env.log", "wb")
    proc = subprocess.Popen([SERVER_BIN], env={**os.environ, **env}, stdout=log, stderr=log, cwd=tmp_path)

    class P:
        def stop(self):
            proc.terminate()
            proc.wait(10)
            log.close()
    started(P())
    def up():
        if proc.poll() is not None:
            pytest.fail(open(tmp_path / "env.log").read())
        try:
            return srv.api("GET", "/healthz", key=None).status == 200
        except OSError:
            return False
    service.wait_for(up, 10, what="healthz")
    assert os.path.exists(tmp_path / "env.db")
