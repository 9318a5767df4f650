"""The differential runner: requests go through the real Envoy + tokengate to the real Tomcat +
Jackson (tomcat.py), and every request tokengate lets through is checked against what Tomcat
resolved (the probe servlet's answer):

* the acting user is the only identity Tomcat sees, and the client's Authorization and Cookie
  never reach it;
* one of the token's lines allows the request *as Tomcat read it*: the method Tomcat serves; the
  URL regex on the path Tomcat dispatches on (context path + servlet path + path info, decoded
  and normalised by Tomcat); every value getParameterValues gives for each QueryParam (query and,
  where Tomcat reads it, form body); every JsonData node as Jackson's tree reads it;
* a request tokengate passed through untouched (no identity) is not one Tomcat dispatches to the
  protected REST servlet.

Anything else is a disagreement (a bypass), reported with the request and both views.

Lines are evaluated here with Python's `re.fullmatch` under re.ASCII (Java's `\\d \\w \\s` are
ASCII, as tokengate's): the catalog's lines use only syntax on which Python, Rust and Java agree.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import socket
import sys
import threading
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import harness  # noqa: E402

PROTECTED = ["/rest/", "/jira/rest/"]

# token key -> (user, limit_to); the seed's examples first, then lines for numbers and Unicode.
LINES = {
    "jra": ("jra.bot", [".*/rest/api/2/issue/JRA.*"]),
    "kanban": ("kanban.bot", ["[post].*/rest/api/2/issue/KANBAN-100/comment.*"]),
    "filters": ("filter.bot", [".*/rest/extender/1.0/filter/user/.*[QueryParam::permissions==true]"]),
    "worklog": ("worklog.bot",
                [".*rest/extender/1.0/worklog/user/.*[QueryParam::dateFrom==2018-01-01][QueryParam::dateTo==2018-12-01]"]),
    "newfilter": ("nf.bot", [".*/rest/api/2/filter[JsonData::editable==false]"]),
    "nofav": ("nff.bot", [".*/rest/api/2/filter[JsonData::editable==false][JsonData::favourite==false]"]),
    "nested": ("nest.bot", ["[post].*/rest/api/2/issue[JsonData::fields.project.key==JRA]",
                            "[put].*/rest/api/2/issue/JRA-[0-9]+"]),
    "jql": ("jql.bot", ["[get].*/rest/api/2/search[QueryParam::jql==project = JRA]"]),
    "uni": ("uni.bot", ["[get].*/rest/api/2/project/Café", r"[get].*/rest/api/2/group/\w+",
                        "[get].*/rest/api/2/user/Jos."]),
    "num": ("num.bot", [r"[post].*/rest/api/2/issue/JRA-[0-9]+/worklog[JsonData::timeSpentSeconds==[0-9]{1,5}]",
                        r"[put].*/rest/api/2/issue/JRA-1/estimate[JsonData::amount==[0-9]+(\.[0-9]+)?][JsonData::id==100]"]),
    "free": ("free.bot", None),
}
TOKENS = {k: harness.new_token() for k in LINES}
IDENTITY = "x-forwarded-user"


def plugin_config() -> dict:
    tokens = []
    for k, (user, lines) in LINES.items():
        t = {"id": k, "name": k, "user": user, "sha256": harness.sha256_hex(TOKENS[k])}
        if lines is not None:
            t["limit_to"] = lines
        tokens.append(t)
    return {"auth_methods": "both", "protected_paths": PROTECTED, "max_body_bytes": 65536, "tokens": tokens}


# --------------------------------------------------------------------------- lines, in Python

_COND = re.compile(r"\[(QueryParam|JsonData)::([^=\]]*)==(.*)\]$")
_METHODS = re.compile(r"^\[([A-Za-z]+(?:[,|][A-Za-z]+)*)\]")


@dataclass
class Line:
    methods: set | None
    url: re.Pattern
    query: list = field(default_factory=list)  # (name, regex)
    json: list = field(default_factory=list)  # (node, regex)


def parse_line(text: str) -> Line:
    methods = None
    m = _METHODS.match(text)
    if m:
        methods = {x.upper() for x in re.split(r"[,|]", m.group(1))}
        text = text[m.end():]
    conds = []
    while True:
        # conditions are trailing groups starting with [QueryParam:: or [JsonData::
        i = max(text.rfind("[QueryParam::"), text.rfind("[JsonData::"))
        if i < 0 or not text.endswith("]"):
            break
        cm = _COND.match(text[i:])
        if not cm:
            break
        conds.insert(0, (cm.group(1), cm.group(2), re.compile(cm.group(3), re.ASCII | re.DOTALL)))
        text = text[:i]
    line = Line(methods, re.compile(text, re.ASCII))
    for kind, name, rx in conds:
        (line.query if kind == "QueryParam" else line.json).append((name, rx))
    return line


PARSED = {k: [parse_line(x) for x in lines] if lines is not None else None for k, (_, lines) in LINES.items()}
JSON_NODES = {k: sorted({n for ln in (PARSED[k] or []) for n, _ in ln.json}) for k in LINES}


def _json_ok(node: dict | None, rx: re.Pattern) -> tuple:
    """(ok, note): does Jackson's reading of the node satisfy the condition?"""
    if not node or node.get("missing", True):
        return False, None
    if node.get("type") not in ("STRING", "NUMBER", "BOOLEAN", "NULL"):
        return False, None
    if rx.fullmatch(node.get("text", "")):
        return True, None
    exact = node.get("exact")
    if node.get("type") == "NUMBER" and exact is not None and rx.fullmatch(exact):
        # Jackson's double reads another text (e.g. 1.2345678901234567E19) of the value the line
        # allowed; the exact value (BigDecimal, as an app binding it to BigDecimal/long reads it) matches
        return True, f"number read as double {node.get('text')!r}, exact {exact!r}"
    return False, None


def line_allows(line: Line, view: dict) -> tuple:
    """(allowed, notes) for Tomcat's view of a request."""
    if line.methods is not None and view["method"] not in line.methods:
        return False, []
    path = (view.get("context_path") or "") + (view.get("servlet_path") or "") + (view.get("path_info") or "")
    if not line.url.fullmatch(path):
        return False, []
    params = view.get("params") or {}
    for name, rx in line.query:
        values = params.get(name)
        if not values or not all(rx.fullmatch(v) for v in values):
            return False, []
    notes = []
    if line.json:
        js = view.get("json")
        if not isinstance(js, dict) or "error" in js:
            return False, []
        for name, rx in line.json:
            ok, note = _json_ok(js.get(name), rx)
            if not ok:
                return False, []
            if note:
                notes.append(note)
    return True, notes


# --------------------------------------------------------------------------- requests


@dataclass
class Req:
    key: str  # token
    method: str
    target: str  # raw request target (bytes as latin-1/utf-8 text)
    body: bytes | None = None
    headers: list = field(default_factory=list)
    origin: str = ""  # which catalog part / mutation made it

    def wire(self) -> bytes:
        user = LINES[self.key][0]
        hs = [("Host", "jira.test"), ("Authorization", harness.basic(user, TOKENS[self.key])),
              (IDENTITY, "attacker"), ("Cookie", "JSESSIONID=stolen")]
        nodes = JSON_NODES[self.key]
        if nodes:
            hs.append(("x-probe-json", ",".join(nodes)))
        hs += self.headers
        if self.body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hs):
            hs.append(("Content-Length", str(len(self.body))))
        head = f"{self.method} ".encode() + self.target.encode("utf-8", "surrogateescape") + b" HTTP/1.1\r\n"
        head += b"".join(f"{k}: {v}\r\n".encode("utf-8") for k, v in hs) + b"\r\n"
        return head + (self.body or b"")

    def h2_headers(self) -> list:
        """The same request's fields for HTTP/2 (names lower-case; Host becomes :authority;
        no Content-Length or Transfer-Encoding: DATA frames carry the body)."""
        user = LINES[self.key][0]
        hs = [("authorization", harness.basic(user, TOKENS[self.key])), (IDENTITY, "attacker"),
              ("cookie", "JSESSIONID=stolen")]
        nodes = JSON_NODES[self.key]
        if nodes:
            hs.append(("x-probe-json", ",".join(nodes)))
        hs += [(k.lower(), v) for k, v in self.headers if k.lower() not in ("content-length", "transfer-encoding")]
        return hs

    def describe(self) -> str:
        b = "" if self.body is None else f" body={self.body[:200]!r}"
        h = f" headers={self.headers!r}" if self.headers else ""
        return f"[{self.key}] {self.method} {self.target!r}{h}{b} ({self.origin})"


@dataclass
class Outcome:
    req: Req
    mode: str
    status: int
    kind: str  # allowed | passthrough | refused (filter) | other (Envoy or Tomcat answered)
    view: dict | None
    problem: str | None = None
    notes: list = field(default_factory=list)
    answered_by: str | None = None  # for "other": envoy or tomcat


def classify(req: Req, mode: str, resp: harness.Response) -> Outcome:
    ct = resp.header_values("content-type")
    if resp.header_values("x-probe") == ["1"]:
        try:
            raw = resp.body
            if not raw and resp.header_values("x-probe-view"):
                raw = base64.b64decode(resp.header_values("x-probe-view")[0])
            view = json.loads(raw)
        except ValueError:
            return Outcome(req, mode, resp.status, "other", None, problem=f"probe answer not JSON: {resp.body[:200]!r}")
        kind = "allowed" if view.get("identity") else "passthrough"
        return judge(Outcome(req, mode, resp.status, kind, view))
    if ct == [harness.JIRA_CONTENT_TYPE]:
        return Outcome(req, mode, resp.status, "refused", None)
    # Envoy's own refusals are plain text; Tomcat's error pages are HTML naming it
    by = "tomcat" if b"Apache Tomcat" in resp.body or any("html" in v for v in ct) else "envoy"
    return Outcome(req, mode, resp.status, "other", None, answered_by=by)


def judge(o: Outcome) -> Outcome:
    v = o.view
    user = LINES[o.req.key][0]
    if o.kind == "passthrough":
        # the filter did not decide: Tomcat must not dispatch it to the protected REST servlet
        if v.get("servlet_path") == "/rest":
            o.problem = "passed through without a decision, but Tomcat dispatches it to the /rest/* servlet"
        return o
    if v["identity"] != [user]:
        o.problem = f"Tomcat sees identity {v['identity']!r}, the acting user is {user!r}"
        return o
    if v.get("authorization") or v.get("cookie"):
        o.problem = "the client's Authorization or Cookie reached Tomcat"
        return o
    lines = PARSED[o.req.key]
    if lines is None:
        return o
    for ln in lines:
        ok, notes = line_allows(ln, v)
        if ok:
            o.notes = notes
            return o
    o.problem = "allowed by tokengate, but no line of the token allows what Tomcat resolved"
    return o


# --------------------------------------------------------------------------- sending


class Conn:
    """One keep-alive HTTP/1.1 connection; reconnects after a close."""

    def __init__(self, port: int):
        self.port = port
        self.sock = None

    def send(self, data: bytes, head: bool = False) -> harness.Response:
        for attempt in (0, 1):
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)
            try:
                self.sock.sendall(data)
                resp = harness._read_response(self.sock, head=head)
            except (OSError, harness.HarnessError):
                self.close()
                if attempt:
                    raise
                continue
            if any(v.lower() == "close" for v in resp.header_values("connection")):
                self.close()
            return resp
        raise AssertionError("unreachable")

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def run(reqs: list, envoys: dict, threads: int = 6) -> list:
    """Sends every request through every Envoy (mode -> port); returns the outcomes."""
    jobs = [(r, mode) for r in reqs for mode in envoys]
    out = [None] * len(jobs)
    lock = threading.Lock()
    nxt = [0]

    def worker():  # one keep-alive connection per Envoy
        conns = {m: Conn(p) for m, p in envoys.items()}
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(jobs):
                    return
                r, mode = jobs[i]
                try:
                    resp = conns[mode].send(r.wire(), head=(r.method == "HEAD"))
                    out[i] = classify(r, mode, resp)
                except Exception as e:  # noqa: BLE001 (reported as a failure below)
                    out[i] = Outcome(r, mode, 0, "error", None, problem=f"client error: {e!r}")
                    conns[mode].close()
        finally:
            for c in conns.values():
                c.close()

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def run_h2(reqs: list, envoys: dict, threads: int = 6) -> list:
    """The same over HTTP/2 (h2c to Envoy; Envoy speaks HTTP/1.1 to Tomcat), one connection
    per request. A body is sent in two DATA frames."""
    from concurrent.futures import ThreadPoolExecutor

    from h2client import H2Client

    def one(job):
        r, mode = job
        body = r.body
        if r.headers and any(k.lower() == "transfer-encoding" for k, _ in r.headers):
            return None  # HTTP/1.1 framing only
        chunks = None if body is None else ([body[: len(body) // 2], body[len(body) // 2:]] if body else [b""])
        try:
            resp = H2Client(envoys[mode]).request(r.method, r.target.encode("utf-8", "surrogateescape"),
                                                  r.h2_headers(), chunks, authority="jira.test")
        except Exception as e:  # noqa: BLE001
            return Outcome(r, mode + "-h2", 0, "other", None, problem=None, notes=[f"no answer: {e!r}"[:80]])
        if resp.status == 0:
            return Outcome(r, mode + "-h2", 0, "other", None)
        return classify(r, mode + "-h2", resp)

    jobs = [(r, mode) for r in reqs for mode in envoys]
    with ThreadPoolExecutor(threads) as ex:
        return [o for o in ex.map(one, jobs) if o is not None]


def summary(outcomes: list) -> dict:
    s = {"requests": len(outcomes), "allowed": 0, "passthrough": 0, "refused": 0, "other": 0, "error": 0,
         "compared": 0, "disagreements": 0, "notes": 0}
    for o in outcomes:
        s[o.kind] = s.get(o.kind, 0) + 1
        if o.answered_by:
            s["other_" + o.answered_by] = s.get("other_" + o.answered_by, 0) + 1
        if o.kind in ("allowed", "passthrough"):
            s["compared"] += 1
        if o.problem:
            s["disagreements"] += 1
        s["notes"] += len(o.notes)
    return s


def report(outcomes: list, limit: int = 30) -> str:
    bad = [o for o in outcomes if o.problem]
    lines = [f"{len(bad)} disagreement(s):"]
    for o in bad[:limit]:
        lines.append(f"- [{o.mode}] {o.status} {o.kind}: {o.problem}\n    request: {o.req.describe()}\n"
                     f"    Tomcat: {json.dumps(o.view)[:600] if o.view else None}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the catalog


JSON_CT = [("Content-Type", "application/json")]
FORM_CT = [("Content-Type", "application/x-www-form-urlencoded")]

# path forms of tests/integration/test_canonical.py (P + suffix), for the jra token
P = "/rest/api/2/issue/"
CANONICAL_SUFFIXES = [
    "JRA-1;x=1", "JRA-1;jsessionid=ABC", "JRA-1/..;/ABC-1", "JRA-1/..;/..;/..;/2/issue/ABC-1", "ABC-1;/JRA-1",
    "JRA-1/%2e%2e/ABC-1", "JRA-1/%2E%2E/ABC-1", "JRA-1/.%2e/ABC-1", "JRA-1/%2e/comment", "JRA-1%2ejson",
    "JRA-1%2f..%2fABC-1", "JRA-1%2F..%2FABC-1", "JRA-1%2fcomment", "JRA-1%5c..%5cABC-1", "JRA-1%5C..%5CABC-1",
    "JRA-1%3b/../ABC-1", "JRA-1%3B", "JRA-1%252f..%252fABC-1", "JRA-1/%252e%252e/ABC-1", "JRA-1%25",
    "JRA-1/%25%32%65%25%32%65/ABC-1", "JRA-1\\..\\ABC-1", "JRA-1\\", "/JRA-1", "JRA-1//", "JRA-1//../ABC-1",
    "JRA-1/../ABC-1", "JRA-1/../../../../secure/admin", "./JRA-1", "JRA-1/.", "JRA-1/..", "JRA-1%", "JRA-1%4",
    "JRA-1%zz", "JRA-1%g0", "JRA-1%ff", "JRA-1/%C0%AE%C0%AE/ABC-1", "JRA-1%C3%28", "JRA-%E9", "JRA-1%ED%A0%80",
    "JRA-1%00", "JRA-1%0a", "JRA-1%09", "JRA-1%7f", "JRA-1?x=%zz", "JRA-1?x=%", "JRA-1?x=%ff", "JRA-1?%C0%AE=1",
    "JRA-1#/../ABC-1", "JRA-1", "%4ARA-1", "%4aRA-1", "JRA-1/comment?expand=a%2Fb%2e%2e%3B%25", "JRA-1%20x",
    "JRA-1+x", "JRA-1/", "%41BC-1", "JRA-1/..;/..;/..;/..;/..;/secure/admin",
]
ODD_PROTECTED = ["/secure/..;/rest/api/2/issue/ABC-1", "/secure/%2e%2e/rest/api/2/issue/ABC-1",
                 "/%72est/api/2/issue/ABC-1", "/x/../rest/api/2/issue/ABC-1", "/x%2f..%2frest/api/2/issue/ABC-1",
                 "/rest%2fapi/2/issue/ABC-1", "/x/%252e%252e/rest/api/2/issue/ABC-1", "//rest/api/2/issue/JRA-1",
                 "/rest;x=1/api/2/issue/JRA-1", "/jira;x=1/rest/api/2/issue/ABC-1", "/jira/..;/rest/api/2/issue/ABC-1",
                 "/jira/%2e%2e/rest/api/2/issue/ABC-1", "/%6Aira/rest/api/2/issue/ABC-1", "/jira//rest/api/2/issue/ABC-1",
                 "/JIRA/rest/api/2/issue/ABC-1", "/jira/REST/api/2/issue/ABC-1", "/rest/../jira/rest/api/2/issue/ABC-1",
                 # found by the generator: Tomcat dispatches these to /rest/*, tokengate passed them through
                 "/rest/%25%32%65%25%32%65/api/2/issue/ABC-1", "/rest?x=1/api/2/issue/ABC-1", "/rest",
                 "/rest;x=1", "/jira/rest", "/jira/rest/%25%32%65%25%32%65/api/2/issue/ABC-1"]
UNI_PATHS = ["/rest/api/2/project/Caf%C3%A9", "/rest/api/2/project/Caf%c3%a9", "/rest/api/2/project/Cafe",
             "/rest/api/2/project/Cafe%CC%81", "/rest/api/2/project/Caf%C3%A9%20", "/rest/api/2/user/Jos%C3%A9",
             "/rest/api/2/user/Jos%C3%A9x", "/rest/api/2/group/jira_users", "/rest/api/2/group/caf%C3%A9",
             "/rest/api/2/project/Caf%E9", "/rest/api/2/user/Jos%F0%9F%98%80", "/rest/api/2/user/Jos%E2%80%A8",
             "/rest/api/2/user/Jos%0d", "/rest/api/2/group/%EF%BC%A1", "/rest/api/2/group/%E2%84%AA",
             "/rest/api/2/group/%C5%BF"]
FILTERS_QUERIES = [
    "permissions=true", "permissions=%74rue", "perm%69ssions=true", "PERMISSIONS=false&permissions=true",
    "permissions=true&permissions=false", "permissions=false&permissions=true", "permissions=true&perm%69ssions=false",
    "perm%69ssions=false&permissions=true", "permissions=true&permissions", "permissions=true&permissions=",
    "Permissions=true", "permissions=true+", "permissions=true%20", "permissions+=true",
    "permissions=true;permissions=false", "permissions=true%26permissions%3Dfalse", "permissions%3Dtrue",
    "permissions=true%00", "permissions=true&x=%zz", "permissions=true&x=%4", "permissions=tru%e",
    "permissions=true&x=%ff", "permissions=true&&permissions=false", "&permissions=true", "permissions==true",
    "permissions=true&=false", "permissions=true&%20permissions=false", "permissions=true&permissions%00=false",
    "permissions=true&permissions[]=false", "permissions=true&per%6Dissions=false", "permissions=true&PERMISSIONS=false",
]
JQL_QUERIES = ["jql=project+%3D+JRA", "jql=project%20%3D%20JRA", "jql=project+=+JRA", "j%71l=project+=+JRA",
               "jql=project+%3D+JRA+OR+project+%3D+ABC", "jql=project%2B%3D%2BJRA",
               "jql=project+%3D+JRA&jql=project+%3D+ABC"]
WORKLOG_QUERIES = ["dateFrom=2018-01-01&dateTo=2018-12-01", "dateTo=2018-12-01&dateFrom=2018-01-01",
                   "dateFrom=2018-01-01&dateTo=2018-12-01&x=1", "dateFrom=2018-01-01",
                   "dateFrom=2018-01-01&dateTo=2018-12-01&dateTo=2019-12-01",
                   "dateFrom=2018-01-01&dateTo=2018-12-01&date%54o=2019-12-01"]
NF_BODIES = [
    '{"editable":false}', '{"editable":"false"}', '{"editable":"\\u0066alse"}', '{"\\u0065ditable":false}',
    ' \r\n\t{ "editable" : false } \n', '{"name":"a","nested":{"editable":true},"editable":false}',
    '{"editable":true}', '{"editable":"true"}', '{"editable":"False"}', '{"editable":"false "}', '{"editable":[false]}',
    '{"editable":{"value":false}}', '{"editable":0}', '{"editable":null}', '{"editable":""}', '{"Editable":false}',
    '{"nested":{"editable":false}}', '[{"editable":false}]', '"editable"', 'false',
    '{"editable":true,"editable":false}', '{"editable":false,"editable":true}', '{"editable":false,"editable":false}',
    '{"editable":false,"edit\\u0061ble":true}', '{"edit\\u0061ble":true,"editable":false}',
    '{"editable":false,"a":{"b":1,"b":2}}', '{"editable":false,"a":[{"b":1},{"c":1,"c":1}]}',
    '{"editable":false,"s":"\\ud800"}', '{"editable":false,"s":"\\udc00x"}', '{"editable":false}x',
    '{"editable":false}{"editable":true}', '{"editable":false}}', '{"editable":false,}', "{'editable':false}",
    '{"editable":False}', '{"editable":false /* c */}', '{"editable":NaN}', '{"editable":false', 'editable=false', '',
    '   ', '{"editable":false,"editable\\u0000":true}', '{"editable\\u0000":false}',
]
NESTED_BODIES = [
    '{"fields":{"project":{"key":"JRA"},"summary":"s"}}', '{"fields":{"summary":"s","project":{"id":"1","key":"JRA"}}}',
    '{"fields":{"pro\\u006aect":{"k\\u0065y":"JRA"}}}', '{"fields":{"project":{"key":"ABC"}}}',
    '{"fields":{"project":{"key":"JRA "}}}', '{"fields":{"project":{"key":["JRA"]}}}', '{"fields":{"project":"JRA"}}',
    '{"fields.project.key":"JRA"}', '{"fields":{"project.key":"JRA"}}', '{"fields":{"project":{"key":"JRA","key":"ABC"}}}',
    '{"fields":{"project":{"key":"JRA"}},"fields":{"project":{"key":"ABC"}}}', '{"fields":{"project":{"key":"\\u004aRA"}}}',
]
NUMBERS = ["100", "1e2", "1E2", "1E+2", "100.0", "1.0e2", "0100", "+100", "-0", "0", "99999", "100000", "1e400",
           "-1", "0x64", "100e0", "10.0e1", "1.00", "12345678901234567890.5", "0.1", ".5", "5.", "1.5e-0",
           "123456789012345678901234567890", "Infinity", "-Infinity", "1_000", "1" * 400]


def catalog() -> list:
    """The fixed part: the forms of test_canonical.py and test_restrictions.py, and more."""
    out = []
    for s in CANONICAL_SUFFIXES:
        for key in ("jra", "free"):
            out.append(Req(key, "GET", P + s, origin="canonical"))
            out.append(Req(key, "GET", "/jira" + P + s, origin="canonical-jira"))
    for t in ODD_PROTECTED:
        out.append(Req("jra", "GET", t, origin="odd-protected"))
        out.append(Req("free", "GET", t, origin="odd-protected"))
    for t in UNI_PATHS:
        out.append(Req("uni", "GET", t, origin="unicode"))
    seeds = [("jra", "GET", "/rest/api/2/issue/JRA-1", None), ("jra", "GET", "/rest/api/2/issue/JRA-12345?expand=x", None),
             ("jra", "PUT", "/rest/api/2/issue/JRA-1", '{"fields":{"summary":"x"}}'),
             ("jra", "DELETE", "/rest/api/2/issue/JRA-9", None), ("jra", "GET", "/rest/api/2/issue/ABC-1", None),
             ("jra", "GET", "/rest/api/2/issue/ABC-1?x=/rest/api/2/issue/JRA-1", None),
             ("kanban", "POST", "/rest/api/2/issue/KANBAN-100/comment", '{"body":"Comment text"}'),
             ("kanban", "GET", "/rest/api/2/issue/KANBAN-100/comment", None),
             ("kanban", "POST", "/rest/api/2/issue/KANBAN-1000/comment", '{"body":"x"}'),
             ("kanban", "HEAD", "/rest/api/2/issue/KANBAN-100/comment", None)]
    for key, m, t, b in seeds:
        out.append(Req(key, m, t, b.encode() if b else None, JSON_CT if b else [], origin="seed"))
    for q in FILTERS_QUERIES:
        out.append(Req("filters", "GET", "/rest/extender/1.0/filter/user/admin?" + q, origin="query"))
        # a form body: Tomcat's getParameterValues reads it too (POST)
        out.append(Req("filters", "POST", "/rest/extender/1.0/filter/user/admin?" + q, b"permissions=false", FORM_CT,
                       origin="query+form"))
    for q in JQL_QUERIES:
        out.append(Req("jql", "GET", "/rest/api/2/search?" + q, origin="query"))
    for q in WORKLOG_QUERIES:
        out.append(Req("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe?" + q, origin="query"))
        out.append(Req("worklog", "POST", "/rest/extender/1.0/worklog/user/jdoe?" + q, b"dateTo=2030-01-01",
                       [("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8")], origin="query+form"))
    for b in NF_BODIES:
        for key in ("newfilter", "nofav"):
            bb = b.replace('"editable":false', '"editable":false,"favourite":false') if key == "nofav" else b
            out.append(Req(key, "POST", "/rest/api/2/filter", bb.encode(), JSON_CT, origin="json"))
    for b in NESTED_BODIES:
        out.append(Req("nested", "POST", "/rest/api/2/issue", b.encode(), JSON_CT, origin="json"))
    for n in NUMBERS:
        out.append(Req("num", "POST", "/rest/api/2/issue/JRA-1/worklog", ('{"timeSpentSeconds":%s}' % n).encode(),
                       JSON_CT, origin="number"))
        out.append(Req("num", "PUT", "/rest/api/2/issue/JRA-1/estimate", ('{"amount":%s,"id":100}' % n).encode(),
                       JSON_CT, origin="number"))
        out.append(Req("num", "PUT", "/rest/api/2/issue/JRA-1/estimate", ('{"amount":1,"id":%s}' % n).encode(),
                       JSON_CT, origin="number"))
    for raw in (b'\xef\xbb\xbf{"editable":false}', '{"editable":false}'.encode("utf-16-le"),
                '{"editable":false}'.encode("utf-16"), '{"editable":false}'.encode("utf-32-be"),
                b'{"editable":false,"s":"\xff"}', b'{"editable":false,"s":"\xc0\xae"}'):
        out.append(Req("newfilter", "POST", "/rest/api/2/filter", raw, JSON_CT, origin="json-bytes"))
    # more parameters than Tomcat's maxParameterCount (1000): Tomcat stops parsing there
    many = "&".join(f"p{i}=1" for i in range(1000))
    out.append(Req("filters", "GET", "/rest/extender/1.0/filter/user/admin?" + many + "&permissions=true",
                   origin="query-many"))
    out.append(Req("filters", "GET", "/rest/extender/1.0/filter/user/admin?permissions=true&" + many
                   + "&permissions=false", origin="query-many"))
    # identity header spellings from the client, and a chunked body
    for hs in ([("X-Forwarded-User", "admin")], [("X-FORWARDED-USER", "admin"), ("x-forwarded-user", "root")],
               [("x_forwarded_user", "admin")], [("X-Forwarded-User", "")]):
        out.append(Req("jra", "GET", "/rest/api/2/issue/JRA-1", headers=hs, origin="identity"))
        out.append(Req("free", "GET", "/secure/Dashboard.jspa", headers=hs, origin="identity"))
    out.append(Req("newfilter", "POST", "/rest/api/2/filter", b'12\r\n{"editable":false}\r\n0\r\n\r\n',
                   JSON_CT + [("Transfer-Encoding", "chunked")], origin="json-chunked"))
    # method overrides
    for h in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        out.append(Req("kanban", "POST", "/rest/api/2/issue/KANBAN-100/comment", b'{"body":"x"}',
                       JSON_CT + [(h, "DELETE")], origin="override"))
    return out


# --------------------------------------------------------------------------- the generator

SEEDS = [
    ("jra", "GET", "/rest/api/2/issue/JRA-1", None),
    ("jra", "GET", "/rest/api/2/issue/JRA-12345", "expand=renderedFields"),
    ("jra", "DELETE", "/rest/api/2/issue/ABC-1", None),
    ("kanban", "POST", "/rest/api/2/issue/KANBAN-100/comment", None),
    ("filters", "GET", "/rest/extender/1.0/filter/user/admin", "permissions=true"),
    ("worklog", "GET", "/rest/extender/1.0/worklog/user/jdoe", "dateFrom=2018-01-01&dateTo=2018-12-01"),
    ("jql", "GET", "/rest/api/2/search", "jql=project+%3D+JRA"),
    ("newfilter", "POST", "/rest/api/2/filter", None),
    ("nofav", "POST", "/rest/api/2/filter", None),
    ("nested", "POST", "/rest/api/2/issue", None),
    ("nested", "PUT", "/rest/api/2/issue/JRA-7", None),
    ("uni", "GET", "/rest/api/2/project/Caf%C3%A9", None),
    ("uni", "GET", "/rest/api/2/group/jira_users", None),
    ("num", "POST", "/rest/api/2/issue/JRA-3/worklog", None),
    ("num", "PUT", "/rest/api/2/issue/JRA-1/estimate", None),
    ("free", "GET", "/rest/api/2/myself", None),
]
BODY_TEMPLATES = {
    "newfilter": {"name": "f", "editable": False},
    "nofav": {"editable": False, "favourite": False},
    "nested": {"fields": {"project": {"key": "JRA"}, "summary": "s"}},
    "num": {"timeSpentSeconds": 120, "amount": "1.5", "id": 100},
    "kanban": {"body": "Comment text"},
}
UNICODE_SUBST = {"A": ["%EF%BC%A1", "%C3%80", "%D0%90"], "K": ["%E2%84%AA"], "s": ["%C5%BF"], "i": ["%C4%B1", "%C3%AD"],
                 "e": ["%C3%A9", "e%CC%81"], "J": ["%EF%BC%AA"], "R": ["%E2%84%9B"], "/": ["%EF%BC%8F", "%E2%88%95"],
                 ".": ["%E3%80%82", "%EF%BC%8E"]}


def _pct(c: str, rnd: random.Random) -> str:
    h = "".join("%%%02X" % b for b in c.encode("utf-8"))
    return h.lower() if rnd.random() < 0.5 else h


def mutate_path(p: str, rnd: random.Random) -> str:
    segs = p.split("/")
    op = rnd.randrange(17)
    if op == 0:  # percent-encode a character
        i = rnd.randrange(len(p))
        return p[:i] + _pct(p[i], rnd) + p[i + 1:]
    if op == 1:  # double-encode a character
        i = rnd.randrange(len(p))
        return p[:i] + _pct(p[i], rnd).replace("%", "%25") + p[i + 1:]
    if op == 2:  # a ; parameter on a segment
        i = rnd.randrange(1, len(segs))
        segs[i] += rnd.choice([";", ";x=1", ";jsessionid=AB", ";/..", "%3b", "%3B.."])
        return "/".join(segs)
    if op == 3:  # dot segments
        i = rnd.randrange(1, len(segs))
        dot = rnd.choice([".", "..", "%2e", "%2e%2e", ".%2E", "..;", "%2e;", "..%00", "..%2f", ".%00."])
        extra = [dot] if "." in dot.replace("%2e", ".").replace("%2E", ".") and ".." not in dot else [rnd.choice(["ABC-1", "x"]), dot]
        return "/".join(segs[:i] + extra + segs[i:])
    if op == 4:  # doubled and mixed slashes
        i = rnd.randrange(1, len(segs))
        return "/".join(segs[:i]) + rnd.choice(["//", "\\", "/\\", "%5c", "%2f", "%2F", "///", "/%2f"]) + "/".join(segs[i:])
    if op == 5:  # case
        i = rnd.randrange(len(p))
        return p[:i] + p[i].swapcase() + p[i + 1:]
    if op == 6:  # Unicode look-alikes and raw non-ASCII
        cands = [i for i, c in enumerate(p) if c in UNICODE_SUBST]
        if cands:
            i = rnd.choice(cands)
            return p[:i] + rnd.choice(UNICODE_SUBST[p[i]]) + p[i + 1:]
        return p + "%C3%A9"
    if op == 7:  # overlong / invalid UTF-8
        i = rnd.randrange(1, len(segs))
        segs[i] += rnd.choice(["%C0%AE", "%C0%AF", "%E0%80%AE", "%ff", "%C3", "%ED%A0%80", "%F4%90%80%80"])
        return "/".join(segs)
    if op == 8:  # trailing forms
        return p + rnd.choice(["/", "/.", "/..", "//", ";", "%20", "%09", "?", "#", "%23", "/%2e", "%00", "+"])
    if op == 9:  # context path
        return rnd.choice(["/jira", "/jira/", "/JIRA", "/jira;x", "/%6Aira", "/jira/.", "/jira/..", "/x/..", "/rest/.."]) + p
    if op == 10:  # prefix spellings
        return rnd.choice(["/REST", "/rest%2f", "/r%65st", "/Rest", "//rest", "/./rest", "/rest;", "/rest/."]) + p[len("/rest"):]
    if op == 11:  # raw control / odd characters
        i = rnd.randrange(1, len(p))
        return p[:i] + rnd.choice(["\t", "\x00", "\x7f", "é", "\\", "%", "%%", "%g", "%5", "?x=1", "#x"]) + p[i:]
    if op == 12:  # encode a whole segment
        i = rnd.randrange(1, len(segs))
        segs[i] = "".join(_pct(c, rnd) for c in segs[i])
        return "/".join(segs)
    if op == 13:  # swap an issue key
        return p.replace("JRA", rnd.choice(["ABC", "jra", "JRA-1/../ABC", "JRAX", "JR%41"]), 1)
    if op == 14:  # path traversal to a neighbour
        return p + rnd.choice(["/../../ABC-1", "/..;/..;/ABC-1", "/%2e%2e/%2e%2e/ABC-1", "/..%5c..%5cABC-1"])
    if op == 15:  # encoded space, plus, tab
        i = rnd.randrange(1, len(p))
        return p[:i] + rnd.choice(["%20", "+", "%09", "%0d%0a", "%2B"]) + p[i:]
    return p


def mutate_query(q: str, rnd: random.Random, key: str) -> str:
    names = {"filters": "permissions", "worklog": "dateTo", "jql": "jql"}
    name = names.get(key, "x")
    op = rnd.randrange(14)
    if op == 0:
        return q + f"&{name}=" + rnd.choice(["false", "2030-01-01", "project+%3D+ABC", ""])
    if op == 1:
        return f"{name}=" + rnd.choice(["false", "2030-01-01", "x"]) + "&" + q
    if op == 2:  # encoded name
        enc = "".join(_pct(c, rnd) if rnd.random() < 0.3 else c for c in name)
        return q + f"&{enc}=" + rnd.choice(["false", "2030-01-01", "x"])
    if op == 3:
        return q.replace("=", rnd.choice(["%3D", "==", "=%20", "+=", "=+"]), 1)
    if op == 4:
        return q + rnd.choice([";", f";{name}=false", "&", "&&", f"&{name}", f"&{name}=", "&=", "%26" + name + "%3Dx"])
    if op == 5:
        i = rnd.randrange(len(q)) if q else 0
        return q[:i] + rnd.choice(["%", "%z", "%ff", "%C3%A9", "%00", "+", "%2B", "%20", "%C0%AE"]) + q[i:]
    if op == 6:  # case of the name
        return q + f"&{name.upper()}=false"
    if op == 7:
        return q + f"&{name}%00=false"
    if op == 8:
        return q + "&" + name + "[]=false"
    if op == 9:
        i = rnd.randrange(len(q)) if q else 0
        return q[:i] + _pct(q[i], rnd) + q[i + 1:] if q else q
    if op == 10:
        return "&" + q
    if op == 11:
        return q + "#" + name + "=false"
    if op == 12:
        return q.replace("&", rnd.choice(["&amp;", "%26", ";", "&&"]))
    return q + "&" + "".join(rnd.choice("abc") for _ in range(3)) + "=1"


def _num(rnd: random.Random, base: int) -> str:
    return rnd.choice([str(base), f"{base}.0", f"{base / 10}e1", f"{base}e0", f"{base}E0", f"-{base}", f"0{base}",
                       f"+{base}", f"{base}.", f"{base}.00", "1e400", str(base) + "0" * rnd.randrange(1, 30),
                       f"{base}e-0", f"0.{base}e3", hex(base)])


def _enc_str(s: str, rnd: random.Random) -> str:
    out = []
    for c in s:
        r = rnd.random()
        if r < 0.15:
            out.append("\\u%04x" % ord(c))
        elif r < 0.2:
            out.append("\\u%04X" % ord(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def render(v, rnd: random.Random, depth: int = 0) -> str:
    """JSON text of v with random escapes, spacing, and member-name escapes."""
    ws = rnd.choice(["", "", " ", "\n", "\t", " \r\n "])
    if isinstance(v, dict):
        items = [f"{_enc_str(k, rnd)}{ws}:{ws}{render(x, rnd, depth + 1)}" for k, x in v.items()]
        return "{" + ws + ("," + ws).join(items) + ws + "}"
    if isinstance(v, list):
        return "[" + ",".join(render(x, rnd, depth + 1) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return _num(rnd, v) if rnd.random() < 0.3 else str(v)
    if isinstance(v, RawJson):
        return v.text
    return _enc_str(str(v), rnd)


class RawJson:
    def __init__(self, text):
        self.text = text


def mutate_body(key: str, rnd: random.Random) -> bytes:
    import copy
    doc = copy.deepcopy(BODY_TEMPLATES[key])
    op = rnd.randrange(12)
    target = None
    if key in ("newfilter", "nofav"):
        target = ("editable", doc)
    elif key == "nested":
        target = ("key", doc["fields"]["project"])
    elif key == "num":
        target = (rnd.choice(["timeSpentSeconds", "amount", "id"]), doc)
    elif key == "kanban":
        target = ("body", doc)
    name, obj = target
    if op == 0:  # type/value confusion
        obj[name] = rnd.choice([True, "false", "true", None, [False], {"v": False}, 0, "", "JRA", "ABC", "100",
                                "1.5", "False", "false ", "\u0000false"])
    elif op == 1:  # a duplicate (ordering either way)
        other = rnd.choice(["true", '"ABC"', "1", '"x"', "false", "100"])
        dup = rnd.choice([name, name[:-1] + "\\u%04x" % ord(name[-1])])
        text = render(doc, rnd)
        return (text[:-1] + f',"{dup}":{other}}}' if rnd.random() < 0.5 else "{" + f'"{dup}":{other},' + text[1:]).encode()
    elif op == 2:  # numbers in every notation
        obj[name] = RawJson(_num(rnd, rnd.choice([0, 1, 100, 120, 99999])))
    elif op == 3:  # deep nesting
        n = rnd.choice([10, 62, 63, 64, 65, 100, 1000])
        doc["deep"] = RawJson("[" * n + "]" * n)
    elif op == 4:  # nested duplicates elsewhere
        doc["extra"] = RawJson('{"a":1,"a":2}')
    elif op == 5:  # trailing content
        return (render(doc, rnd) + rnd.choice(["x", "{}", "}", " ", "\n", "//c", "/*c*/", ",", "\x00"])).encode()
    elif op == 6:  # comments, single quotes, unquoted names
        text = render(doc, rnd)
        return rnd.choice([text.replace(":", ":/*c*/", 1), text.replace('"', "'"), "{" + name + ":false}",
                           text.replace(",", ",,", 1)]).encode()
    elif op == 7:  # a NUL escape in a member name, or lone surrogates in a value
        text = render(doc, rnd)
        if rnd.random() < 0.5:
            return text.replace('"' + name + '"', '"' + name + '\\u0000"', 1).encode()
        return (text[:-1] + ',"s":"' + rnd.choice(["\\ud800", "\\udc00x", "\\ud800\\udc00"]) + '"}').encode()
    elif op == 8:  # encodings
        text = render(doc, rnd)
        enc = rnd.choice(["utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1"])
        return text.encode(enc, "replace")
    elif op == 9:  # the node in another place
        v = obj.pop(name, None)
        doc["nested"] = {name: v}
    elif op == 10:  # a dotted member name
        if key == "nested":
            return b'{"fields.project.key":"JRA","fields":{"project":{"key":"ABC"}}}'
        obj[name + ".x"] = False
    return render(doc, rnd).encode("utf-8")


def generate(seed: int, count: int) -> list:
    rnd = random.Random(seed)
    out = []
    for n in range(count):
        key, method, path, query = rnd.choice(SEEDS)
        headers, body = [], None
        for _ in range(rnd.choice([1, 1, 1, 2, 2, 3])):
            part = rnd.random()
            if part < 0.6 or query is None and key not in BODY_TEMPLATES:
                path = mutate_path(path, rnd)
            elif query is not None and part < 0.85:
                query = mutate_query(query, rnd, key)
        if key in BODY_TEMPLATES and method in ("POST", "PUT"):
            body = mutate_body(key, rnd) if rnd.random() < 0.7 else render(BODY_TEMPLATES[key], rnd).encode()
            headers = list(JSON_CT)
            if rnd.random() < 0.1:
                headers = [("Content-Type", rnd.choice(["application/json;charset=utf-16", "text/plain",
                                                        "application/json; charset=\"UTF-8\"",
                                                        "application/x-www-form-urlencoded"]))]
        elif method == "GET" and query is not None and rnd.random() < 0.1:
            method = "POST"
            body = rnd.choice([b"permissions=false", b"dateTo=2030-01-01", b"jql=project+%3D+ABC"])
            headers = [("Content-Type", rnd.choice(["application/x-www-form-urlencoded",
                                                    "Application/X-WWW-Form-Urlencoded;charset=UTF-8"]))]
        if rnd.random() < 0.03:
            method = rnd.choice(["HEAD", "PUT", "PATCH", "OPTIONS", "DELETE"])
        target = path + ("?" + query if query is not None else "")
        out.append(Req(key, method, target, body, headers, origin=f"generated seed={seed} n={n}"))
    return out
