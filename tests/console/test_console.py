"""The web console (SPEC §17) in a real headless Chromium, against the real tokengate-server
and a real Envoy 1.40 subscribed to it by ECDS: the admin's walk-through from sign-in to a
revoked token, line errors as they are typed, lock-out, CSRF, secure mode, the shown-once
page, sessions, and an axe-core accessibility check of every page (with screenshots of the
main pages written to docs/screenshots/)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
import urllib.error
import urllib.request

from conftest import PASSWORD, SCREENSHOTS
from service import wait_for

ALLOWED = "/rest/api/2/issue/TG-1"
OTHER = "/rest/api/2/project"
LINE = "[get]/rest/api/2/issue/TG-.*"


def sign_in(page, base, name="alice", password=PASSWORD):
    page.goto(base + "/signin")
    page.get_by_label("Admin name").fill(name)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def create_token(page, base, name, user="bob", lines=LINE):
    """Fills the new-token form; returns (navigation response, secret)."""
    page.goto(base + "/tokens/new")
    page.get_by_label("Name (required)").fill(name)
    page.get_by_label("User", exact=True).fill(user)
    page.get_by_label("Expires in days").fill("30")
    page.get_by_label("Restriction lines").fill(lines)
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Create token").click()
    secret = page.locator("#secret").input_value()
    assert re.fullmatch(r"tg_[A-Za-z0-9_]+", secret), secret
    return nav.value, secret


def call(env, path, secret, user="bob"):
    return env.request("GET", path, auth=(user, secret))


def shoot(page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, name + ".png"), full_page=True)


def session_cookie(context):
    return next(c for c in context.cookies() if c["name"] == "tg_session")


def raw(base, method, path, *, cookie=None, headers=None, body=None, form=None):
    h = dict(headers or {})
    if cookie:
        h["Cookie"] = f"tg_session={cookie}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        h["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(base + path, data=data, method=method, headers=h)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


import urllib.parse  # noqa: E402


def test_walkthrough_create_call_audit_revoke(stack, context):
    """Sign in → create a token with a restriction line → read the secret → through Envoy the
    allowed URL is 200 and another 403 → both calls in the token's recent calls and the audit
    log page → revoke in the page → within 2 s Envoy answers 401 "token revoked"."""
    server, env = stack
    base = server.base
    page = context.new_page()
    sign_in(page, base)
    assert page.url.endswith("/tokens")
    cookie = session_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    # Only the digest of the session secret is stored.
    with sqlite3.connect(server.db_path) as db:
        digests = [r[0] for r in db.execute("SELECT digest FROM console_sessions")]
    assert hashlib.sha256(cookie["value"].encode()).hexdigest() in digests
    assert cookie["value"] not in json.dumps(digests)

    resp, secret = create_token(page, base, "CI bot")
    assert resp.status == 200 and resp.headers["cache-control"] == "no-store"
    assert "/tokens/new" in page.url and secret not in page.url
    assert "will not be shown again" in page.content()
    snippet = page.locator("#snippet-curl_basic").text_content()
    assert secret in snippet and "-u bob:" in snippet
    # The snippets follow the URL the admin types.
    page.get_by_label("URL for the snippets").fill("https://jira.example.com/rest/api/2/issue/TG-7")
    assert "https://jira.example.com/rest/api/2/issue/TG-7" in page.locator("#snippet-curl_bearer").text_content()
    assert "Bearer " + secret in page.locator("#snippet-curl_bearer").text_content()
    later_pages = []

    wait_for(lambda: call(env, ALLOWED, secret).status == 200, 5, what="the new token live in Envoy")
    r = call(env, OTHER, secret)
    assert r.status == 403, r
    token_id = server.ok("GET", "/api/v1/tokens")["tokens"][0]["id"]

    page.get_by_role("link", name="Done: go to the token").click()
    page.wait_for_url(f"**/tokens/{token_id}")

    def recent_rows():
        page.reload()
        later_pages.append(page.content())
        return page.locator("table.data tbody tr").count() >= 2
    wait_for(recent_rows, 10, interval=0.5, what="both calls in the token's recent calls")
    table = page.locator("table.data").text_content()
    assert ALLOWED in table and OTHER in table
    assert "restricted" in table and "ok" in table
    assert page.locator(".chart svg rect.bar-allowed").count() == 30

    page.get_by_role("link", name="Audit log", exact=True).click()
    page.get_by_label("Token id").fill(token_id)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/audit-log?token=*")
    audit = page.locator("table.data").text_content()
    assert ALLOWED in audit and OTHER in audit
    later_pages.append(page.content())
    export = page.get_by_role("link", name="Export NDJSON").get_attribute("href")
    r = context.request.get(base + export)
    assert r.ok and r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(x) for x in r.text().splitlines()]
    assert {x["path"] for x in lines} == {ALLOWED, OTHER} and all(x["token_id"] == token_id for x in lines)

    page.goto(f"{base}/tokens/{token_id}")
    page.get_by_role("link", name="Revoke", exact=True).click()
    later_pages.append(page.content())
    page.get_by_role("button", name="Revoke token").click()
    t0 = time.monotonic()
    page.wait_for_url(f"**/tokens/{token_id}?done=revoked")
    _, dt = wait_for(lambda: call(env, ALLOWED, secret).status == 401, 2, what="revocation in Envoy")
    r = call(env, ALLOWED, secret)
    assert r.json() == {"errorMessages": ["token revoked"], "errors": {}}
    assert time.monotonic() - t0 < 2.5
    later_pages.append(page.content())
    assert "revoked" in page.locator("h1").text_content()
    for path in ["/tokens", "/admin-log", "/audit-log", "/fleet", "/settings", f"/tokens/{token_id}"]:
        page.goto(base + path)
        later_pages.append(page.content())
    # The shown-once page was the last to carry the secret.
    for html in later_pages:
        assert secret not in html
    log = server.ok("GET", "/api/v1/admin-log")["entries"]
    actions = [(e["admin"], e["action"]) for e in log]
    assert ("alice", "token.create") in actions and ("alice", "token.revoke") in actions
    assert ("alice", "admin.login") in actions
    assert context.csp_errors == []
    # Neither the secret nor the admin's password is in the service's log.
    assert secret not in server.log() and PASSWORD not in server.log()


def test_bad_line_error_at_its_line_and_column_creates_nothing(stack, context):
    server, _ = stack
    base = server.base
    before = len(server.ok("GET", "/api/v1/tokens")["tokens"])
    bad = "/rest/(?<=x)y"
    # What the API (the core) says about the same line: the second restriction line.
    r = server.api("POST", "/api/v1/tokens", {"name": "x", "limit_to": [LINE, bad]})
    assert r.status == 400
    expect = r.json()
    assert expect["line"] == 2 and expect["field"] == "limit_to[1]"
    page = context.new_page()
    sign_in(page, base)
    page.goto(base + "/tokens/new")
    page.get_by_label("Name (required)").fill("bad lines")
    # A blank line between: the error names the textarea's line 3.
    page.get_by_label("Restriction lines").fill(f"{LINE}\n\n{bad}")
    err = page.locator("#limit_to-error .error-text")
    err.wait_for()
    assert err.text_content().startswith(f"Line 3, column {expect['column']}: "), err.text_content()
    assert expect["error"] in err.text_content()
    excerpt = page.locator("#limit_to-error pre.excerpt").text_content()
    assert excerpt.split("\n")[0] == bad and excerpt.split("\n")[1].index("^") == expect["column"] - 1
    assert page.get_by_label("Restriction lines").get_attribute("aria-invalid") == "true"
    shoot(page, "new-token-error")
    # Fixed as typed: the error goes.
    page.get_by_label("Restriction lines").fill(LINE)
    page.locator("#limit_to-error .ok-text").wait_for()
    # Submitted anyway with the bad line: refused with the same position, nothing created.
    page.get_by_label("Restriction lines").fill(f"{LINE}\n\n{bad}")
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Create token").click()
    assert nav.value.status == 400
    assert page.locator("#limit_to-error .error-text").text_content().startswith(
        f"Line 3, column {expect['column']}: ")
    assert page.get_by_label("Name (required)").input_value() == "bad lines"
    assert len(server.ok("GET", "/api/v1/tokens")["tokens"]) == before
    assert context.csp_errors == []


def test_sign_in_slows_down_and_locks(stack, context):
    server, _ = stack
    base = server.base
    server.cli("admin", "add", "carol", input_text="carol's long password\n")
    page = context.new_page()
    times = []
    for i in range(4):
        t0 = time.monotonic()
        st, _, body = raw(base, "POST", "/signin", form={"name": "carol", "password": "wrong"})
        times.append(time.monotonic() - t0)
        assert st == 401 and "Wrong admin name or password" in body
    # The n-th failure in a row is answered no sooner than n × 250 ms (lower bounds: the
    # Argon2id check on a shared machine adds a varying amount on top).
    for n, t in enumerate(times, 1):
        assert t >= 0.25 * n, times
    sign_in(page, base, "carol", "wrong password")
    assert page.url.endswith("/signin")
    msg = page.locator("#signin-error").text_content()
    assert "locked for 15 minutes" in msg, msg
    # Locked: the right password is refused too.
    sign_in(page, base, "carol", "carol's long password")
    assert "locked until" in page.locator("#signin-error").text_content()
    assert not [c for c in context.cookies() if c["name"] == "tg_session"]
    log = server.ok("GET", "/api/v1/admin-log?limit=20")["entries"]
    failed = [e for e in log if e["action"] == "admin.login_failed" and e["target"] == "carol"]
    assert len(failed) == 6, failed
    assert any("locked for 15 minutes" in (e["detail"] or "") for e in failed)
    # `admin add` (a new password) unlocks.
    server.cli("admin", "add", "carol", input_text="carol's new long password\n")
    sign_in(page, base, "carol", "carol's new long password")
    assert page.url.endswith("/tokens")


def test_csrf_less_posts_are_refused(stack, context):
    server, _ = stack
    base = server.base
    page = context.new_page()
    sign_in(page, base)
    cookie = session_cookie(context)["value"]
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    before = len(server.ok("GET", "/api/v1/tokens")["tokens"])
    # The API from a session: 403 without the header, 201 with it.
    st, _, body = raw(base, "POST", "/api/v1/tokens", cookie=cookie, body={"name": "no csrf"})
    assert st == 403 and "x-csrf-token" in json.loads(body)["error"]
    st, _, _ = raw(base, "POST", "/api/v1/tokens", cookie=cookie, body={"name": "no csrf"},
                   headers={"x-csrf-token": "0" * 64})
    assert st == 403
    st, _, body = raw(base, "GET", "/api/v1/tokens", cookie=cookie)
    assert st == 200
    # A console form without its CSRF field (or with another session's): 403, nothing made.
    st, _, body = raw(base, "POST", "/tokens/new", cookie=cookie, form={"name": "forged"})
    assert st == 403 and "CSRF" in body
    st, _, _ = raw(base, "POST", "/signout", cookie=cookie, form={})
    assert st == 403
    assert len(server.ok("GET", "/api/v1/tokens")["tokens"]) == before
    st, _, body = raw(base, "POST", "/api/v1/tokens", cookie=cookie, body={"name": "with csrf"},
                      headers={"x-csrf-token": csrf})
    assert st == 201, body
    server.ok("DELETE", "/api/v1/tokens/with-csrf", status=204)
    # Security headers on every page.
    st, h, _ = raw(base, "GET", "/tokens", cookie=cookie)
    h = {k.lower(): v for k, v in h.items()}
    assert "script-src 'self'" in h["content-security-policy"] and "unsafe-inline" not in h["content-security-policy"]
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store"
    # No session: 401 on the API, the sign-in page for the console.
    st, _, _ = raw(base, "GET", "/api/v1/tokens", cookie="x" * 43)
    assert st == 401
    st, h, _ = raw(base, "GET", "/tokens/new")
    assert st == 303 and h["location"].startswith("/signin")
    # The create form sent twice (a reload or Back of the shown-once page): one token.
    page.goto(base + "/tokens/new")
    nonce = page.locator('input[name="nonce"]').get_attribute("value")
    form = {"csrf": csrf, "nonce": nonce, "name": "sent twice"}
    st, h, body = raw(base, "POST", "/tokens/new", cookie=cookie, form=form)
    assert st == 200 and "no-store" in {k.lower(): v for k, v in h.items()}["cache-control"]
    st, _, body = raw(base, "POST", "/tokens/new", cookie=cookie, form=form)
    assert st == 409 and "Nothing new was created" in body and "tg_" not in body
    assert [t["name"] for t in server.ok("GET", "/api/v1/tokens")["tokens"]].count("sent twice") == 1
    server.ok("DELETE", "/api/v1/tokens/sent-twice", status=204)
    # Keyboard: the first Tab reaches "Skip to content", which moves to the page's content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # Behind a TLS proxy (X-Forwarded-Proto: https) the cookie is Secure too.
    st, h, _ = raw(base, "POST", "/signin", form={"name": "alice", "password": PASSWORD},
                   headers={"X-Forwarded-Proto": "https"})
    assert st == 303
    set_cookie = {k.lower(): v for k, v in h.items()}["set-cookie"]
    assert all(a in set_cookie for a in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/")), set_cookie
    # Sign-out ends the session on the server.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    st, _, _ = raw(base, "GET", "/api/v1/tokens", cookie=cookie)
    assert st == 401


def test_idle_session_expires_after_8_hours(stack, context):
    server, _ = stack
    page = context.new_page()
    sign_in(page, server.base)
    cookie = session_cookie(context)["value"]
    digest = hashlib.sha256(cookie.encode()).hexdigest()
    with sqlite3.connect(server.db_path) as db:
        db.execute("UPDATE console_sessions SET last_seen = last_seen - 8 * 3600 * 1000 - 1000 WHERE digest = ?",
                   (digest,))
    page.goto(server.base + "/tokens")
    assert "/signin" in page.url
    with sqlite3.connect(server.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM console_sessions WHERE digest = ?", (digest,)).fetchone()[0] == 0


def test_every_page_accessible_with_screenshots(stack, browser, axe_source):
    """axe-core on every page (its script injected with the CSP bypassed, in a context of its
    own): no critical or serious violation. Screenshots of the main pages at 1280×800, and the
    tokens list in a narrow window."""
    server, env = stack
    base = server.base
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = ctx.new_page()
    report = {}

    def check(name, shot=None):
        page.add_script_tag(content=axe_source)
        res = page.evaluate("""async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                           nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }""")
        report[name] = res
        if shot:
            shoot(page, shot)

    page.goto(base + "/signin")
    check("signin", "signin")
    page.get_by_label("Admin name").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    page.locator("#signin-error").wait_for()
    check("signin-error")
    sign_in(page, base)
    # Some data for the pages: a token with calls, two lines, run-as and an address list.
    _, secret = create_token(page, base, "Nightly Jira export", user="svc-export",
                             lines=LINE + "\n[post].*/rest/api/2/issue/TG-.*/comment")
    check("shown-once", "shown-once")
    tok = next(t for t in server.ok("GET", "/api/v1/tokens")["tokens"] if t["name"] == "Nightly Jira export")
    server.create(name="Confluence backup", user="backup", expires_in_days=5)
    server.create(name="Legacy <script>alert(1)</script>", limit_to=["[get]/rest/api/2/myself"])
    wait_for(lambda: call(env, ALLOWED, secret, "svc-export").status == 200, 5, what="token live")
    for _ in range(6):
        call(env, ALLOWED, secret, "svc-export")
    for _ in range(2):
        call(env, OTHER, secret, "svc-export")
    wait_for(lambda: server.ok("GET", f"/api/v1/tokens/{tok['id']}")["usage"]["calls"] >= 9, 10,
             interval=0.3, what="calls stored")
    page.goto(base + "/tokens")
    assert page.locator("text=Legacy <script>alert(1)</script>").count() == 1
    check("tokens", "tokens")
    page.goto(base + "/tokens?status=expiring&sort=expires")
    check("tokens-filtered")
    page.goto(base + "/tokens/new")
    page.get_by_label("Restriction lines").fill("[get]/rest/(?=x)")
    page.locator("#limit_to-error .error-text").wait_for()
    check("new-token", "new-token")
    page.goto(f"{base}/tokens/{tok['id']}")
    page.get_by_label("URL").fill(base.replace(str(server.port), "10000") + "/rest/api/2/issue/TG-9/comment")
    page.get_by_label("Method").fill("POST")
    page.get_by_role("button", name="Explain").click()
    page.locator("#explain-result").wait_for()
    assert "allowed" in page.locator("#explain-result").text_content()
    check("token", "token")
    page.get_by_label("URL").fill("http://x/rest/api/2/project")
    page.get_by_label("Method").fill("GET")
    page.get_by_role("button", name="Explain").click()
    page.locator("#explain-result").wait_for()
    assert "refused" in page.locator("#explain-result").text_content()
    page.goto(f"{base}/tokens/{tok['id']}/edit")
    check("edit")
    page.goto(f"{base}/tokens/{tok['id']}/revoke")
    check("revoke-confirm")
    page.goto(f"{base}/tokens/{tok['id']}/delete")
    check("delete-confirm")
    page.goto(f"{base}/audit-log")
    check("audit-log", "audit-log")
    # Paging: 50 lines a page, then older ones.
    for _ in range(45):
        call(env, ALLOWED, secret, "svc-export")
    wait_for(lambda: server.ok("GET", f"/api/v1/tokens/{tok['id']}")["usage"]["calls"] >= 54, 10,
             interval=0.3, what="calls stored")
    page.goto(f"{base}/audit-log?token={tok['id']}")
    assert page.locator("table.data tbody tr").count() == 50
    page.get_by_role("link", name="Older →").click()
    assert page.locator("table.data tbody tr").count() == 4
    assert page.get_by_role("link", name="Older →").count() == 0
    page.get_by_role("link", name="⇤ Newest").click()
    assert page.locator("table.data tbody tr").count() == 50
    page.goto(f"{base}/fleet")
    assert "envoy-console" in page.content()
    check("fleet", "fleet")
    page.goto(f"{base}/settings")
    check("settings", "settings")
    page.goto(f"{base}/admin-log")
    check("admin-log", "admin-log")
    page.goto(f"{base}/tokens/nope")
    check("not-found")
    page.set_viewport_size({"width": 400, "height": 800})
    page.goto(base + "/tokens")
    check("tokens-narrow", "tokens-narrow")
    # Narrow: nothing wider than the window but the scrollable tables.
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    ctx.close()
    bad = {name: [v for v in vs if v["impact"] in ("critical", "serious")] for name, vs in report.items()}
    bad = {k: v for k, v in bad.items() if v}
    print("\naxe-core:", {k: [f"{v['impact']}:{v['id']}" for v in vs] for k, vs in report.items()})
    assert not bad, json.dumps(bad, indent=1)


def test_secure_mode_hides_edit(stack, context):
    server, _ = stack
    base = server.base
    tok, _ = server.create(name="secure test", user="dana")
    page = context.new_page()
    sign_in(page, base)
    page.goto(f"{base}/tokens/{tok['id']}")
    assert page.get_by_role("link", name="Edit", exact=True).count() == 1
    page.goto(base + "/settings")
    page.get_by_label("Secure mode").check()
    page.get_by_role("button", name="Save and push").click()
    page.wait_for_url("**/settings?done=settings")
    assert server.ok("GET", "/api/v1/settings")["secure_mode"] is True
    page.goto(f"{base}/tokens/{tok['id']}")
    assert page.get_by_role("link", name="Edit", exact=True).count() == 0
    assert "Secure mode" in page.locator("#secure-note").text_content()
    assert page.get_by_role("link", name="Revoke", exact=True).count() == 1
    r = page.goto(f"{base}/tokens/{tok['id']}/edit")
    assert r.status == 409
    log = server.ok("GET", "/api/v1/admin-log")["entries"]
    assert any(e["action"] == "settings.update" and e["admin"] == "alice" for e in log)
    server.ok("PUT", "/api/v1/settings", {})


def test_list_sort_filter_page_edit_delete(stack, context):
    server, _ = stack
    base = server.base
    for i in range(52):
        server.create(name=f"bulk {i:02d}", user="bulk-user" if i % 2 else "other-user")
    page = context.new_page()
    sign_in(page, base)
    page.goto(base + "/tokens?q=bulk")
    assert "52 tokens, page 1 of 2" in page.locator("#count").text_content()
    assert page.locator("table.data tbody tr").count() == 50
    page.get_by_role("link", name="Next →").click()
    assert page.locator("table.data tbody tr").count() == 2
    page.goto(base + "/tokens?q=bulk")
    page.get_by_label("User").fill("bulk-user")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**user=bulk-user**")
    assert "26 tokens" in page.locator("#count").text_content()
    # Sorted by name, then reversed by its column header.
    first = page.locator("table.data tbody tr td a").first.text_content()
    assert first == "bulk 01"
    page.get_by_role("link", name="Token ▲").click()
    assert page.locator("table.data tbody tr td a").first.text_content() == "bulk 51"
    assert page.locator("th[aria-sort=descending]").count() == 1
    # Edit: a new restriction line, saved, pushed, logged.
    page.goto(base + "/tokens/bulk-51/edit")
    page.get_by_label("Restriction lines").fill("[get]/rest/api/2/myself")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/tokens/bulk-51?done=saved")
    assert server.ok("GET", "/api/v1/tokens/bulk-51")["limit_to"] == ["[get]/rest/api/2/myself"]
    # An earlier expiry (here a past day) expires the token at once.
    page.goto(base + "/tokens/bulk-51/edit")
    page.get_by_label("Expire earlier, on").fill("2025-01-01")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/tokens/bulk-51?done=saved")
    assert server.ok("GET", "/api/v1/tokens/bulk-51")["status"] == "expired"
    # Delete, confirmed.
    page.get_by_role("link", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete token").click()
    page.wait_for_url("**/tokens?done=deleted")
    assert server.api("GET", "/api/v1/tokens/bulk-51").status == 404
    log = server.ok("GET", "/api/v1/admin-log?limit=10")["entries"]
    assert [e["action"] for e in log[:3]] == ["token.delete", "token.edit", "token.edit"]
    for i in range(51):
        server.ok("DELETE", f"/api/v1/tokens/bulk-{i:02d}", status=204)
    assert context.csp_errors == []


def test_sessions_lock_out_and_csrf_on_postgres(pg_server, context):
    """The same session store on PostgreSQL: sign in, the API with and without the CSRF
    header, lock-out, sign-out."""
    base = pg_server.base
    page = context.new_page()
    sign_in(page, base)
    assert page.url.endswith("/tokens")
    cookie = session_cookie(context)["value"]
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    st, _, _ = raw(base, "POST", "/api/v1/tokens", cookie=cookie, body={"name": "pg"})
    assert st == 403
    st, _, _ = raw(base, "POST", "/api/v1/tokens", cookie=cookie, body={"name": "pg"}, headers={"x-csrf-token": csrf})
    assert st == 201
    page.goto(base + "/tokens/pg")
    assert "pg" in page.locator("h1").text_content()
    pg_server.cli("admin", "add", "erin", input_text="erin's long password\n")
    for _ in range(5):
        st, _, body = raw(base, "POST", "/signin", form={"name": "erin", "password": "nope"})
    assert st == 429 and "locked" in body
    st, _, body = raw(base, "POST", "/signin", form={"name": "erin", "password": "erin's long password"})
    assert st == 429 and "locked until" in body
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    st, _, _ = raw(base, "GET", "/api/v1/tokens", cookie=cookie)
    assert st == 401
