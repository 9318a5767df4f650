"""Least privilege and rotation in the console (SPEC §19), in a real headless Chromium against
the real tokengate-server and a real Envoy 1.40: a token with no lines makes calls through
Envoy, Suggest proposes lines, they are added as shadow lines, the token page counts the calls
each matched and those they would refuse, Promote enforces them (Envoy then answers 403, the
admin log says `token.promote`), and Rotate shows a new secret once while the old one still
works. axe-core on the new pages; screenshots docs/screenshots/suggest.png and shadow.png."""

from __future__ import annotations

import json
import re

from service import wait_for
from test_console import call, shoot, sign_in

USER = "bob"
SEEN = ["/rest/api/2/issue/LP-1", "/rest/api/2/issue/LP-22", "/rest/api/2/issue/LP-333", "/rest/api/2/myself"]
NEVER_SEEN = "/rest/api/2/project"


def new_token(server, name):
    """A token with no restriction line, made through the API (the console's create form is
    tested in test_console.py)."""
    tok, secret = server.create(name=name, user=USER, expires_in_days=30)
    return tok["id"], secret


def axe(page, axe_source):
    page.add_script_tag(content=axe_source)
    return page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
    }""")


def test_suggest_shadow_promote_rotate(stack, context, browser, axe_source):
    server, env = stack
    base = server.base
    token_id, secret = new_token(server, "Release bot")
    wait_for(lambda: call(env, SEEN[0], secret, USER).status == 200, 5, what="the token live in Envoy")
    for path in SEEN[1:]:
        assert call(env, path, secret, USER).status == 200
    wait_for(lambda: server.ok("GET", f"/api/v1/tokens/{token_id}")["usage"]["calls"] >= len(SEEN), 10,
             interval=0.3, what="the calls stored")

    page = context.new_page()
    sign_in(page, base)
    page.goto(f"{base}/tokens/{token_id}")
    assert page.locator("#no-shadow").count() == 1
    assert page.get_by_role("link", name="Promote to enforced").count() == 0

    # Suggest → review → add as shadow lines.
    page.get_by_role("link", name="Suggest lines").click()
    page.wait_for_url(f"**/tokens/{token_id}/suggest")
    expected = server.ok("GET", f"/api/v1/tokens/{token_id}/suggest?days=30")["lines"]
    rows = page.locator("#suggested tbody tr")
    assert rows.count() == len(expected) >= 2, page.locator("#suggested").text_content()
    boxes = page.locator("#suggested input[type=checkbox]")
    assert [boxes.nth(i).get_attribute("value") for i in range(boxes.count())] == [l["line"] for l in expected]
    assert all(boxes.nth(i).is_checked() for i in range(boxes.count()))
    table = page.locator("#suggested").text_content()
    for path in SEEN:
        assert path in table, (path, table)
    shoot(page, "suggest")
    with page.expect_navigation():
        page.get_by_role("button", name="Add as shadow lines").click()
    assert page.url.endswith(f"/tokens/{token_id}?done=shadowed#least-privilege"), page.url
    assert "shadow lines are saved" in page.locator(".banner-success").text_content()
    tok = server.ok("GET", f"/api/v1/tokens/{token_id}")
    assert tok["shadow_limit_to"] == [l["line"] for l in expected] and tok["limit_to"] == []

    # Calls through Envoy: the shadow lines are evaluated, never enforced (all 200 still).
    def shadow_seen():
        assert call(env, "/rest/api/2/issue/LP-4", secret, USER).status == 200
        return any(l["calls"] for l in server.ok("GET", f"/api/v1/tokens/{token_id}/shadow?days=7")["lines"])
    wait_for(shadow_seen, 10, interval=0.5, what="shadow lines in Envoy's audit lines")
    assert call(env, "/rest/api/2/myself", secret, USER).status == 200
    assert call(env, NEVER_SEEN, secret, USER).status == 200, "a shadow line never refuses"

    def counted():
        rep = server.ok("GET", f"/api/v1/tokens/{token_id}/shadow?days=7")
        return rep["would_refuse"] >= 1 and sum(l["calls"] for l in rep["lines"]) >= 2
    wait_for(counted, 10, interval=0.5, what="the shadow report")
    rep = server.ok("GET", f"/api/v1/tokens/{token_id}/shadow?days=7")
    page.goto(f"{base}/tokens/{token_id}")
    cells = page.locator("#shadow-lines tbody tr")
    assert cells.count() == len(expected)
    for i, l in enumerate(rep["lines"]):
        row = cells.nth(i).locator("td")
        assert row.nth(1).text_content() == l["source"]
        assert row.nth(2).text_content() == str(l["calls"])
    refuse = page.locator("#would-refuse").text_content()
    n = rep["would_refuse"]
    assert f"would refuse {n} call" in refuse, refuse
    shoot(page, "shadow")

    # Promote, confirmed on its own page.
    page.get_by_role("link", name="Promote to enforced").click()
    page.wait_for_url(f"**/tokens/{token_id}/promote")
    assert [x.strip() for x in page.locator("ol.lines li").all_text_contents()] == tok["shadow_limit_to"]
    with page.expect_navigation():
        page.get_by_role("button", name="Promote to enforced").click()
    assert page.url.endswith(f"/tokens/{token_id}?done=promoted"), page.url
    wait_for(lambda: call(env, NEVER_SEEN, secret, USER).status == 403, 3, what="the promoted lines in Envoy")
    assert call(env, "/rest/api/2/issue/LP-5", secret, USER).status == 200
    assert page.locator("#no-shadow").count() == 1
    assert page.locator("ol.lines li").count() == len(expected)
    page.get_by_role("link", name="Admin log", exact=True).click()
    assert "token.promote" in page.locator("table.data").text_content()

    # Rotate: the new secret once, in no URL, no-store; the old one still works.
    page.goto(f"{base}/tokens/{token_id}")
    page.get_by_role("link", name="Rotate secret").click()
    page.wait_for_url(f"**/tokens/{token_id}/rotate")
    assert page.get_by_label("Grace period in hours").input_value() == "24"
    sent = {k: page.locator(f'form[action$="/rotate"] input[name="{k}"]').get_attribute("value")
            for k in ("csrf", "nonce")}
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Rotate secret").click()
    assert nav.value.status == 200 and nav.value.headers["cache-control"] == "no-store"
    new = page.locator("#secret").input_value()
    assert re.fullmatch(r"tg_[A-Za-z0-9_]+", new) and new != secret
    assert new not in page.url and page.url.endswith(f"/tokens/{token_id}/rotate")
    assert "will not be shown again" in page.content()
    assert "keeps working until" in page.locator("#previous-note").text_content()
    wait_for(lambda: call(env, "/rest/api/2/issue/LP-6", new, USER).status == 200, 5, what="the new secret in Envoy")
    assert call(env, "/rest/api/2/issue/LP-6", secret, USER).status == 200, "the old secret in its grace period"
    # The form sent again (a reload or Back of the answer) makes no second secret.
    again = context.request.post(f"{base}/tokens/{token_id}/rotate", form={**sent, "grace_hours": "24"})
    assert again.status == 409 and "tg_" not in again.text()
    assert server.ok("GET", f"/api/v1/tokens/{token_id}")["previous"]["sha256"] == tok["sha256"]
    page.goto(f"{base}/tokens/{token_id}")
    assert new not in page.content()
    assert "keeps working until" in page.locator("#previous-secret").text_content()
    log = [(e["action"], e["target"]) for e in server.ok("GET", "/api/v1/admin-log")["entries"]]
    assert ("token.rotate", token_id) in log and ("token.promote", token_id) in log
    assert context.csp_errors == []

    # axe-core on the new pages (a context of its own, the CSP bypassed for axe's script).
    other_id, other = new_token(server, "Sync job")
    wait_for(lambda: call(env, SEEN[0], other, USER).status == 200, 5, what="the second token live")
    wait_for(lambda: server.ok("GET", f"/api/v1/tokens/{other_id}")["usage"]["calls"] >= 1, 10, interval=0.3)
    server.ok("PATCH", f"/api/v1/tokens/{other_id}", {"shadow_limit_to": ["[GET]/rest/api/2/myself"]})
    actx = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    try:
        ap = actx.new_page()
        sign_in(ap, base)
        report = {}
        for name, path in [("suggest", f"/tokens/{other_id}/suggest"), ("token-shadow", f"/tokens/{other_id}"),
                           ("promote-confirm", f"/tokens/{other_id}/promote"),
                           ("rotate-confirm", f"/tokens/{other_id}/rotate")]:
            ap.goto(base + path)
            report[name] = axe(ap, axe_source)
        with ap.expect_navigation():
            ap.get_by_role("button", name="Rotate secret").click()
        report["rotated-shown-once"] = axe(ap, axe_source)
    finally:
        actx.close()
    print("\naxe-core:", {k: [f"{v['impact']}:{v['id']}" for v in vs] for k, vs in report.items()})
    bad = {k: [v for v in vs if v["impact"] in ("critical", "serious")] for k, vs in report.items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, json.dumps(bad, indent=1)


def test_least_privilege_forms_need_csrf_and_secure_mode_hides_promote(stack, context):
    server, _ = stack
    base = server.base
    token_id, _ = new_token(server, "CSRF check")
    server.ok("PATCH", f"/api/v1/tokens/{token_id}", {"shadow_limit_to": ["[GET]/rest/api/2/myself"]})
    page = context.new_page()
    sign_in(page, base)
    # Without the CSRF token: refused, nothing changed.
    for path, form in [("suggest", {"line": "[GET]/x"}), ("promote", {}), ("rotate", {"grace_hours": "1"})]:
        r = context.request.post(f"{base}/tokens/{token_id}/{path}", form=form, max_redirects=0)
        assert r.status == 403, (path, r.status)
    tok = server.ok("GET", f"/api/v1/tokens/{token_id}")
    assert tok["shadow_limit_to"] == ["[GET]/rest/api/2/myself"] and tok["limit_to"] == [] and tok["previous"] is None
    settings = server.ok("GET", "/api/v1/settings")
    server.ok("PUT", "/api/v1/settings", {**settings, "secure_mode": True})
    try:
        page.goto(f"{base}/tokens/{token_id}")
        assert page.locator("#shadow-lines").count() == 1
        assert page.get_by_role("link", name="Promote to enforced").count() == 0
        assert page.get_by_role("link", name="Suggest lines").count() == 0
        assert page.get_by_role("link", name="Rotate secret").count() == 1
        assert page.goto(f"{base}/tokens/{token_id}/promote").status == 409
    finally:
        server.ok("PUT", "/api/v1/settings", settings)
