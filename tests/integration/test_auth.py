"""SPEC §2-§5, §9, §10 through the real Envoy 1.40 with the real tokengate wasm.

Every refusal asserts the status, Jira's error body and content-type, WWW-Authenticate on 401,
and that NOTHING reached the upstream. Every allowed request asserts what the upstream got.
"""

import base64
import re

import pytest

import harness
from harness import assert_challenge, assert_jira_error, basic, basic_raw, new_token, sha256_hex

ISSUE = "/rest/api/2/issue/TG-1"

T = {name: new_token() for name in (
    "bound", "userless", "plain", "expired", "future", "revoked", "revoked_expired", "ip_local", "ip_ten",
    "runas_any", "userless_runas")}
UNKNOWN_TG = new_token()  # tg_-shaped, in no config


def tok(id_, name, key, **extra):
    return {"id": id_, "name": name, "sha256": sha256_hex(T[key]), **extra}


TOKENS = [
    tok("bound", "Bound to Alice", "bound", user="Alice.Smith", run_as=["bob"]),
    tok("userless", "Any user", "userless"),
    {"id": "plain", "name": "Plaintext form", "user": "carol", "token": T["plain"]},
    tok("expired", "Expired", "expired", user="carol", expires="2020-01-01T00:00:00Z"),
    tok("future", "Expires later", "future", user="carol", expires="2099-12-31T23:59:59Z"),
    tok("revoked", "Revoked", "revoked", user="carol", revoked=True),
    tok("revoked-expired", "Revoked and expired", "revoked_expired", user="carol", revoked=True,
        expires="2020-01-01T00:00:00Z"),
    tok("ip-local", "Loopback only", "ip_local", user="dave", ips=["127.0.0.1"]),
    tok("ip-ten", "10/8 only", "ip_ten", user="dave", ips=["10.0.0.0/8"]),
    tok("runas-any", "Run as anyone", "runas_any", user="erin", run_as=["*"]),
    tok("userless-runas", "Any user, may act for bob", "userless_runas", run_as=["bob"]),
]

UPSTREAM_AUTH = {"Alice.Smith": "Bearer pat-alice", "bob": "Bearer pat-bob"}

MAIN = {
    "auth_methods": "both",
    "identity": {"upstream_authorization": UPSTREAM_AUTH},
    "tokens": TOKENS,
}


def with_(base, **changes):
    cfg = dict(base)
    cfg.update(changes)
    return cfg


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def main(envoys):
    return envoys.get(MAIN)


def get(env, path=ISSUE, **kw):
    return env.request("GET", path, **kw)


def _utf8(value):
    # http.server decodes header bytes as Latin-1; Envoy forwards UTF-8 bytes
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def allowed(resp, demo, identity, authorization=None, header="x-forwarded-user", ci=False):
    """200 from the upstream, which got exactly one request acting as `identity`, without the
    client's Authorization/Cookie; `authorization` is the injected value (None: no Authorization).
    ci: compare the user name case-insensitively (same Jira user)."""
    assert resp.status == 200, resp
    (rec,) = demo.upstream.requests
    got = [_utf8(v) for v in rec.header_values(header)]
    if ci:
        assert [v.lower() for v in got] == [identity.lower()], rec.headers
    else:
        assert got == [identity], rec.headers
    assert rec.header_values("authorization") == ([authorization] if authorization else []), rec.headers
    assert not rec.has_header("cookie"), rec.headers
    assert not rec.has_header("contextuser"), rec.headers
    return rec


def refused(resp, demo, status, message=None, methods="both"):
    """A local reply in Jira's shape; nothing at all reached the upstream."""
    msg = assert_jira_error(resp, status, message)
    if status == 401:
        assert_challenge(resp, methods)
    for t in list(T.values()) + [UNKNOWN_TG]:
        assert t not in resp.body.decode("utf-8", "replace")
    assert demo.upstream.requests == [], "a refused request reached the upstream"
    return msg


def passed_through(resp, demo, authorization=None):
    """Forwarded untouched (besides the identity header strip): no identity set, the client's
    Authorization (if any) intact."""
    assert resp.status == 200, resp
    (rec,) = demo.upstream.requests
    assert not rec.has_header("x-forwarded-user"), rec.headers
    assert rec.header_values("authorization") == ([authorization] if authorization else []), rec.headers
    return rec


# --------------------------------------------------------------------------- §2.1 identity header


@pytest.mark.parametrize("name", ["x-forwarded-user", "X-Forwarded-User", "X-FORWARDED-USER", "x-FoRwArDeD-uSeR"])
def test_identity_header_stripped_without_credentials(main, demo, name):
    r = get(main, headers=[(name, "admin")])
    passed_through(r, demo)


def test_identity_header_stripped_on_unprotected_path(main, demo):
    r = get(main, "/secure/Dashboard.jspa", headers=[("X-Forwarded-User", "admin")])
    passed_through(r, demo)


def test_identity_header_stripped_when_repeated(main, demo):
    r = get(main, headers=[("X-Forwarded-User", "admin"), ("x-forwarded-user", "root")])
    passed_through(r, demo)


def test_identity_header_stripped_with_unknown_credentials(main, demo):
    auth = basic("jdoe", "hunter2")
    r = get(main, headers=[("X-Forwarded-User", "admin")], authorization=auth)
    passed_through(r, demo, authorization=auth)


def test_identity_header_stripped_on_unprotected_path_with_token(main, demo):
    auth = basic("carol", T["plain"])
    r = get(main, "/secure/Dashboard.jspa", headers=[("X-Forwarded-User", "admin")], authorization=auth)
    passed_through(r, demo, authorization=auth)


def test_client_identity_header_replaced_on_token_request(main, demo):
    r = get(main, headers=[("X-Forwarded-User", "admin"), ("X-Forwarded-User", "root")], auth=("carol", T["plain"]))
    allowed(r, demo, "carol")


def test_custom_identity_header(envoys, demo):
    env = envoys.get(with_(MAIN, identity={"header": "x-remote-user"}))
    r = get(env, headers=[("X-Remote-User", "admin")])
    assert r.status == 200
    (rec,) = demo.upstream.requests
    assert not rec.has_header("x-remote-user")
    demo.reset()
    r = get(env, headers=[("X-Remote-User", "admin")], auth=("carol", T["plain"]))
    allowed(r, demo, "carol", header="x-remote-user")


# --------------------------------------------------------------------------- §2.2 protected paths


def test_unprotected_path_passes_token_untouched(main, demo):
    auth = basic("carol", UNKNOWN_TG)
    r = get(main, "/secure/Dashboard.jspa?next=/rest/api/2/issue", authorization=auth)
    rec = passed_through(r, demo, authorization=auth)
    assert rec.path == "/secure/Dashboard.jspa?next=/rest/api/2/issue"


def test_protected_paths_are_case_sensitive(main, demo):
    auth = basic("carol", UNKNOWN_TG)
    r = get(main, "/REST/api/2/issue/TG-1", authorization=auth)
    passed_through(r, demo, authorization=auth)


def test_protected_path_with_unknown_tg_token_is_refused(main, demo):
    r = get(main, authorization=basic("carol", UNKNOWN_TG))
    refused(r, demo, 401)


@pytest.mark.parametrize("hcm", [None, {"normalize_path": False, "merge_slashes": False,
                                        "path_with_escaped_slashes_action": None}],
                         ids=["normalizing-hcm", "plain-hcm"])
def test_protected_path_is_matched_percent_decoded(envoys, demo, hcm):
    env = envoys.get(MAIN, hcm_overrides=hcm)
    r = get(env, "/%72est/api/2/issue/TG-1", authorization=basic("carol", UNKNOWN_TG))
    refused(r, demo, 401)


def test_custom_protected_paths(envoys, demo):
    env = envoys.get(with_(MAIN, protected_paths=["/jira/rest/", "/wiki/rest/"]))
    r = get(env, "/jira/rest/api/2/issue/TG-1", authorization=basic("carol", UNKNOWN_TG))
    refused(r, demo, 401)
    r = get(env, "/wiki/rest/api/content/1", auth=("carol", T["plain"]))
    allowed(r, demo, "carol")
    demo.reset()
    auth = basic("carol", UNKNOWN_TG)
    r = get(env, "/rest/api/2/issue/TG-1", authorization=auth)
    passed_through(r, demo, authorization=auth)


# --------------------------------------------------------------------------- §2.3/§2.4 Authorization count


def test_no_authorization_passes_through_with_cookie(main, demo):
    r = get(main, headers=[("Cookie", "JSESSIONID=abc; atlassian.xsrf.token=x")])
    rec = passed_through(r, demo)
    assert rec.header_values("cookie") == ["JSESSIONID=abc; atlassian.xsrf.token=x"]


@pytest.mark.parametrize("values", [
    [basic("carol", T["plain"]), basic("carol", T["plain"])],
    [basic("carol", T["plain"]), "Bearer " + T["bound"]],
    ["Bearer " + T["bound"], "Bearer " + T["bound"]],
], ids=["basic+basic", "basic+bearer", "bearer+bearer"])
def test_two_authorization_headers_are_400(main, demo, values):
    r = get(main, headers=[("Authorization", v) for v in values])
    refused(r, demo, 400)


@pytest.mark.parametrize("value", [
    "Bearer " + T["bound"] + "," + T["bound"],
    basic("carol", T["plain"]) + ", " + basic("carol", T["plain"]),
])
def test_basic_or_bearer_with_comma_counts_as_two_headers(main, demo, value):
    refused(get(main, authorization=value), demo, 400)


def test_other_scheme_with_commas_passes_through(main, demo):
    value = 'Digest username="jdoe", realm="jira", nonce="abc", uri="/rest/api/2/issue/TG-1", response="0f"'
    passed_through(get(main, authorization=value), demo, authorization=value)


# --------------------------------------------------------------------------- §4 credential parsing


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC", "bAsIc"])
def test_basic_scheme_case_insensitive(main, demo, scheme):
    value = basic("carol", T["plain"]).replace("Basic", scheme, 1)
    allowed(get(main, authorization=value), demo, "carol")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_case_insensitive(main, demo, scheme):
    allowed(get(main, authorization=f"{scheme} {T['bound']}"), demo, "Alice.Smith", "Bearer pat-alice")


@pytest.mark.parametrize("value", [
    "Basic   " + base64.b64encode(f"carol:{T['plain']}".encode()).decode(),
    "Bearer    " + T["plain"],
], ids=["basic", "bearer"])
def test_several_spaces_after_scheme(main, demo, value):
    allowed(get(main, authorization=value), demo, "carol")


def _b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _needs_padding_credential():
    # a user name that makes "user:token" a length not divisible by 3, so base64 has padding
    for user in ("carol", "carol1", "carol12"):
        if len(f"{user}:{T['userless']}") % 3:
            return user
    raise AssertionError


def _urlsafe_user():
    # a user name whose standard base64 (with the user-less token) has "+" or "/"
    for user in ("zed", "zed?", "zed??", "zed???", "zed>", "zed>>", "zed~", "zed~~", "zed~~~"):
        b = _b64(f"{user}:{T['userless']}")
        if "+" in b or "/" in b:
            return user
    raise AssertionError("no user name found")


@pytest.mark.parametrize("make", [
    lambda: "Basic\t" + _b64(f"carol:{T['plain']}"),                                     # tab
    lambda: "Bearer\t" + T["plain"],                                                     # tab
    lambda: "Basic " + _b64(f"{_needs_padding_credential()}:{T['userless']}").rstrip("="),  # no padding
    lambda: "Basic " + _b64(f"{_urlsafe_user()}:{T['userless']}").replace("+", "-").replace("/", "_"),  # url-safe
    lambda: "Basic " + _b64(f"carol:{T['plain']}") + "!",                                 # bad char
    lambda: "Basic *" + _b64(f"carol:{T['plain']}"),                                      # bad char
    lambda: "Basic " + _b64(f"carol:{T['plain']}") + " extra",                            # trailing
    lambda: f"Bearer a b",                                                               # space in bearer
    lambda: f"Bearer {T['plain']} x",                                                    # space in bearer
    lambda: "Basic " + _b64(T["plain"]),                                                 # no colon
    lambda: "Basic " + _b64("carol:"),                                                   # empty token
    lambda: "Basic " + _b64(f"ca\x01rol:{T['userless']}"),                                # control char in user
    lambda: "Basic " + _b64(f"carol:{T['plain']}\x00"),                                   # control char in token
    lambda: "Basic " + _b64(b"\xffzed:" + T["userless"].encode()),                        # not UTF-8
], ids=["basic-tab", "bearer-tab", "no-padding", "urlsafe-alphabet", "bang", "star", "trailing-word",
        "bearer-a-b", "bearer-token-x", "no-colon", "empty-token", "ctl-user", "nul-token", "non-utf8"])
def test_malformed_credentials_are_401(main, demo, make):
    value = make()
    refused(get(main, authorization=value), demo, 401)


def test_bearer_without_credential_is_401(main, demo):
    # "Bearer " (Envoy trims the trailing space): a Bearer credential that cannot be parsed.
    refused(get(main, authorization="Bearer"), demo, 401)


def _padded_to(length, user, token):
    b64 = _b64(f"{user}:{token}")
    spaces = length - len("Basic") - len(b64)
    assert spaces >= 1
    return "Basic" + " " * spaces + b64


def test_authorization_of_4096_bytes_is_accepted(main, demo):
    value = _padded_to(4096, "carol", T["plain"])
    assert len(value) == 4096
    allowed(get(main, authorization=value), demo, "carol")


def test_authorization_over_4096_bytes_is_401(main, demo):
    value = _padded_to(4097, "carol", T["plain"])
    refused(get(main, authorization=value), demo, 401)
    demo.reset()
    refused(get(main, authorization="Basic " + _b64("u" * 3500 + ":" + T["userless"])), demo, 401)


def test_malformed_basic_is_401_even_under_passthrough(main, demo):
    # "jdoe" without a password: unparseable Basic, not an unknown credential
    refused(get(main, authorization="Basic " + _b64("jdoe")), demo, 401)


# --------------------------------------------------------------------------- §2.5 unknown credentials


@pytest.mark.parametrize("value", [basic("carol", UNKNOWN_TG), "Bearer " + UNKNOWN_TG], ids=["basic", "bearer"])
def test_unknown_tg_token_is_401(main, demo, value):
    refused(get(main, authorization=value), demo, 401)


@pytest.mark.parametrize("value", [
    basic("jdoe", "hunter2"),
    "Bearer NjM0MjU2Nzg5MDEyOkQ5f3Vx2kP0yAbCdEfGhIjKlMnOpQrS",  # a Jira PAT
    "Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAuBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYBBAGCNwICHgYKKwYBBAGCNwICCg==",
], ids=["password", "jira-pat", "negotiate"])
def test_unknown_credentials_pass_through_by_default(main, demo, value):
    passed_through(get(main, authorization=value), demo, authorization=value)


@pytest.fixture
def deny(envoys):
    return envoys.get(with_(MAIN, unknown_credentials="deny"))


@pytest.mark.parametrize("value", [
    basic("jdoe", "hunter2"),
    "Bearer NjM0MjU2Nzg5MDEyOkQ5f3Vx2kP0yAbCdEfGhIjKlMnOpQrS",
    'Digest username="jdoe", realm="jira", nonce="abc", response="0f"',
], ids=["password", "jira-pat", "digest"])
def test_unknown_credentials_deny(deny, demo, value):
    refused(get(deny, authorization=value), demo, 401)


def test_unknown_credentials_deny_still_passes_requests_without_credentials(deny, demo):
    passed_through(get(deny), demo)


def test_unknown_credentials_deny_only_on_protected_paths(deny, demo):
    auth = basic("jdoe", "hunter2")
    passed_through(get(deny, "/secure/Dashboard.jspa", authorization=auth), demo, authorization=auth)


def test_unknown_credentials_deny_still_accepts_tokens(deny, demo):
    allowed(get(deny, auth=("carol", T["plain"])), demo, "carol")


# --------------------------------------------------------------------------- auth_methods


@pytest.fixture
def basic_only(envoys):
    cfg = dict(MAIN)
    del cfg["auth_methods"]  # default: basic
    return envoys.get(cfg)


@pytest.fixture
def bearer_only(envoys):
    return envoys.get(with_(MAIN, auth_methods="bearer"))


def test_basic_only_accepts_basic(basic_only, demo):
    allowed(get(basic_only, auth=("carol", T["plain"])), demo, "carol")


def test_basic_only_refuses_token_as_bearer(basic_only, demo):
    refused(get(basic_only, bearer=T["plain"]), demo, 401, methods="basic")


def test_basic_only_challenge_on_unknown_tg_token(basic_only, demo):
    refused(get(basic_only, auth=("carol", UNKNOWN_TG)), demo, 401, methods="basic")


def test_basic_only_passes_non_token_bearer(basic_only, demo):
    value = "Bearer NjM0MjU2Nzg5MDEyOkQ5f3Vx2kP0yAbCdEfGhIjKlMnOpQrS"
    passed_through(get(basic_only, authorization=value), demo, authorization=value)


def test_bearer_only_accepts_bearer(bearer_only, demo):
    allowed(get(bearer_only, bearer=T["plain"]), demo, "carol")


def test_bearer_only_refuses_token_as_basic(bearer_only, demo):
    refused(get(bearer_only, auth=("carol", T["plain"])), demo, 401, methods="bearer")


def test_bearer_only_userless_token_cannot_be_used(bearer_only, demo):
    refused(get(bearer_only, bearer=T["userless"]), demo, 401, methods="bearer")
    refused(get(bearer_only, auth=("zed", T["userless"])), demo, 401, methods="bearer")


def test_both_accepts_both_and_challenges_both(main, demo):
    allowed(get(main, auth=("carol", T["plain"])), demo, "carol")
    demo.reset()
    allowed(get(main, bearer=T["plain"]), demo, "carol")
    demo.reset()
    refused(get(main, bearer=UNKNOWN_TG), demo, 401, methods="both")


# --------------------------------------------------------------------------- §5 user binding


@pytest.mark.parametrize("user", ["Alice.Smith", "alice.smith", "ALICE.SMITH"])
def test_bound_token_basic_user_case_insensitive(main, demo, user):
    # the acting user is the configured spelling
    allowed(get(main, auth=(user, T["bound"])), demo, "Alice.Smith", "Bearer pat-alice")


@pytest.mark.parametrize("user", ["bob", "", "Alice.Smith2", "alice.smit"])
def test_bound_token_other_user_is_401(main, demo, user):
    refused(get(main, auth=(user, T["bound"])), demo, 401)


def test_bound_token_bearer_acts_as_bound_user(main, demo):
    allowed(get(main, bearer=T["bound"]), demo, "Alice.Smith", "Bearer pat-alice")


@pytest.mark.parametrize("user", ["zed", "Zed.Q", "jürgen"])
def test_userless_token_acts_as_basic_user(main, demo, user):
    allowed(get(main, auth=(user, T["userless"])), demo, user)


def test_userless_token_empty_username_is_401(main, demo):
    refused(get(main, auth=("", T["userless"])), demo, 401)


def test_userless_token_bearer_is_401(main, demo):
    refused(get(main, bearer=T["userless"]), demo, 401)


def test_plaintext_token_form(main, demo):
    allowed(get(main, auth=("Carol", T["plain"])), demo, "carol")


# --------------------------------------------------------------------------- §5 expiry, revocation


def test_expired_token_is_401(main, demo):
    refused(get(main, auth=("carol", T["expired"])), demo, 401, "token expired")
    refused(get(main, bearer=T["expired"]), demo, 401, "token expired")


def test_future_expiry_is_ok(main, demo):
    allowed(get(main, auth=("carol", T["future"])), demo, "carol")


def test_revoked_token_is_401(main, demo):
    refused(get(main, auth=("carol", T["revoked"])), demo, 401, "token revoked")
    refused(get(main, bearer=T["revoked"]), demo, 401, "token revoked")


def test_check_order_revoked_before_expired_before_user(main, demo):
    refused(get(main, auth=("carol", T["revoked_expired"])), demo, 401, "token revoked")
    refused(get(main, auth=("mallory", T["revoked"])), demo, 401, "token revoked")
    refused(get(main, auth=("mallory", T["expired"])), demo, 401, "token expired")


# --------------------------------------------------------------------------- §5 ips


def test_ip_allow_list_match(main, demo):
    allowed(get(main, auth=("dave", T["ip_local"])), demo, "dave")


def test_ip_allow_list_mismatch_is_403(main, demo):
    refused(get(main, auth=("dave", T["ip_ten"])), demo, 403)


@pytest.mark.parametrize("xff", ["10.1.2.3", "10.1.2.3, 10.0.0.1", "127.0.0.1, 10.9.9.9"])
def test_x_forwarded_for_cannot_spoof_client_address(main, demo, xff):
    refused(get(main, auth=("dave", T["ip_ten"]), headers=[("X-Forwarded-For", xff)]), demo, 403)


def test_x_forwarded_for_does_not_break_loopback_match(main, demo):
    allowed(get(main, auth=("dave", T["ip_local"]), headers=[("X-Forwarded-For", "203.0.113.9")]), demo, "dave")


def test_user_checked_before_ip(main, demo):
    refused(get(main, auth=("mallory", T["ip_ten"])), demo, 401)


# --------------------------------------------------------------------------- §5 run_as


@pytest.mark.parametrize("own", ["Alice.Smith", "alice.smith"])
def test_run_as_own_user(main, demo, own):
    r = get(main, auth=("alice.smith", T["bound"]), headers=[("contextUser", own)])
    # the same Jira user (usernames compare case-insensitively): either spelling is right
    allowed(r, demo, "Alice.Smith", "Bearer pat-alice", ci=True)


@pytest.mark.parametrize("hname", ["contextUser", "contextuser", "CONTEXTUSER"])
def test_run_as_listed_user(main, demo, hname):
    r = get(main, auth=("Alice.Smith", T["bound"]), headers=[(hname, "bob")])
    allowed(r, demo, "bob", "Bearer pat-bob")


def test_run_as_listed_user_with_bearer(main, demo):
    allowed(get(main, bearer=T["bound"], headers=[("contextUser", "bob")]), demo, "bob", "Bearer pat-bob")


def test_run_as_list_compares_usernames_case_insensitively(main, demo):
    r = get(main, auth=("Alice.Smith", T["bound"]), headers=[("contextUser", "BOB")])
    allowed(r, demo, "bob", "Bearer pat-bob", ci=True)


@pytest.mark.parametrize("order", [["bob", "mallory"], ["mallory", "bob"]], ids=["listed-first", "unlisted-first"])
def test_repeated_run_as_header_never_acts_as_unlisted_user(main, demo, order):
    # Ambiguous in the SPEC: 400, 403, or acting as the checked (listed) user are all safe, as
    # long as mallory never becomes the acting user and no copy of the header reaches the app.
    r = get(main, auth=("Alice.Smith", T["bound"]), headers=[("contextUser", u) for u in order])
    if r.status == 200:
        allowed(r, demo, "bob", "Bearer pat-bob")
    else:
        refused(r, demo, r.status)
        assert r.status in (400, 403)


def test_run_as_unlisted_user_is_403(main, demo):
    refused(get(main, auth=("Alice.Smith", T["bound"]), headers=[("contextUser", "mallory")]), demo, 403)


def test_run_as_star(main, demo):
    allowed(get(main, auth=("erin", T["runas_any"]), headers=[("contextUser", "anyone.at.all")]), demo,
            "anyone.at.all")


def test_run_as_userless_token_own_basic_user(main, demo):
    allowed(get(main, auth=("zed", T["userless"]), headers=[("contextUser", "ZED")]), demo, "zed", ci=True)


def test_run_as_userless_token_without_run_as_is_403(main, demo):
    refused(get(main, auth=("zed", T["userless"]), headers=[("contextUser", "bob")]), demo, 403)


def test_run_as_userless_token_with_run_as(main, demo):
    allowed(get(main, auth=("zed", T["userless_runas"]), headers=[("contextUser", "bob")]), demo, "bob",
            "Bearer pat-bob")


def test_ip_checked_before_run_as(main, demo):
    refused(get(main, auth=("dave", T["ip_ten"]), headers=[("contextUser", "mallory")]), demo, 403)


# --------------------------------------------------------------------------- §9 upstream identity


def test_upstream_gets_no_client_authorization_or_cookie(main, demo):
    r = main.request("POST", "/rest/api/2/issue/TG-1/comment?expand=renderedBody",
                     headers=[("Cookie", "JSESSIONID=abc"), ("Cookie", "seraph.rememberme.cookie=xyz"),
                              ("X-Forwarded-User", "admin"), ("X-Atlassian-Token", "no-check"),
                              ("Content-Type", "application/json")],
                     body=b'{"body":"hi"}', auth=("carol", T["plain"]))
    rec = allowed(r, demo, "carol")
    assert rec.method == "POST"
    assert rec.path == "/rest/api/2/issue/TG-1/comment?expand=renderedBody"
    assert rec.header_values("x-atlassian-token") == ["no-check"]
    assert rec.body == b'{"body":"hi"}'


def test_upstream_authorization_injected_for_acting_user(main, demo):
    rec = allowed(get(main, auth=("alice.smith", T["bound"]), headers=[("Cookie", "JSESSIONID=abc")]), demo,
                  "Alice.Smith", "Bearer pat-alice")
    assert T["bound"] not in repr(rec.headers)


def test_no_upstream_authorization_for_user_without_entry(main, demo):
    allowed(get(main, auth=("erin", T["runas_any"])), demo, "erin", None)


# --------------------------------------------------------------------------- §3 both config forms


@pytest.mark.parametrize("as_string", [False, True], ids=["struct", "string-value"])
def test_config_as_struct_and_as_string_value(envoys, demo, as_string):
    env = envoys.get(MAIN, as_string=as_string)
    conf = harness.filter_configuration(env.config)
    assert conf["@type"].endswith("StringValue" if as_string else "Struct")
    allowed(get(env, auth=("alice.smith", T["bound"])), demo, "Alice.Smith", "Bearer pat-alice")
    demo.reset()
    allowed(get(env, auth=("zed", T["userless"])), demo, "zed")
    demo.reset()
    refused(get(env, auth=("carol", T["expired"])), demo, 401, "token expired")
    refused(get(env, auth=("carol", UNKNOWN_TG)), demo, 401)
    passed_through(get(env), demo)


# --------------------------------------------------------------------------- §3 load errors


def _assert_load_error(rc, log, field, token_id=None):
    assert rc is not None, f"Envoy accepted a config it must refuse; log:\n{log[-3000:]}"
    assert rc != 0
    rx = re.compile(r"(?<![A-Za-z0-9_])" + re.escape(field) + r"(?![A-Za-z0-9_])")
    lines = [l for l in log.splitlines() if rx.search(l) and (token_id is None or token_id in l)]
    assert lines, (f"no log line names field {field!r}" + (f" and token {token_id!r}" if token_id else "")
                   + f":\n{log[-4000:]}")
    for t in T.values():
        assert t not in log, "token material in the log"


def _one_token(**fields):
    base = {"id": "cfg-tok-1", "name": "x", "user": "carol", "sha256": sha256_hex(new_token())}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def test_secure_mode_refuses_plaintext_token(envoys):
    cfg = {"secure_mode": True, "tokens": [_one_token(), _one_token(id="ci-secure-7", sha256=None, token=new_token())]}
    rc, log = envoys.expect_start_failure(cfg)
    _assert_load_error(rc, log, "token", "ci-secure-7")


def test_secure_mode_refuses_plaintext_token_as_string_value(envoys):
    cfg = {"secure_mode": True, "tokens": [_one_token(id="ci-secure-8", sha256=None, token=new_token())]}
    rc, log = envoys.expect_start_failure(cfg, as_string=True)
    _assert_load_error(rc, log, "token", "ci-secure-8")


def test_secure_mode_accepts_digests(envoys, demo):
    env = envoys.get({"secure_mode": True, "tokens": [tok("bound", "b", "bound", user="Alice.Smith")]})
    allowed(get(env, auth=("alice.smith", T["bound"])), demo, "Alice.Smith")


def test_duplicate_id_refused(envoys):
    cfg = {"tokens": [_one_token(id="dup-id-1"), _one_token(id="dup-id-1")]}
    rc, log = envoys.expect_start_failure(cfg)
    _assert_load_error(rc, log, "id", "dup-id-1")


def test_duplicate_digest_refused(envoys):
    t = new_token()
    cfg = {"tokens": [_one_token(id="dig-a", sha256=sha256_hex(t)), _one_token(id="dig-b", sha256=None, token=t)]}
    rc, log = envoys.expect_start_failure(cfg)
    assert rc not in (None, 0), log[-3000:]
    assert re.search(r"dig-[ab]", log), log[-3000:]
    assert t not in log


@pytest.mark.parametrize("digest", ["A" * 64, "0" * 63, "g" * 64, "0" * 65, " " + "0" * 63],
                         ids=["uppercase", "short", "non-hex", "long", "space"])
def test_bad_sha256_refused(envoys, digest):
    rc, log = envoys.expect_start_failure({"tokens": [_one_token(id="bad-digest", sha256=digest)]})
    _assert_load_error(rc, log, "sha256", "bad-digest")


@pytest.mark.parametrize("when", ["2027-01-01", "yesterday", "2027-13-01T00:00:00Z", "2027-01-01 00:00:00"],
                         ids=["date-only", "word", "month-13", "no-T-no-zone"])
def test_bad_time_refused(envoys, when):
    rc, log = envoys.expect_start_failure({"tokens": [_one_token(id="bad-time", expires=when)]})
    _assert_load_error(rc, log, "expires", "bad-time")


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "300.1.1.1", "10.0.0.0/8/8", "localhost"])
def test_bad_cidr_refused(envoys, cidr):
    rc, log = envoys.expect_start_failure({"tokens": [_one_token(id="bad-cidr", ips=["127.0.0.1", cidr])]})
    _assert_load_error(rc, log, "ips", "bad-cidr")


def test_unknown_token_field_refused(envoys):
    rc, log = envoys.expect_start_failure({"tokens": [_one_token(id="odd-field", colour="blue")]})
    _assert_load_error(rc, log, "colour", "odd-field")


def test_unknown_top_level_field_refused(envoys):
    rc, log = envoys.expect_start_failure({"protected_path": ["/rest/"], "tokens": [_one_token()]})
    _assert_load_error(rc, log, "protected_path")


def test_bad_enum_value_refused(envoys):
    rc, log = envoys.expect_start_failure({"auth_methods": "digest", "tokens": [_one_token()]})
    _assert_load_error(rc, log, "auth_methods")


def test_malformed_json_string_value_refused(envoys):
    rc, log = envoys.expect_start_failure(raw_plugin_string='{"tokens": [')
    assert rc not in (None, 0), log[-3000:]


# --------------------------------------------------------------------------- §12 no secrets in logs


def test_no_token_material_in_envoy_logs(main, demo):
    get(main, auth=("carol", T["plain"]))
    get(main, auth=("carol", UNKNOWN_TG))
    get(main, bearer=T["revoked"])
    main.wait_access_log(r"token=revoked")
    text = main.log() + main.access_log()
    for t in list(T.values()) + [UNKNOWN_TG]:
        assert t not in text
        assert sha256_hex(t) not in main.access_log()
