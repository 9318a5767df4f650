"""SPEC §6 restriction lines and §8 bodies through the real Envoy 1.40 with the real tokengate wasm.

* Every example of the seed ("Specify limits for tokens") in both directions.
* Attacks per class: query pollution and encoded names, JSON duplicate keys and type confusion,
  bodies split across chunks, method case, HEAD against a GET line, method overrides.
* §8: 413 (Content-Length and chunked growth), 415 (type, charset, parameters, two types,
  encodings), 400 (not strict JSON), trailers, held headers while a body is read, and requests
  decided without buffering (large uploads keep working).
* Config load: a bad restriction line stops Envoy and the log names the field, the token, the
  line and the column.

Every refusal asserts Jira's error shape AND that nothing reached the upstream, not even the
headers (Envoy's own `cluster.upstream.upstream_rq_total` counter does not move). Every allowed
request asserts what the upstream got: the token's user in the identity header, no
Authorization, the method, path and body as sent.
"""

import gzip
import json
import re
import time

import pytest

import harness
from harness import OpenRequest, assert_jira_error, basic, chunked, new_token, request_head, sha256_hex, \
    upstream_rq_total

MAX_BODY = 1024

# token key -> (user, limit_to)
LINES = {
    # the seed's examples, verbatim
    "jra": ("jra.bot", [".*/rest/api/2/issue/JRA.*"]),
    "kanban": ("kanban.bot", ["[post].*/rest/api/2/issue/KANBAN-100/comment.*"]),
    "filters": ("filter.bot", [".*/rest/extender/1.0/filter/user/.*[QueryParam::permissions==true]"]),
    "worklog": ("worklog.bot",
                [".*rest/extender/1.0/worklog/user/.*[QueryParam::dateFrom==2018-01-01][QueryParam::dateTo==2018-12-01]"]),
    "newfilter": ("nf.bot", [".*/rest/api/2/filter[JsonData::editable==false]"]),
    "newfilter_nofav": ("nff.bot", [".*/rest/api/2/filter[JsonData::editable==false][JsonData::favourite==false]"]),
    # more
    "getonly": ("get.bot", ["[get]/rest/api/2/myself", "[GET|Post]/rest/api/2/search"]),
    "jql": ("jql.bot", ["[get]/rest/api/2/search[QueryParam::jql==project = JRA]"]),
    "nested": ("nest.bot", ["[post]/rest/api/2/issue[JsonData::fields.project.key==JRA]",
                            "[put]/rest/api/2/issue/JRA-[0-9]+"]),
    "free": ("free.bot", None),  # unrestricted
}
T = {key: new_token() for key in LINES}


def _token(key):
    user, lines = LINES[key]
    t = {"id": key, "name": f"token {key}", "user": user, "sha256": sha256_hex(T[key])}
    if lines is not None:
        t["limit_to"] = lines
    return t


CONFIG = {"auth_methods": "both", "max_body_bytes": MAX_BODY, "tokens": [_token(k) for k in LINES]}
# Envoy's HTTP/1 codec drops request trailers unless enable_trailers is set: then the filter
# sees them and must decide in on_http_request_trailers.
TRAILERS_HCM = {"http_protocol_options": {"enable_trailers": True}}
JSON_CT = ("Content-Type", "application/json")


@pytest.fixture
def env(envoys):
    return envoys.get(CONFIG)


# --------------------------------------------------------------------------- helpers


def call(env, key, method, path, body=None, headers=(), content_type="application/json"):
    """A token request (Basic, the token's user). A JSON Content-Type is added when there is a
    body and `content_type` is not None."""
    pairs = list(headers)
    if body is not None and content_type is not None and not any(k.lower() == "content-type" for k, _ in pairs):
        pairs.append(("Content-Type", content_type))
    return env.request(method, path, headers=pairs, body=body, auth=(LINES[key][0], T[key]))


def auth_header(key):
    return ("Authorization", basic(LINES[key][0], T[key]))


class Upstream:
    """Snapshot of what the upstream got so far, to prove a refused request added nothing."""

    def __init__(self, env, demo):
        self.env, self.demo = env, demo
        self.rq = upstream_rq_total(env)
        self.recorded = len(demo.upstream.requests)

    def unchanged(self):
        assert upstream_rq_total(self.env) == self.rq, "Envoy started a request to the upstream"
        assert len(self.demo.upstream.requests) == self.recorded, "the upstream received a request"


def allowed(resp, demo, key, method, path, body=None):
    """200 from the upstream, which got exactly this one request, as the token's user."""
    assert resp.status == 200, resp
    (rec,) = demo.upstream.requests
    assert rec.header_values("x-forwarded-user") == [LINES[key][0]], rec.headers
    assert rec.header_values("authorization") == [], rec.headers
    assert rec.method == method
    assert rec.path == path
    if body is not None:
        assert rec.body == body
    return rec


def refused(resp, env, demo, status, message=None, before=None):
    """A local reply in Jira's shape; nothing reached the upstream (not even headers)."""
    if resp.status == 200:
        raise AssertionError(f"expected {status}, the request was allowed; upstream got "
                             f"{[(r.method, r.path) for r in demo.upstream.requests]}")
    msg = assert_jira_error(resp, status, message)
    assert demo.upstream.requests == [], "a refused request reached the upstream"
    if before is not None:
        before.unchanged()
    for t in T.values():
        assert t not in resp.body.decode("utf-8", "replace")
    return msg


def check(env, demo, key, method, path, expect, body=None, headers=(), content_type="application/json",
          upstream_path=None):
    """One request: expect 200 (allowed, with the upstream record checked) or a refusal status."""
    before = Upstream(env, demo)
    r = call(env, key, method, path, body=body, headers=headers, content_type=content_type)
    if expect == 200:
        allowed(r, demo, key, method, upstream_path or path,
                body.encode() if isinstance(body, str) else body)
    else:
        refused(r, env, demo, expect, before=before)
    return r


# --------------------------------------------------------------------------- the seed's examples


SEED_CASES = [
    # Restriction to JRA project issues: .*/rest/api/2/issue/JRA.*
    ("jra", "GET", "/rest/api/2/issue/JRA-1", None, 200),
    ("jra", "GET", "/rest/api/2/issue/JRA-12345?expand=renderedFields", None, 200),
    ("jra", "PUT", "/rest/api/2/issue/JRA-1", '{"fields":{"summary":"x"}}', 200),
    ("jra", "POST", "/rest/api/2/issue/JRA-1/comment", '{"body":"hi"}', 200),
    ("jra", "DELETE", "/rest/api/2/issue/JRA-9", None, 200),
    ("jra", "GET", "/rest/api/2/issue/ABC-1", None, 403),
    ("jra", "GET", "/rest/api/2/issue/jra-1", None, 403),  # regexes are case-sensitive
    ("jra", "GET", "/rest/api/2/search?jql=project%3DJRA", None, 403),
    ("jra", "GET", "/rest/api/2/issue/ABC-1?x=/rest/api/2/issue/JRA-1", None, 403),  # query is not path
    ("jra", "GET", "/rest/api/2/issue", None, 403),
    ("jra", "GET", "/rest/api/latest/issue/JRA-1", None, 403),
    # Restriction to 'comment' endpoint on KANBAN-100 issue (only POST method)
    ("kanban", "POST", "/rest/api/2/issue/KANBAN-100/comment", '{"body":"Comment text"}', 200),
    ("kanban", "POST", "/rest/api/2/issue/KANBAN-100/comment?expand=renderedBody", '{"body":"x"}', 200),
    ("kanban", "GET", "/rest/api/2/issue/KANBAN-100/comment", None, 403),
    ("kanban", "PUT", "/rest/api/2/issue/KANBAN-100/comment/10000", '{"body":"x"}', 403),
    ("kanban", "DELETE", "/rest/api/2/issue/KANBAN-100/comment/10000", None, 403),
    ("kanban", "POST", "/rest/api/2/issue/KANBAN-101/comment", '{"body":"x"}', 403),
    ("kanban", "POST", "/rest/api/2/issue/KANBAN-100", '{"body":"x"}', 403),
    ("kanban", "POST", "/rest/api/2/issue/KANBAN-1000/comment", '{"body":"x"}', 403),
    # Restriction to all filters for all users (only with permission)
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin?permissions=true", None, 200),
    ("filters", "GET", "/rest/extender/1.0/filter/user/jdoe?maxResults=5&permissions=true", None, 200),
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin?permissions=false", None, 403),
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin", None, 403),
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin?permissions=TRUE", None, 403),
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin?permissions=truee", None, 403),
    ("filters", "GET", "/rest/extender/1.0/filter/all?permissions=true", None, 403),
    # Restriction to worklogs for all users (only in the date range 2018-01-01 - 2018-12-01)
    ("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe?dateFrom=2018-01-01&dateTo=2018-12-01", None, 200),
    ("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe?dateTo=2018-12-01&dateFrom=2018-01-01", None, 200),
    ("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe?dateFrom=2018-01-01&dateTo=2018-12-01&x=1", None, 200),
    ("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe?dateFrom=2018-01-01", None, 403),
    ("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe?dateTo=2018-12-01", None, 403),
    ("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe?dateFrom=2017-01-01&dateTo=2018-12-01", None, 403),
    ("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe?dateFrom=2018-01-01&dateTo=2019-12-01", None, 403),
    ("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe?dateFrom=2018-01-01&dateTo=2018-12-01"
                       "&dateTo=2019-12-01", None, 403),
    # Restriction to create new filter (limited to uneditable only)
    ("newfilter", "POST", "/rest/api/2/filter", '{"name":"f","jql":"project = JRA","editable":false}', 200),
    ("newfilter", "POST", "/rest/api/2/filter", '{"name":"f","jql":"project = JRA","editable":true}', 403),
    ("newfilter", "POST", "/rest/api/2/filter", '{"name":"f","jql":"project = JRA"}', 403),
    ("newfilter", "POST", "/rest/api/2/filter/10000", '{"editable":false}', 403),
    ("newfilter", "PUT", "/rest/api/2/filter", '{"editable":false}', 200),  # the seed's line names no method
    # ... without adding to favourites
    ("newfilter_nofav", "POST", "/rest/api/2/filter", '{"name":"f","editable":false,"favourite":false}', 200),
    ("newfilter_nofav", "POST", "/rest/api/2/filter", '{"favourite":false,"editable":false}', 200),
    ("newfilter_nofav", "POST", "/rest/api/2/filter", '{"name":"f","editable":false,"favourite":true}', 403),
    ("newfilter_nofav", "POST", "/rest/api/2/filter", '{"name":"f","editable":false}', 403),
    ("newfilter_nofav", "POST", "/rest/api/2/filter", '{"name":"f","favourite":false}', 403),
    ("newfilter_nofav", "POST", "/rest/api/2/filter", '{"name":"f","editable":true,"favourite":false}', 403),
]


@pytest.mark.parametrize("key,method,path,body,expect", SEED_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[4]}" for c in SEED_CASES])
def test_seed_examples(env, demo, key, method, path, body, expect):
    check(env, demo, key, method, path, expect, body=body)


def test_rest_of_the_api_is_refused_to_restricted_tokens(env, demo):
    for key in ("jra", "kanban", "filters", "worklog", "newfilter", "newfilter_nofav"):
        check(env, demo, key, "GET", "/rest/api/2/myself", 403)


def test_unrestricted_token_calls_anything(env, demo):
    check(env, demo, "free", "GET", "/rest/api/2/myself", 200)
    demo.reset()
    check(env, demo, "free", "DELETE", "/rest/api/2/issue/ABC-1", 200)


# --------------------------------------------------------------------------- query parameters


QUERY_CASES = [
    ("permissions=true", 200),
    ("permissions=%74rue", 200),  # decoded value
    ("perm%69ssions=true", 200),  # decoded name matches
    ("PERMISSIONS=false&permissions=true", 200),  # names are case-sensitive, as Tomcat's
    ("permissions=true&permissions=false", 403),  # pollution: every occurrence must match
    ("permissions=false&permissions=true", 403),
    ("permissions=true&perm%69ssions=false", 403),  # an encoded name is the same parameter
    ("perm%69ssions=false&permissions=true", 403),
    ("permissions=true&permissions", 403),  # Tomcat reads a bare name as value ""
    ("permissions=true&permissions=", 403),
    ("Permissions=true", 403),
    ("permissions=true+", 403),  # "+" is a space
    ("permissions=true%20", 403),
    ("permissions+=true", 403),  # the name is "permissions "
    ("permissions=true;permissions=false", 403),  # ";" separates nothing in a query for Tomcat
    ("permissions=true%26permissions%3Dfalse", 403),  # one value "true&permissions=false"
    ("permissions%3Dtrue", 403),  # one name "permissions=true" without a value
    ("permissions=true%00", 403),
]


@pytest.mark.parametrize("query,expect", QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_query_parameter_pollution_and_encoding(env, demo, query, expect):
    check(env, demo, "filters", "GET", "/rest/extender/1.0/filter/user/admin?" + query, expect)


@pytest.mark.parametrize("query,expect", [
    ("jql=project+%3D+JRA", 200),  # "+" means space
    ("jql=project%20%3D%20JRA", 200),
    ("jql=project+=+JRA", 200),  # "=" inside a value is part of the value
    ("j%71l=project+=+JRA", 200),
    ("jql=project+%3D+JRA+OR+project+%3D+ABC", 403),
    ("jql=project%2B%3D%2BJRA", 403),  # an encoded "+" is a plus, not a space
    ("jql=project+%3D+JRA&jql=project+%3D+ABC", 403),
])
def test_plus_means_space_in_query(env, demo, query, expect):
    check(env, demo, "jql", "GET", "/rest/api/2/search?" + query, expect)


def test_query_with_malformed_percent_encoding_is_400(env, demo):
    for q in ("permissions=true&x=%zz", "permissions=true&x=%4", "permissions=tru%e", "permissions=true&x=%ff",
              "perm%C0%AEssions=true"):
        demo.reset()
        before = Upstream(env, demo)
        r = call(env, "filters", "GET", "/rest/extender/1.0/filter/user/admin?" + q)
        refused(r, env, demo, 400, before=before)


@pytest.mark.parametrize("content_type,expect", [
    ("application/x-www-form-urlencoded", 403),
    ("Application/X-WWW-Form-Urlencoded; charset=UTF-8", 403),
    ("multipart/form-data; boundary=b", 403),
    ("text/plain", 200),
])
def test_form_body_cannot_pass_a_query_param_line(env, demo, content_type, expect):
    """Tomcat's getParameterValues merges a form body's parameters with the query's: with
    `?permissions=true` and a body `permissions=false` the app reads both (found by the
    differential tests against Tomcat, tests/tomcat/). A QueryParam line never matches a
    request with a form body."""
    check(env, demo, "filters", "POST", "/rest/extender/1.0/filter/user/admin?permissions=true", expect,
          body="permissions=false", content_type=content_type)


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize("key,method,path,expect", [
    ("getonly", "GET", "/rest/api/2/myself", 200),
    ("getonly", "HEAD", "/rest/api/2/myself", 403),  # [get] does not admit HEAD
    ("getonly", "POST", "/rest/api/2/myself", 403),
    ("getonly", "OPTIONS", "/rest/api/2/myself", 403),
    ("getonly", "PROPFIND", "/rest/api/2/myself", 403),
    ("getonly", "GET", "/rest/api/2/search", 200),  # [GET|Post]: names case-insensitive in the line
    ("getonly", "POST", "/rest/api/2/search", 200),
    ("getonly", "PUT", "/rest/api/2/search", 403),
    ("getonly", "HEAD", "/rest/api/2/search", 403),
    ("jra", "HEAD", "/rest/api/2/issue/JRA-1", 200),  # no METHODS: any method
    ("jra", "PROPFIND", "/rest/api/2/issue/JRA-1", 200),
    ("kanban", "HEAD", "/rest/api/2/issue/KANBAN-100/comment", 403),
])
def test_methods(env, demo, key, method, path, expect):
    before = Upstream(env, demo)
    r = env.request(method, path, headers=[auth_header(key)])
    if expect == 200:
        allowed(r, demo, key, method, path)
    elif method == "HEAD":
        # a HEAD answer has no body: status, Jira's content-type, nothing upstream
        assert r.status == expect, r
        assert r.header("content-type") == harness.JIRA_CONTENT_TYPE, r.headers
        assert demo.upstream.requests == []
        before.unchanged()
    else:
        refused(r, env, demo, expect, before=before)


@pytest.mark.parametrize("method", ["get", "Get", "gET", "post", "Post", "pOST", "head", "Head"])
def test_method_case(env, demo, method):
    """Envoy refuses methods that are not upper case before any filter runs (checked: 400
    plain text). Whoever answers, the safe outcome: nothing reaches the upstream, and no
    spelling of a method gets past a line that does not name it."""
    for key, path in (("getonly", "/rest/api/2/myself"), ("kanban", "/rest/api/2/issue/KANBAN-100/comment")):
        demo.reset()
        before = Upstream(env, demo)
        body = b'{"body":"x"}' if method.upper() == "POST" else None
        r = env.request(method, path, headers=[auth_header(key), JSON_CT], body=body)
        if r.status == 200:
            # Only acceptable if the filter checked the method the app will serve.
            (rec,) = demo.upstream.requests
            assert rec.method == method
            line_method = {"getonly": "GET", "kanban": "POST"}[key]
            assert method.upper() == line_method, f"{method} passed a [{line_method}] line"
            continue
        assert 400 <= r.status < 500, r
        assert demo.upstream.requests == []
        before.unchanged()


@pytest.mark.parametrize("name", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
                                  "x-http-method-override", "X-METHOD-OVERRIDE"])
@pytest.mark.parametrize("key,method,path,value", [
    ("getonly", "GET", "/rest/api/2/myself", "DELETE"),
    ("getonly", "GET", "/rest/api/2/myself", "GET"),  # even naming the same method
    ("kanban", "POST", "/rest/api/2/issue/KANBAN-100/comment", "DELETE"),
    ("free", "POST", "/rest/api/2/issue/ABC-1", "DELETE"),  # unrestricted tokens too (§7)
], ids=["get-delete", "get-get", "post-delete", "unrestricted"])
def test_method_override_headers_are_400(env, demo, name, key, method, path, value):
    before = Upstream(env, demo)
    body = '{"body":"x"}' if method == "POST" else None
    r = call(env, key, method, path, body=body, headers=[(name, value)])
    refused(r, env, demo, 400, before=before)


# --------------------------------------------------------------------------- JSON bodies


NF = "/rest/api/2/filter"

JSON_CASES = [
    # type confusion: §6 reads "false" and false the same; arrays, objects, other types never match
    ('{"editable":false}', 200),
    ('{"editable":"false"}', 200),
    ('{"editable":"\\u0066alse"}', 200),  # the decoded string
    ('{"\\u0065ditable":false}', 200),  # the decoded member name
    (' \r\n\t{ "editable" : false } \n', 200),
    ('{"name":"a","nested":{"editable":true},"editable":false}', 200),
    ('{"editable":true}', 403),
    ('{"editable":"true"}', 403),
    ('{"editable":"False"}', 403),
    ('{"editable":"false "}', 403),
    ('{"editable":[false]}', 403),
    ('{"editable":{"value":false}}', 403),
    ('{"editable":0}', 403),
    ('{"editable":null}', 403),
    ('{"editable":""}', 403),
    ('{"Editable":false}', 403),
    ('{"nested":{"editable":false}}', 403),  # not top-level
    ('[{"editable":false}]', 403),  # top level is an array
    ('"editable"', 403),
    ('false', 403),
    # not strict JSON: 400 (the filter and Jira must read the same document)
    ('{"editable":true,"editable":false}', 400),  # duplicate: no "last one wins"
    ('{"editable":false,"editable":false}', 400),
    ('{"editable":false,"edit\\u0061ble":true}', 400),  # duplicate spelled with an escape
    ('{"edit\\u0061ble":true,"editable":false}', 400),
    ('{"editable":false,"a":{"b":1,"b":2}}', 400),  # nested duplicate
    ('{"editable":false,"a":[{"b":1},{"c":1,"c":1}]}', 400),  # duplicate inside an array
    ('{"editable":false,"s":"\\ud800"}', 400),  # lone high surrogate
    ('{"editable":false,"s":"\\udc00x"}', 400),  # lone low surrogate
    ('{"editable":false}x', 400),  # trailing garbage
    ('{"editable":false}{}', 400),
    ('{"editable":false}}', 400),
    ('{"editable":false,}', 400),
    ("{'editable':false}", 400),
    ('{"editable":False}', 400),
    ('{"editable":false /* c */}', 400),
    ('{"editable":NaN}', 400),
    ('{"editable":false', 400),
    ('editable=false', 400),
    ('', 400),  # an empty body is not JSON
    ('   ', 400),
]


@pytest.mark.parametrize("body,expect", JSON_CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(JSON_CASES)])
def test_json_type_confusion_and_strictness(env, demo, body, expect):
    check(env, demo, "newfilter", "POST", NF, expect, body=body)


@pytest.mark.parametrize("body", [
    b'\xef\xbb\xbf{"editable":false}',  # BOM
    b'{"editable":false,"s":"\xff"}',  # not UTF-8
    b'{"editable":false,"s":"\xc0\xae"}',  # overlong
    b'{"editable":false,"s":"\xed\xa0\x80"}',  # a surrogate encoded in UTF-8
], ids=["bom", "ff", "overlong", "utf8-surrogate"])
def test_json_bytes_not_utf8_are_400(env, demo, body):
    check(env, demo, "newfilter", "POST", NF, 400, body=body)


def _deep(levels):
    # {"editable":false,"x":[[...]]}: the top-level object is level 1
    return '{"editable":false,"x":' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_json_depth_64_ok_65_refused(env, demo):
    assert _deep(64).count("[") == 63
    check(env, demo, "newfilter", "POST", NF, 200, body=_deep(64))
    demo.reset()
    check(env, demo, "newfilter", "POST", NF, 400, body=_deep(65))
    demo.reset()
    check(env, demo, "newfilter", "POST", NF, 400, body='{"editable":false,"x":' + "[" * 500 + "]" * 500 + "}")


@pytest.mark.parametrize("body,expect", [
    ('{"fields":{"project":{"key":"JRA"},"summary":"s"}}', 200),
    ('{"fields":{"summary":"s","project":{"id":"1","key":"JRA"}}}', 200),
    ('{"fields":{"pro\\u006aect":{"k\\u0065y":"JRA"}}}', 200),  # decoded member names
    ('{"fields":{"project":{"key":"ABC"}}}', 403),
    ('{"fields":{"project":{"key":"JRA "}}}', 403),
    ('{"fields":{"project":{"key":["JRA"]}}}', 403),
    ('{"fields":{"project":"JRA"}}', 403),
    ('{"fields.project.key":"JRA"}', 403),  # a member whose name contains "." cannot be addressed
    ('{"fields":{"project.key":"JRA"}}', 403),
    ('{"fields":{"project":{"key":"JRA","key":"ABC"}}}', 400),
    ('{"fields":{"project":{"key":"JRA"}},"fields":{"project":{"key":"ABC"}}}', 400),
])
def test_json_dotted_path(env, demo, body, expect):
    check(env, demo, "nested", "POST", "/rest/api/2/issue", expect, body=body)


# --------------------------------------------------------------------------- media type (415)


@pytest.mark.parametrize("content_type", [
    "application/json", "Application/JSON", "application/json;charset=utf-8", "application/json; charset=UTF-8",
    'application/json;charset="utf-8"', "application/json ; charset=utf-8", "APPLICATION/JSON;CHARSET=UTF-8",
])
def test_content_type_accepted(env, demo, content_type):
    check(env, demo, "newfilter", "POST", NF, 200, body='{"editable":false}', content_type=content_type)


@pytest.mark.parametrize("headers", [
    [],  # no Content-Type
    [("Content-Type", "text/plain")],
    [("Content-Type", "application/x-www-form-urlencoded")],
    [("Content-Type", "application/jsonx")],
    [("Content-Type", "application/json-patch+json")],
    [("Content-Type", "application/vnd.api+json")],
    [("Content-Type", "application/json;charset=iso-8859-1")],
    [("Content-Type", "application/json;charset=utf-16")],
    [("Content-Type", "application/json;charset=utf-8;boundary=x")],
    [("Content-Type", "application/json; foo=bar")],
    [("Content-Type", "application/json;")],
    [("Content-Type", "application/json, text/plain")],
    [("Content-Type", "application/json"), ("Content-Type", "application/json")],
    [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
    [("Content-Type", "text/plain"), ("Content-Type", "application/json")],
], ids=["none", "text", "form", "jsonx", "json-patch", "vnd-json", "latin1", "utf16", "extra-param", "foo-param",
        "empty-param", "two-in-one", "two-headers-same", "two-headers-json-first", "two-headers-json-last"])
def test_content_type_refused_415(env, demo, headers):
    before = Upstream(env, demo)
    r = call(env, "newfilter", "POST", NF, body='{"editable":false}', headers=headers, content_type=None)
    refused(r, env, demo, 415, before=before)


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "deflate", "br", "identity, gzip", "gzip, identity"])
def test_content_encoding_refused_415(env, demo, encoding):
    before = Upstream(env, demo)
    body = gzip.compress(b'{"editable":false}') if "gzip" in encoding.lower() else b'{"editable":false}'
    r = call(env, "newfilter", "POST", NF, body=body, headers=[("Content-Encoding", encoding)])
    refused(r, env, demo, 415, before=before)


def test_two_content_encoding_headers_refused_415(env, demo):
    before = Upstream(env, demo)
    r = call(env, "newfilter", "POST", NF, body=gzip.compress(b'{"editable":false}'),
             headers=[("Content-Encoding", "identity"), ("Content-Encoding", "gzip")])
    refused(r, env, demo, 415, before=before)


def test_content_encoding_identity_accepted(env, demo):
    check(env, demo, "newfilter", "POST", NF, 200, body='{"editable":false}',
          headers=[("Content-Encoding", "identity")])


def test_media_rules_only_when_a_body_is_needed(env, demo):
    """A request decided by a line without JsonData is not subject to §8: any Content-Type."""
    check(env, demo, "jra", "POST", "/rest/api/2/issue/JRA-1/attachments", 200, body="--b\r\n\r\nx\r\n--b--",
          content_type="multipart/form-data; boundary=b", headers=[("X-Atlassian-Token", "no-check")])
    demo.reset()
    check(env, demo, "nested", "PUT", "/rest/api/2/issue/JRA-7", 200, body=gzip.compress(b"{}"),
          content_type="text/plain", headers=[("Content-Encoding", "gzip")])


# --------------------------------------------------------------------------- body size (413)


def _padded_json(size):
    core = '{"editable":false}'
    return core + " " * (size - len(core))


def test_body_of_exactly_max_body_bytes_is_read(env, demo):
    check(env, demo, "newfilter", "POST", NF, 200, body=_padded_json(MAX_BODY))


def test_body_over_max_body_bytes_is_413(env, demo):
    check(env, demo, "newfilter", "POST", NF, 413, body=_padded_json(MAX_BODY + 1))


def test_content_length_over_max_body_bytes_is_413_at_once(env, demo):
    """Refused from the headers: the client has not sent a byte of the body yet."""
    before = Upstream(env, demo)
    head = request_head("POST", NF, [auth_header("newfilter"), JSON_CT, ("Content-Length", str(10 * MAX_BODY))])
    with OpenRequest(env, timeout=5) as req:
        r = req.send(head).response()
    refused(r, env, demo, 413, before=before)


def test_chunked_body_growing_past_max_body_bytes_is_413(env, demo):
    before = Upstream(env, demo)
    part = b" " * 600
    data = request_head("POST", NF, [auth_header("newfilter"), JSON_CT, ("Transfer-Encoding", "chunked"),
                                     ("Connection", "close")])
    data += chunked([b'{"editable":false}', part, part])
    r = env.raw(data)
    refused(r, env, demo, 413, before=before)


def test_chunked_body_growing_past_max_body_bytes_is_413_before_it_ends(env, demo):
    before = Upstream(env, demo)
    head = request_head("POST", NF, [auth_header("newfilter"), JSON_CT, ("Transfer-Encoding", "chunked")])
    with OpenRequest(env, timeout=5) as req:
        req.send(head + b"%x\r\n%s\r\n" % (MAX_BODY + 10, b"{" + b" " * (MAX_BODY + 9)))
        r = req.response()  # the body has not ended: the filter answers as soon as it is too large
    refused(r, env, demo, 413, before=before)


@pytest.mark.parametrize("key,method,path,ctype", [
    ("free", "POST", "/rest/api/2/issue/ABC-1/attachments", "application/octet-stream"),
    ("free", "PUT", "/rest/api/2/filter", "application/json"),  # unrestricted: no JSON rules either
    ("jra", "POST", "/rest/api/2/issue/JRA-1/attachments", "application/octet-stream"),
    ("nested", "PUT", "/rest/api/2/issue/JRA-42", "application/json"),  # a line without JsonData matched
], ids=["unrestricted", "unrestricted-json-path", "header-only-line", "plain-line-of-mixed-token"])
def test_large_upload_not_limited_when_no_body_is_needed(env, demo, key, method, path, ctype):
    body = bytes(range(256)) * 200  # 51200 bytes, far above max_body_bytes
    check(env, demo, key, method, path, 200, body=body, content_type=ctype)
    demo.reset()
    data = request_head(method, path, [auth_header(key), ("Content-Type", ctype), ("Transfer-Encoding", "chunked"),
                                       ("Connection", "close")]) + chunked([body[:30000], body[30000:]])
    allowed(env.raw(data), demo, key, method, path, body)


def test_no_line_could_match_decided_at_headers(env, demo):
    """newfilter's only line is a JsonData line for /rest/api/2/filter: any other path is 403
    from the headers (no 413 for a huge Content-Length, no body awaited)."""
    before = Upstream(env, demo)
    head = request_head("POST", "/rest/api/2/issue", [auth_header("newfilter"), JSON_CT,
                                                      ("Content-Length", str(100 * MAX_BODY))])
    with OpenRequest(env, timeout=5) as req:
        r = req.send(head).response()
    refused(r, env, demo, 403, before=before)


def test_header_only_line_forwards_before_the_body_ends(env, demo):
    """A line without JsonData decides from the headers: the request goes upstream at once
    (Envoy's upstream counter moves while the client still holds back half the body)."""
    rq0 = upstream_rq_total(env)
    body = b'{"fields":{"summary":"streamed"}}'
    head = request_head("PUT", "/rest/api/2/issue/JRA-5", [auth_header("nested"), JSON_CT,
                                                          ("Content-Length", str(len(body)))])
    with OpenRequest(env) as req:
        req.send(head + body[:10])
        deadline = time.monotonic() + 5
        while upstream_rq_total(env) == rq0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream_rq_total(env) == rq0 + 1, "the headers were held although no body was needed"
        r = req.send(body[10:]).response()
    allowed(r, demo, "nested", "PUT", "/rest/api/2/issue/JRA-5", body)


def test_get_to_a_header_only_path_is_not_buffered(env, demo):
    """getonly has no JsonData line: a GET with a (large) body is decided from the headers."""
    rq0 = upstream_rq_total(env)
    head = request_head("GET", "/rest/api/2/myself", [auth_header("getonly"), ("Content-Length", str(5 * MAX_BODY))])
    with OpenRequest(env) as req:
        req.send(head + b"x" * 100)
        deadline = time.monotonic() + 5
        while upstream_rq_total(env) == rq0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream_rq_total(env) == rq0 + 1
        r = req.send(b"x" * (5 * MAX_BODY - 100)).response()
    allowed(r, demo, "getonly", "GET", "/rest/api/2/myself", b"x" * (5 * MAX_BODY))


@pytest.mark.parametrize("framing", [
    [("Content-Length", "18"), ("Transfer-Encoding", "chunked")],
    [("Content-Length", "18"), ("Content-Length", "30")],
    [("Transfer-Encoding", "chunked, identity")],
], ids=["cl-and-te", "two-cl", "te-not-chunked-last"])
def test_ambiguous_framing_never_reaches_the_upstream(env, demo, framing):
    """Request smuggling shapes: whoever refuses (Envoy's codec or the filter), nothing goes
    upstream and no half-read body is judged."""
    before = Upstream(env, demo)
    data = request_head("POST", NF, [auth_header("newfilter"), JSON_CT, *framing, ("Connection", "close")])
    data += chunked([b'{"editable":false}']) if any("chunked" in v for _, v in framing) else b'{"editable":false}'
    try:
        r = env.raw(data, timeout=5)
    except (harness.HarnessError, OSError):
        r = None  # connection closed without an answer
    if r is not None:
        assert 400 <= r.status < 500 or r.status == 501, r  # Envoy: 501 for an unknown transfer coding
    assert demo.upstream.requests == []
    before.unchanged()


def test_bodiless_request_to_a_json_line_is_refused(env, demo):
    """GET /rest/api/2/filter with the filter-creation token: the JsonData line's head matches
    but there is no body, so no node exists and the line cannot match. Refused, nothing
    upstream (403 "not allowed" is what an admin expects; 400/415 are tolerated refusals)."""
    before = Upstream(env, demo)
    r = call(env, "newfilter", "GET", NF)
    assert r.status in (400, 403, 415), r
    refused(r, env, demo, r.status, before=before)


# --------------------------------------------------------------------------- split bodies, held headers


@pytest.mark.parametrize("parts,expect,pause", [
    ([b'{"edit', b'able":false}'], 200, 1.0),
    ([b'{"editable":false', b',"editable":true}'], 400, 1.0),  # the duplicate arrives in the second part
    ([b'{"editable":', b'false}'], 200, 0.2),
    ([b'{"editable":', b'true}'], 403, 0.2),
    ([b'{"editable":"\\u00', b'66alse"}'], 200, 0.2),  # an escape split across parts
    ([b'{"editable":false,"s":"\xc3', b'\xa9"}'], 200, 0.2),  # a UTF-8 sequence split across parts
], ids=["split-name", "split-duplicate", "split-value", "split-deny", "split-escape", "split-utf8"])
def test_body_in_two_parts_apart(env, demo, parts, expect, pause):
    """Headers are held while the body is read: the upstream sees nothing until the decision,
    which is taken on the whole body (the first two: parts 1 s apart)."""
    body = b"".join(parts)
    for framing in ("content-length", "chunked"):
        demo.reset()
        before = Upstream(env, demo)
        hdrs = [auth_header("newfilter"), JSON_CT]
        if framing == "chunked":
            hdrs.append(("Transfer-Encoding", "chunked"))
            first, second = b"%x\r\n%s\r\n" % (len(parts[0]), parts[0]), chunked([parts[1]])
        else:
            hdrs.append(("Content-Length", str(len(body))))
            first, second = parts
        with OpenRequest(env) as req:
            req.send(request_head("POST", NF, hdrs) + first)
            time.sleep(pause)
            before.unchanged()  # nothing upstream while the body is incomplete, not even headers
            r = req.send(second).response()
        if expect == 200:
            allowed(r, demo, "newfilter", "POST", NF, body)
        else:
            refused(r, env, demo, expect, before=before)


# --------------------------------------------------------------------------- trailers


TRAILER_CASES = [
    ([b'{"editable":false}'], 200),
    ([b'{"edit', b'able":', b'false}'], 200),
    ([b'{"editable":true}'], 403),
    ([b'{"editable":false', b',"editable":true}'], 400),
    ([b'{"editable":false}', b" " * MAX_BODY], 413),
]


@pytest.mark.parametrize("hcm", [None, TRAILERS_HCM], ids=["trailers-dropped-by-envoy", "trailers-enabled"])
def test_chunked_body_with_trailers(envoys, demo, hcm):
    env = envoys.get(CONFIG, hcm_overrides=hcm)
    for chunks, expect in TRAILER_CASES:
        demo.reset()
        before = Upstream(env, demo)
        data = request_head("POST", NF, [auth_header("newfilter"), JSON_CT, ("Transfer-Encoding", "chunked"),
                                         ("Connection", "close")])
        data += chunked(chunks, trailers=[("X-Checksum", "abc"), ("X-Other", "1")])
        r = env.raw(data)
        if expect == 200:
            allowed(r, demo, "newfilter", "POST", NF, b"".join(chunks))
        else:
            refused(r, env, demo, expect, before=before)


def test_trailers_arrive_after_a_pause(envoys, demo):
    """With trailers enabled, the decision is made when the trailers arrive, not before."""
    env = envoys.get(CONFIG, hcm_overrides=TRAILERS_HCM)
    before = Upstream(env, demo)
    head = request_head("POST", NF, [auth_header("newfilter"), JSON_CT, ("Transfer-Encoding", "chunked")])
    with OpenRequest(env) as req:
        req.send(head + b"12\r\n" + b'{"editable":false}' + b"\r\n0\r\n")
        time.sleep(0.5)
        before.unchanged()
        r = req.send(b"X-Checksum: abc\r\n\r\n").response()
    allowed(r, demo, "newfilter", "POST", NF, b'{"editable":false}')


# --------------------------------------------------------------------------- config load errors


def _bad_config(lines, as_text=False):
    """Token 0 is fine; token 1 (`bad-lines-7`) carries `lines`."""
    good = {"id": "good-0", "name": "ok", "user": "u", "sha256": sha256_hex(new_token()),
            "limit_to": [".*/rest/api/2/issue/JRA.*"]}
    bad = {"id": "bad-lines-7", "name": "bad", "user": "u", "sha256": sha256_hex(new_token()),
           "limit_to": "\n".join(lines) if as_text else lines}
    return {"tokens": [good, bad]}


BAD_LINES = [
    # (id, lines, index j of the bad line, expected column or None, words the message must contain)
    ("look-behind", [".*/rest/api/2/issue/JRA.*", "[get]/rest/(?<=x)api"], 1, 12, "look-behind"),
    ("unknown-method", ["[gte]/rest/api/2/myself"], 0, 2, "gte"),
    ("empty-url", ["[get]/rest/.*", "/rest/.*", "[get]"], 2, None, "empty URL"),
    ("lookahead-in-condition", [".*/rest/.*[QueryParam::a==(?=x)]"], 0, 27, "look-ahead"),
    ("back-reference", ["/rest/(a)\\1"], 0, None, None),
    ("possessive", ["/rest/a++"], 0, None, None),
]
# limit_to as one string with newlines: the same field and numbering
BAD_CASES = [pytest.param(*c[1:], False, id=c[0]) for c in BAD_LINES] + \
    [pytest.param(*c[1:], True, id=c[0] + "-one-string") for c in BAD_LINES[:3]]


@pytest.mark.parametrize("lines,j,column,words,as_text", BAD_CASES)
def test_bad_restriction_line_stops_envoy(envoys, lines, j, column, words, as_text):
    rc, log = envoys.expect_start_failure(_bad_config(lines, as_text=as_text))
    assert rc is not None and rc != 0, f"Envoy accepted a bad restriction line; log:\n{log[-3000:]}"
    field = f"tokens[1].limit_to[{j}]"
    hits = [l for l in log.splitlines() if field in l and "bad-lines-7" in l]
    assert hits, f"no log line names {field} and the token id:\n{log[-4000:]}"
    line = hits[0]
    m = re.search(r"line (\d+), column (\d+)", line)
    assert m, line
    assert int(m.group(1)) == j + 1, line
    if column is not None:
        assert int(m.group(2)) == column, line
    if words is not None:
        assert words.lower() in line.lower(), line


# --------------------------------------------------------------------------- request-line shapes


@pytest.mark.parametrize("target,expect,upstream_path", [
    ("http://tokengate.test/rest/api/2/issue/JRA-1", 200, "/rest/api/2/issue/JRA-1"),
    ("http://tokengate.test/rest/api/2/issue/ABC-1", 403, None),
    ("http://tokengate.test/rest/api/2/issue/JRA-1;x=1", 400, None),
], ids=["allowed", "other-issue", "path-parameter"])
def test_absolute_form_target_is_judged_by_its_path(env, demo, target, expect, upstream_path):
    before = Upstream(env, demo)
    r = env.raw(request_head("GET", target, [auth_header("jra"), ("Connection", "close")]))
    if expect == 200:
        allowed(r, demo, "jra", "GET", upstream_path)
    else:
        refused(r, env, demo, expect, before=before)


def test_encoded_question_mark_is_part_of_the_path_not_a_query(env, demo):
    """`%3F` decodes to a `?` inside the path (Tomcat's reading): no query parameter."""
    check(env, demo, "filters", "GET", "/rest/extender/1.0/filter/user/admin%3Fpermissions=true", 403)


def test_expect_100_continue_with_a_held_request(env, demo):
    """curl sends `Expect: 100-continue` for larger bodies: the client gets its 100 while the
    headers are held, then the body is judged."""
    before = Upstream(env, demo)
    body = b'{"editable":false}'
    head = request_head("POST", NF, [auth_header("newfilter"), JSON_CT, ("Content-Length", str(len(body))),
                                     ("Expect", "100-continue")])
    with OpenRequest(env, timeout=3) as req:
        interim = req.send(head).response()
        assert interim.status == 100, interim
        before.unchanged()
        r = req.send(body).response()
    allowed(r, demo, "newfilter", "POST", NF, body)
