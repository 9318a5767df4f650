"""SPEC §7 canonical request through the real Envoy 1.40 with the real tokengate wasm, with
Envoy's own path normalisation ON (the shipped HCM) and OFF.

The filter must decide on the path the app (Tomcat) will serve, or refuse with 400. Each form
below is one Tomcat resolves differently from a naive reading of the request line: path
parameters, encoded dots, slashes, backslashes and semicolons, double encoding, raw backslash,
empty and dot segments, malformed or non-UTF-8 percent-encoding.

* Normalisation OFF: Envoy hands the raw target to the filter, which answers 400 in Jira's
  shape (Envoy's HTTP/1 codec refuses a few forms itself first: `#`, raw control or non-ASCII
  bytes; that 400 is plain text).
* Normalisation ON: Envoy may answer first (400 plain text, e.g. for an encoded slash under
  REJECT_REQUEST) or hand the filter a normalised path, which the filter then judges (a path
  that resolved outside the token's lines is 403).
* In every mode: a form that escapes the token's lines never gets through; nothing of a refused
  request reaches the upstream (not even headers); and whatever reaches the upstream with the
  token's identity has a canonical path that the token's line matches.
"""

import re
import urllib.parse

import pytest

import harness
from harness import basic, new_token, sha256_hex, upstream_rq_total

P = "/rest/api/2/issue/"
TOKENS = {
    # key: (user, limit_to, python regex equivalent of the lines' URL patterns)
    "jra": ("jra.bot", [".*/rest/api/2/issue/JRA.*"], [r".*/rest/api/2/issue/JRA.*"]),
    "uni": ("uni.bot", ["[get]/rest/api/2/project/Café", "[get]/rest/api/2/user/Jos.", r"[get]/rest/api/2/group/\w+"],
            [r"/rest/api/2/project/Café", r"/rest/api/2/user/Jos.", r"/rest/api/2/group/[A-Za-z0-9_]+"]),
    "free": ("free.bot", None, [r".*"]),
}
SECRET = {k: new_token() for k in TOKENS}


def _token(key):
    user, lines, _ = TOKENS[key]
    t = {"id": key, "name": key, "user": user, "sha256": sha256_hex(SECRET[key])}
    if lines is not None:
        t["limit_to"] = lines
    return t


CONFIG = {"auth_methods": "both", "tokens": [_token(k) for k in TOKENS]}

MODES = {
    "normalising": None,  # the shipped HCM: normalize_path, merge_slashes, escaped slashes REJECT_REQUEST
    "raw-keep": {"normalize_path": False, "merge_slashes": False,
                 "path_with_escaped_slashes_action": "KEEP_UNCHANGED"},
    "raw-default": {"normalize_path": False, "merge_slashes": False, "path_with_escaped_slashes_action": None},
    "unescape-forward": {"path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD"},
}
RAW_MODES = ("raw-keep", "raw-default")

# --------------------------------------------------------------------------- a reference §7 check


_BAD_PCT = {ord("."), ord("/"), ord("\\"), ord(";"), ord("%")}


def canonical_decoded(raw_path: str):
    """The decoded path if `raw_path` passes SPEC §7, else None (reference implementation)."""
    if not raw_path.startswith("/") or any(c in raw_path for c in ";\\#") or "//" in raw_path:
        return None
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in raw_path):
        return None
    if any(seg in (".", "..") for seg in raw_path.split("/")):
        return None
    out = bytearray()
    i = 0
    while i < len(raw_path):
        c = raw_path[i]
        if c == "%":
            h = raw_path[i + 1:i + 3]
            if len(h) != 2 or not all(x in "0123456789abcdefABCDEF" for x in h):
                return None
            v = int(h, 16)
            if v in _BAD_PCT or v < 0x20 or v == 0x7F:
                return None
            out.append(v)
            i += 3
        else:
            out.append(ord(c))
            i += 1
    try:
        s = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in s):
        return None
    return s


# --------------------------------------------------------------------------- the forms

# (id, raw target, where Tomcat would take the raw target: "escape" = outside the jra line,
#  "jra" = a JRA issue, "bad" = no sensible target (documentation: in the normalising modes
#  the app serves the path Envoy rewrote, and that path is what must be canonical and match);
#  answer with Envoy's normalisation off: "filter" (400 in Jira's shape) or "envoy" (Envoy's
#  own plain 400 before any filter)
FORMS = [
    # path parameters
    ("param", P + "JRA-1;x=1", "jra", "filter"),
    ("param-jsessionid", P + "JRA-1;jsessionid=ABC", "jra", "filter"),
    ("param-dotdot", P + "JRA-1/..;/ABC-1", "escape", "filter"),
    ("param-dotdot-thrice", P + "JRA-1/..;/..;/..;/2/issue/ABC-1", "escape", "filter"),
    ("param-in-prefix", "/rest;x=1/api/2/issue/JRA-1", "jra", "filter"),
    ("param-empty", P + "ABC-1;/JRA-1", "escape", "filter"),
    # encoded dots
    ("enc-dotdot", P + "JRA-1/%2e%2e/ABC-1", "escape", "filter"),
    ("enc-DOTDOT", P + "JRA-1/%2E%2E/ABC-1", "escape", "filter"),
    ("enc-half-dotdot", P + "JRA-1/.%2e/ABC-1", "escape", "filter"),
    ("enc-dot", P + "JRA-1/%2e/comment", "jra", "filter"),
    ("enc-dot-in-name", P + "JRA-1%2ejson", "jra", "filter"),
    # encoded slashes and backslashes
    ("enc-slash", P + "JRA-1%2f..%2fABC-1", "escape", "filter"),
    ("enc-SLASH", P + "JRA-1%2F..%2FABC-1", "escape", "filter"),
    ("enc-slash-plain", P + "JRA-1%2fcomment", "bad", "filter"),
    ("enc-backslash", P + "JRA-1%5c..%5cABC-1", "escape", "filter"),
    ("enc-BACKSLASH", P + "JRA-1%5C..%5CABC-1", "escape", "filter"),
    ("enc-semicolon", P + "JRA-1%3b/../ABC-1", "escape", "filter"),
    ("enc-SEMICOLON", P + "JRA-1%3B", "bad", "filter"),
    # double encoding
    ("double-slash-enc", P + "JRA-1%252f..%252fABC-1", "escape", "filter"),
    ("double-dot-enc", P + "JRA-1/%252e%252e/ABC-1", "escape", "filter"),
    ("enc-percent", P + "JRA-1%25", "bad", "filter"),
    ("enc-percent-2e", P + "JRA-1/%25%32%65%25%32%65/ABC-1", "escape", "filter"),
    # raw backslash
    ("backslash", P + "JRA-1\\..\\ABC-1", "escape", "filter"),
    ("backslash-end", P + "JRA-1\\", "bad", "filter"),
    # empty segments
    ("empty-seg", P + "/JRA-1", "jra", "filter"),
    ("empty-seg-lead", "//rest/api/2/issue/JRA-1", "jra", "filter"),
    ("empty-seg-trail", P + "JRA-1//", "jra", "filter"),
    ("empty-seg-dotdot", P + "JRA-1//../ABC-1", "escape", "filter"),
    # dot segments
    ("dotdot", P + "JRA-1/../ABC-1", "escape", "filter"),
    ("dotdot-far", P + "JRA-1/../../../../secure/admin", "escape", "filter"),
    ("dot", P + "./JRA-1", "jra", "filter"),
    ("dot-end", P + "JRA-1/.", "jra", "filter"),
    ("dotdot-end", P + "JRA-1/..", "escape", "filter"),
    # malformed percent-encoding
    ("pct-truncated", P + "JRA-1%", "bad", "filter"),
    ("pct-one-digit", P + "JRA-1%4", "bad", "filter"),
    ("pct-non-hex", P + "JRA-1%zz", "bad", "filter"),
    ("pct-half-hex", P + "JRA-1%g0", "bad", "filter"),
    # not UTF-8 once decoded
    ("utf8-ff", P + "JRA-1%ff", "bad", "filter"),
    ("utf8-overlong-dot", P + "JRA-1/%C0%AE%C0%AE/ABC-1", "escape", "filter"),
    ("utf8-truncated", P + "JRA-1%C3%28", "bad", "filter"),
    ("utf8-latin1", P + "JRA-%E9", "bad", "filter"),
    ("utf8-surrogate", P + "JRA-1%ED%A0%80", "bad", "filter"),
    # encoded control characters
    ("enc-nul", P + "JRA-1%00", "bad", "filter"),
    ("enc-lf", P + "JRA-1%0a", "bad", "filter"),
    ("enc-tab", P + "JRA-1%09", "bad", "filter"),
    ("enc-del", P + "JRA-1%7f", "bad", "filter"),
    # malformed query
    ("query-pct-non-hex", P + "JRA-1?x=%zz", "jra", "filter"),
    ("query-pct-truncated", P + "JRA-1?x=%", "jra", "filter"),
    ("query-not-utf8", P + "JRA-1?x=%ff", "jra", "filter"),
    ("query-name-not-utf8", P + "JRA-1?%C0%AE=1", "jra", "filter"),
    # raw bytes Envoy's codec refuses before any filter
    ("raw-hash", P + "JRA-1#/../ABC-1", "escape", "envoy"),
    ("raw-non-ascii", P + "JRA-\u00e9", "bad", "envoy"),
    ("raw-control", P + "JRA-1\x01", "bad", "envoy"),
    ("raw-del", P + "JRA-1\x7f", "bad", "envoy"),
]


def _cases():
    for mode in MODES:  # mode outermost: the pool keeps one Envoy per mode running
        for form in FORMS:
            yield pytest.param(mode, *form[1:], id=f"{mode}-{form[0]}")


def raw_get(env, target: str, key: str) -> harness.Response:
    data = (b"GET " + target.encode("utf-8") + b" HTTP/1.1\r\nHost: tokengate.test\r\nAuthorization: "
            + basic(TOKENS[key][0], SECRET[key]).encode() + b"\r\nConnection: close\r\n\r\n")
    return env.raw(data)


def classify(resp) -> str:
    if resp.status == 200:
        return "allowed"
    if resp.header_values("content-type") == [harness.JIRA_CONTENT_TYPE]:
        harness.assert_jira_error(resp, resp.status)
        return f"filter{resp.status}"
    return f"envoy{resp.status}"


def check_upstream(demo, key, before_rq, env):
    """Whatever reached the upstream has the token's identity only with a canonical path that
    one of the token's lines matches."""
    recs = demo.upstream.requests
    if not recs:
        assert upstream_rq_total(env) == before_rq, "Envoy started a request upstream that never arrived"
        return None
    (rec,) = recs
    assert rec.header_values("x-forwarded-user") == [TOKENS[key][0]], rec.headers
    assert rec.header_values("authorization") == [], rec.headers
    path = rec.path.split("?", 1)[0]
    decoded = canonical_decoded(path)
    assert decoded is not None, f"the upstream got a non-canonical path with the token's identity: {rec.path!r}"
    assert any(re.fullmatch(rx, decoded) for rx in TOKENS[key][2]), (rec.path, decoded)
    return rec


@pytest.mark.parametrize("mode,target,where,raw_answer", list(_cases()))
def test_canonical_forms(envoys, demo, mode, target, where, raw_answer):
    env = envoys.get(CONFIG, hcm_overrides=MODES[mode])
    for key in ("jra", "free"):
        demo.reset()
        before = upstream_rq_total(env)
        r = raw_get(env, target, key)
        got = classify(r)
        rec = check_upstream(demo, key, before, env)
        assert (rec is not None) == (got == "allowed"), (got, r)
        if mode in RAW_MODES:
            # Envoy passes the raw target: the filter itself must refuse with 400
            assert got == ("filter400" if raw_answer == "filter" else "envoy400"), (key, got, r)
            continue
        # Envoy normalises (or unescapes) first
        assert got in ("allowed", "filter400", "filter403", "envoy400"), (key, got, r)
        if got == "filter403":
            assert key == "jra", "an unrestricted token has no lines to fail"
        if got == "allowed":
            # only after Envoy rewrote the target into a canonical one (checked above)
            assert rec.path != target, "a non-canonical target reached the upstream unchanged"


# --------------------------------------------------------------------------- fine forms


# Modes in reverse: the two Envoys the table above left running are used first.
PER_MODE = list(MODES)[::-1]


@pytest.mark.parametrize("mode", PER_MODE)
def test_canonical_forms_that_are_fine(envoys, demo, mode):
    """Canonical forms pass in every mode; the regexes see the decoded path. Also the odd
    spellings of protected paths and paths resolving outside them (same Envoy)."""
    env = envoys.get(CONFIG, hcm_overrides=MODES[mode])
    cases = [
        ("jra", P + "JRA-1", 200),
        ("jra", P + "%4ARA-1", 200),  # an encoded letter: the decoded path is /…/JRA-1
        ("jra", P + "%4aRA-1", 200),
        ("jra", P + "JRA-1/comment?expand=a%2Fb%2e%2e%3B%25", 200),  # encodings are fine in the query
        ("jra", P + "JRA-1%20x", 200),
        ("jra", P + "JRA-1+x", 200),  # "+" in a path is a plus
        ("jra", P + "JRA-1/", 200),  # one trailing slash is not an empty segment
        ("jra", P + "%41BC-1", 403),  # decoded: ABC-1
        ("uni", "/rest/api/2/project/Caf%C3%A9", 200),  # percent-encoded UTF-8 matches a line with é
        ("uni", "/rest/api/2/project/Caf%c3%a9", 200),
        ("uni", "/rest/api/2/project/Cafe", 403),
        ("uni", "/rest/api/2/project/Cafe%CC%81", 403),  # e + combining acute is another string
        ("uni", "/rest/api/2/project/Caf%C3%A9%20", 403),
        ("uni", "/rest/api/2/user/Jos%C3%A9", 200),  # "." is one character, not one byte
        ("uni", "/rest/api/2/user/Jos%C3%A9x", 403),
        ("uni", "/rest/api/2/group/jira_users", 200),
        ("uni", "/rest/api/2/group/caf%C3%A9", 403),  # \w is ASCII, as Java's default
        ("uni", "/rest/api/2/project/Caf%E9", 400),  # Latin-1 é is not UTF-8
    ]
    for key, target, expect in cases:
        demo.reset()
        before = upstream_rq_total(env)
        r = raw_get(env, target, key)
        rec = check_upstream(demo, key, before, env)
        assert r.status == expect, (mode, key, target, r)
        if expect == 200:
            assert rec is not None
            want = urllib.parse.unquote(target.split("?")[0])
            assert canonical_decoded(rec.path.split("?")[0]) == want, (rec.path, want)
            if "?" in target:
                assert rec.path.split("?", 1)[1] == target.split("?", 1)[1], "the query reached the app unchanged"
        else:
            harness.assert_jira_error(r, expect)
            assert rec is None
    odd_spellings_of_a_protected_path_are_not_passed_through(env, demo)
    path_resolving_outside_protected_paths_passes_without_identity(env, demo)


# --------------------------------------------------------------------------- protection of odd spellings


def odd_spellings_of_a_protected_path_are_not_passed_through(env, demo):
    """A path that Tomcat resolves into /rest/ must not escape `protected_paths` by its
    spelling: it is judged (and refused), never forwarded with the token unchecked."""
    # the last three: Tomcat dispatches them to the /rest/* servlet, and tokengate passed them
    # through untouched before (found by the differential tests against Tomcat, tests/tomcat/)
    for target in ("/secure/..;/rest/api/2/issue/ABC-1", "/secure/%2e%2e/rest/api/2/issue/ABC-1",
                   "/%72est/api/2/issue/ABC-1", "/x/../rest/api/2/issue/ABC-1", "/x%2f..%2frest/api/2/issue/ABC-1",
                   "/rest%2fapi/2/issue/ABC-1", "/x/%252e%252e/rest/api/2/issue/ABC-1",
                   "/rest/%25%32%65%25%32%65/api/2/issue/ABC-1", "/rest?x=/api/2/issue/ABC-1", "/rest;x=1"):
        demo.reset()
        before = upstream_rq_total(env)
        r = raw_get(env, target, "jra")
        got = classify(r)
        assert got in ("filter400", "filter403", "envoy400"), (target, got, r)
        assert demo.upstream.requests == [] and upstream_rq_total(env) == before, target


def path_resolving_outside_protected_paths_passes_without_identity(env, demo):
    """`..;` segments that Tomcat resolves to /secure/admin: not a protected path, so the
    request passes as any other (§2.2) - with the client's own Authorization (which the app
    cannot take for a password) and never with the token's identity - or is refused."""
    demo.reset()
    target = P + "JRA-1/..;/..;/..;/..;/..;/secure/admin"
    r = raw_get(env, target, "jra")
    recs = demo.upstream.requests
    if r.status == 200:
        (rec,) = recs
        assert rec.header_values("x-forwarded-user") == [], rec.headers
        assert rec.header_values("authorization") == [basic(TOKENS["jra"][0], SECRET["jra"])], rec.headers
    else:
        assert classify(r) in ("filter400", "filter403", "envoy400"), r
        assert recs == []
