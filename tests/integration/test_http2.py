"""HTTP/2: the authentication, identity, restriction and body rules hold over HTTP/2 exactly as
over HTTP/1.1. The shipped listener (envoy/envoy.yaml, `codec_type: AUTO`) accepts h2c; a
test-generated config with a test certificate (openssl) serves TLS with ALPN h2. The key cases
of test_auth, test_canonical, test_restrictions and test_audit run over HTTP/1.1, h2c and
h2 over TLS, with the same expectations; HTTP/2-only framing (repeated `authorization` fields,
split `cookie` fields, request trailers, a body in several DATA frames) is included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

import harness
from h2client import H2Client
from harness import OpenRequest, basic, chunked, new_token, request_head, sha256_hex, upstream_rq_total

MAX_BODY = 1024
LINES = {
    "jra": ("jra.bot", [".*/rest/api/2/issue/JRA.*"]),
    "kanban": ("kanban.bot", ["[post].*/rest/api/2/issue/KANBAN-100/comment.*"]),
    "filters": ("filter.bot", [".*/rest/extender/1.0/filter/user/.*[QueryParam::permissions==true]"]),
    "newfilter": ("nf.bot", [".*/rest/api/2/filter[JsonData::editable==false]"]),
    "free": ("free.bot", None),
}
T = {k: new_token() for k in LINES}
REVOKED = new_token()


def _config():
    tokens = []
    for k, (user, lines) in LINES.items():
        t = {"id": k, "name": k, "user": user, "sha256": sha256_hex(T[k])}
        if lines is not None:
            t["limit_to"] = lines
        if k == "free":
            t["run_as"] = ["alice"]
        tokens.append(t)
    tokens.append({"id": "revoked", "user": "rev.bot", "sha256": sha256_hex(REVOKED), "revoked": True})
    return {"auth_methods": "both", "max_body_bytes": MAX_BODY, "tokens": tokens,
            "audit": {"cluster": "audit_sink", "authority": "audit", "path": "/audit", "flush_interval_ms": 100}}


CONFIG = _config()
# Envoy's HTTP/1 codec drops request trailers unless enable_trailers is set; with it, HTTP/1.1
# and HTTP/2 hand the filter the same trailers.
HCM = {"http_protocol_options": {"enable_trailers": True}}
PROTOCOLS = ["h1", "h2c", "h2-tls"]


# --------------------------------------------------------------------------- transports


class H1:
    """The same request over HTTP/1.1 (one connection each): chunked when the body has
    several parts or trailers, Content-Length otherwise."""

    def __init__(self, env):
        self.env = env

    def request(self, method, path, headers=(), chunks=None, trailers=None, pause=0.0):
        headers = list(headers)
        if chunks is None and not trailers:
            return self.env.raw(request_head(method, path, headers + [("Connection", "close")]),
                                head=method == "HEAD")
        chunks = list(chunks or [])
        if len(chunks) <= 1 and not trailers:
            body = chunks[0] if chunks else b""
            return self.env.raw(request_head(method, path, headers + [("Content-Length", str(len(body))),
                                                                      ("Connection", "close")]) + body)
        with OpenRequest(self.env) as o:
            o.send(request_head(method, path, headers + [("Transfer-Encoding", "chunked"), ("Connection", "close")]))
            for i, c in enumerate(chunks):
                if pause and i:
                    time.sleep(pause)
                try:
                    o.send(b"%x\r\n%s\r\n" % (len(c), c))
                except OSError:
                    break
            else:
                try:
                    o.send(chunked([], trailers or ()))
                except OSError:
                    pass
            return o.response()


@pytest.fixture(scope="module")
def tls_env(demo, tmp_path_factory):
    """An Envoy like the shipped one, with a TLS transport socket (ALPN h2, http/1.1) and a
    certificate made here with openssl."""
    try:
        harness.require_artifacts()
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    if not shutil.which("openssl"):
        pytest.fail("openssl is missing: apt-get install openssl", pytrace=False)
    work = str(tmp_path_factory.mktemp("tls"))
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=tokengate.test", "-addext", "subjectAltName=DNS:tokengate.test"],
                   check=True, capture_output=True)
    env = harness.Envoy(work, demo.upstream.port, demo.sink.port, plugin_config=CONFIG, hcm_overrides=HCM)
    chain = env.config["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
            },
        },
    }
    with open(env.config_path, "w") as f:
        json.dump(env.config, f, indent=1)
    try:
        env.start()
    except harness.HarnessError as e:
        pytest.fail(f"Envoy with TLS did not start: {e}", pytrace=False)
    yield env
    env.stop()


@pytest.fixture(params=PROTOCOLS)
def proto(request, envoys):
    """(name, client, env) for one protocol; h1 and h2c share the plain listener."""
    if request.param == "h2-tls":
        env = request.getfixturevalue("tls_env")
        return request.param, H2Client(env.port, tls=True), env
    env = envoys.get(CONFIG, hcm_overrides=HCM)
    client = H1(env) if request.param == "h1" else H2Client(env.port)
    return request.param, client, env


def auth(key, scheme="basic"):
    user = LINES[key][0]
    return ("authorization", basic(user, T[key]) if scheme == "basic" else "Bearer " + T[key])


JSON_CT = ("content-type", "application/json")


def allowed(resp, demo, key, method, path, body=None, acting=None):
    assert resp.status == 200, resp
    (rec,) = demo.upstream.wait_for(1)
    assert rec.header_values("x-forwarded-user") == [acting or LINES[key][0]], rec.headers
    assert rec.header_values("authorization") == [] and rec.header_values("cookie") == [], rec.headers
    assert (rec.method, rec.path) == (method, path)
    if body is not None:
        assert rec.body == body
    return rec


def refused(resp, env, demo, status, before):
    harness.assert_jira_error(resp, status)
    assert demo.upstream.requests == [] and upstream_rq_total(env) == before, "a refused request went upstream"


def envoy_or_filter_refused(resp, env, demo, before):
    """Refused by Envoy (its codec, plain text) or the filter; nothing upstream."""
    assert resp.status in (0, 400, 403, 404), resp
    assert demo.upstream.requests == [] and upstream_rq_total(env) == before


# --------------------------------------------------------------------------- authentication and identity


def test_basic_and_bearer_act_as_the_token_user(proto, demo):
    name, c, env = proto
    for scheme in ("basic", "bearer"):
        demo.reset()
        r = c.request("GET", "/rest/api/2/issue/JRA-1", [auth("jra", scheme), ("x-forwarded-user", "admin")])
        allowed(r, demo, "jra", "GET", "/rest/api/2/issue/JRA-1")


def test_unknown_and_revoked_tokens_are_401(proto, demo):
    name, c, env = proto
    before = upstream_rq_total(env)
    r = c.request("GET", "/rest/api/2/issue/JRA-1", [("authorization", basic("jra.bot", new_token()))])
    refused(r, env, demo, 401, before)
    assert 'Basic realm="tokengate"' in harness.www_authenticate(r)
    r = c.request("GET", "/rest/api/2/issue/JRA-1", [("authorization", "Bearer " + REVOKED)])
    assert harness.assert_jira_error(r, 401) == "token revoked"


def test_repeated_authorization_is_400(proto, demo):
    """Two authorization fields (HTTP/2 carries them as two fields, HTTP/1.1 as two lines)."""
    name, c, env = proto
    for second in (auth("jra"), auth("free"), ("authorization", "Basic Zm9vOmJhcg=="), ("authorization", "Bearer x")):
        demo.reset()
        before = upstream_rq_total(env)
        r = c.request("GET", "/rest/api/2/issue/JRA-1", [auth("jra"), second])
        refused(r, env, demo, 400, before)


def test_identity_header_is_stripped_without_a_token(proto, demo):
    name, c, env = proto
    for path in ("/rest/api/2/myself", "/secure/Dashboard.jspa"):
        demo.reset()
        r = c.request("GET", path, [("x-forwarded-user", "admin"), ("cookie", "a=1"), ("cookie", "b=2")])
        assert r.status == 200, r
        (rec,) = demo.upstream.wait_for(1)
        assert rec.header_values("x-forwarded-user") == [], rec.headers
        # split cookie fields reach the app as one header (Envoy joins HTTP/2 crumbs with "; ")
        cookies = "; ".join(rec.header_values("cookie"))
        assert "a=1" in cookies and "b=2" in cookies, rec.headers


def test_split_cookies_are_removed_on_token_requests(proto, demo):
    name, c, env = proto
    r = c.request("GET", "/rest/api/2/issue/JRA-1", [("cookie", "JSESSIONID=1"), auth("jra"), ("cookie", "seraph=2")])
    allowed(r, demo, "jra", "GET", "/rest/api/2/issue/JRA-1")


def test_run_as(proto, demo):
    name, c, env = proto
    r = c.request("GET", "/rest/api/2/myself", [auth("free"), ("contextuser", "alice")])
    allowed(r, demo, "free", "GET", "/rest/api/2/myself", acting="alice")
    demo.reset()
    before = upstream_rq_total(env)
    r = c.request("GET", "/rest/api/2/myself", [auth("free"), ("contextuser", "bob")])
    refused(r, env, demo, 403, before)


# --------------------------------------------------------------------------- canonical request


@pytest.mark.parametrize("path", [
    "/rest/api/2/issue/JRA-1;x=1", "/rest/api/2/issue/JRA-1/..;/ABC-1", "/rest/api/2/issue/JRA-1/%2e%2e/ABC-1",
    "/rest/api/2/issue/JRA-1%2f..%2fABC-1", "/rest/api/2/issue/JRA-1%5c..%5cABC-1", "/rest/api/2/issue/JRA-1/../ABC-1",
    "/rest/api/2/issue/JRA-1%ff", "/rest/api/2/issue/JRA-1%00", "/rest/api/2/issue/JRA-1#/../ABC-1",
    "/rest/api/2/issue/JRA-1\\..\\ABC-1", "/rest/api/2/issue/JRA-\u00e9", "/rest/api/2/issue/JRA-1?x=%zz",
    "/rest/%25%32%65%25%32%65/api/2/issue/ABC-1",
])
def test_non_canonical_paths_never_pass(proto, demo, path):
    """Refused by Envoy or the filter, or normalised by Envoy into a path the token's line
    matches; never forwarded as written with the token's identity."""
    name, c, env = proto
    before = upstream_rq_total(env)
    try:
        r = c.request("GET", path, [auth("jra")])
    except (AssertionError, OSError):
        assert demo.upstream.requests == [] and upstream_rq_total(env) == before
        return
    if r.status == 200:
        (rec,) = demo.upstream.requests
        assert rec.path != path and rec.header_values("x-forwarded-user") == ["jra.bot"], rec
        assert rec.path.startswith("/rest/api/2/issue/JRA"), rec.path
    else:
        envoy_or_filter_refused(r, env, demo, before)


def test_method_override_is_400(proto, demo):
    name, c, env = proto
    before = upstream_rq_total(env)
    r = c.request("POST", "/rest/api/2/issue/KANBAN-100/comment", [auth("kanban"), JSON_CT,
                                                                   ("x-http-method-override", "DELETE")], [b"{}"])
    refused(r, env, demo, 400, before)


# --------------------------------------------------------------------------- restrictions


@pytest.mark.parametrize("key,method,path,expect", [
    ("jra", "GET", "/rest/api/2/issue/JRA-12?expand=x", 200),
    ("jra", "GET", "/rest/api/2/issue/ABC-1", 403),
    ("jra", "GET", "/rest/api/2/issue/ABC-1?x=/rest/api/2/issue/JRA-1", 403),
    ("kanban", "GET", "/rest/api/2/issue/KANBAN-100/comment", 403),
    ("kanban", "HEAD", "/rest/api/2/issue/KANBAN-100/comment", 403),
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin?permissions=true", 200),
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin?permissions=true&permissions=false", 403),
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin?permissions=true&perm%69ssions=false", 403),
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin", 403),
])
def test_lines(proto, demo, key, method, path, expect):
    name, c, env = proto
    before = upstream_rq_total(env)
    r = c.request(method, path, [auth(key)])
    if expect == 200:
        allowed(r, demo, key, method, path)
    elif method == "HEAD":
        assert r.status == expect and demo.upstream.requests == []
    else:
        refused(r, env, demo, expect, before)


def test_form_body_cannot_pass_a_query_param_line(proto, demo):
    name, c, env = proto
    before = upstream_rq_total(env)
    r = c.request("POST", "/rest/extender/1.0/filter/user/admin?permissions=true",
                  [auth("filters"), ("content-type", "application/x-www-form-urlencoded")], [b"permissions=false"])
    refused(r, env, demo, 403, before)


# --------------------------------------------------------------------------- bodies


NF = "/rest/api/2/filter"


@pytest.mark.parametrize("chunks,expect", [
    ([b'{"editable":false}'], 200),
    ([b'{"editable":true}'], 403),
    ([b'{"editable":false,"editable":true}'], 400),
    ([b'{"edi', b'table":fal', b'se}'], 200),  # split inside a name and a literal
    ([b'{"editable":', b'false', b',"editable":true}'], 400),  # the duplicate in the last frame
    ([b'{"editable":false', b'}x'], 400),
    ([b'{"editable":false,"x":"', b"a" * 600, b"a" * 600, b'"}'], 413),
    ([b""], 400),
], ids=["one", "true", "dup", "split3", "dup-late", "trailing", "too-large", "empty"])
def test_json_bodies_in_data_frames(proto, demo, chunks, expect):
    name, c, env = proto
    before = upstream_rq_total(env)
    r = c.request("POST", NF, [auth("newfilter"), JSON_CT], chunks, pause=0.05)
    if expect == 200:
        allowed(r, demo, "newfilter", "POST", NF, body=b"".join(chunks))
    else:
        refused(r, env, demo, expect, before)


def test_body_frames_apart_hold_the_headers(proto, demo):
    """Three DATA frames 0.3 s apart: nothing goes upstream before the last one."""
    name, c, env = proto
    r = c.request("POST", NF, [auth("newfilter"), JSON_CT], [b'{"name":"f",', b'"editable"', b':false}'], pause=0.3)
    allowed(r, demo, "newfilter", "POST", NF, body=b'{"name":"f","editable":false}')


@pytest.mark.parametrize("body,expect", [(b'{"editable":false}', 200), (b'{"editable":true}', 403)])
def test_body_with_trailers(proto, demo, body, expect):
    """Decided at the trailers; an identity field in the trailers changes nothing."""
    name, c, env = proto
    before = upstream_rq_total(env)
    r = c.request("POST", NF, [auth("newfilter"), JSON_CT], [body[:5], body[5:]],
                  trailers=[("x-checksum", "1"), ("x-forwarded-user", "admin")], pause=0.05)
    if expect == 200:
        rec = allowed(r, demo, "newfilter", "POST", NF, body=body)
        assert rec.header_values("x-forwarded-user") == ["nf.bot"]
    else:
        refused(r, env, demo, expect, before)


@pytest.mark.parametrize("ctype,expect", [("application/json; charset=UTF-8", 200), ("text/plain", 415),
                                          ("application/json;charset=utf-16", 415)])
def test_media_type(proto, demo, ctype, expect):
    name, c, env = proto
    before = upstream_rq_total(env)
    r = c.request("POST", NF, [auth("newfilter"), ("content-type", ctype)], [b'{"editable":false}'])
    if expect == 200:
        allowed(r, demo, "newfilter", "POST", NF)
    else:
        refused(r, env, demo, expect, before)


# --------------------------------------------------------------------------- audit


def test_audit_line_over_each_protocol(proto, demo):
    name, c, env = proto
    path = f"/rest/api/2/issue/JRA-{PROTOCOLS.index(name) + 700}"
    r = c.request("GET", path, [auth("jra")])
    allowed(r, demo, "jra", "GET", path)
    (line,) = demo.sink.wait_for_lines(1, predicate=lambda ln: ln.get("path") == path)
    assert (line["decision"], line["token_id"], line["user"], line["status"]) == ("allow", "jra", "jra.bot", 200), line


def test_the_protocol_is_the_one_named(proto, demo):
    """h2c and TLS really speak HTTP/2 to Envoy (its own per-codec counters), h1 HTTP/1.1."""
    name, c, env = proto
    counter = "http.tokengate.downstream_rq_http2_total" if name != "h1" else "http.tokengate.downstream_rq_http1_total"

    def count():
        return env.stats("^" + counter.replace(".", r"\.") + "$").get(counter, 0)

    before = count()
    r = c.request("GET", "/secure/Dashboard.jspa")
    assert r.status == 200, r
    assert count() == before + 1, (name, counter)
