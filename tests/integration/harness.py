"""Integration-test harness: real Envoy + the real tokengate filter + in-process demo servers.

* Two builds of the filter: ``TOKENGATE_BUILD=wasm`` (default: ``dist/tokengate.wasm`` in the
  proxy-wasm filter) or ``TOKENGATE_BUILD=native`` (``target/native/libtokengate_native.so`` as an
  ``envoy.filters.http.dynamic_modules`` filter, loaded by path through ``module.local.filename``).
  Both get the same plugin configuration; the native config is derived from the wasm one.

* Envoy configs are generated from the shipped ``envoy/envoy.yaml`` (the single source of truth):
  only ports, the wasm path, the plugin configuration and optional HCM overrides are rewritten.
* Envoy processes are started with ``--disable-hot-restart --concurrency 1`` on free ports and
  stopped by pid (SIGTERM, then SIGKILL), also when a test fails.
* ``RawClient`` sends exact bytes over a socket and parses the response, so tests control the
  request line, header names, duplicates and framing.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHIPPED_ENVOY_YAML = os.path.join(REPO, "envoy", "envoy.yaml")
# TOKENGATE_WASM: test another build of the filter (default: what `make wasm` builds).
WASM_PATH = os.path.abspath(os.environ.get("TOKENGATE_WASM") or os.path.join(REPO, "dist", "tokengate.wasm"))
# TOKENGATE_BUILD: which build the suites drive (wasm | native).
BUILD = os.environ.get("TOKENGATE_BUILD", "wasm")
if BUILD not in ("wasm", "native"):
    raise RuntimeError(f"TOKENGATE_BUILD must be wasm or native, not {BUILD!r}")
# TOKENGATE_NATIVE_DIR: where libtokengate_native.so is (default: what `make native` builds).
NATIVE_DIR = os.path.abspath(os.environ.get("TOKENGATE_NATIVE_DIR") or os.path.join(REPO, "target", "native"))
NATIVE_LIB = os.path.join(NATIVE_DIR, "libtokengate_native.so")
NATIVE_MODULE_NAME = "tokengate_native"
# The ABI version native/src/abi.rs pins; Envoy must log that it matched.
NATIVE_ABI_VERSION = "v0.2.0"
sys.path.insert(0, os.path.join(REPO, "demo"))

import server as demo_server  # noqa: E402  (demo/server.py)

WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
NATIVE_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
JIRA_CONTENT_TYPE = "application/json;charset=UTF-8"


class HarnessError(Exception):
    pass


def envoy_bin() -> str:
    return os.environ.get("ENVOY_BIN") or os.path.join(REPO, ".venv", "bin", "envoy")


def require_artifacts(need_wasm: bool = True, build: str | None = None) -> None:
    """Raises (the fixture FAILS, it does not skip) when the filter build or Envoy is missing."""
    missing = []
    build = build or BUILD
    if need_wasm and build == "wasm" and not os.path.isfile(WASM_PATH):
        missing.append(f"{WASM_PATH} is missing")
    if need_wasm and build == "native" and not os.path.isfile(NATIVE_LIB):
        missing.append(f"{NATIVE_LIB} is missing")
    eb = envoy_bin()
    if not (os.path.isfile(eb) and os.access(eb, os.X_OK)):
        missing.append(f"Envoy binary {eb} is missing (or set ENVOY_BIN)")
    if missing:
        raise HarnessError("; ".join(missing) + ": run `make wasm` / `make native` / `make venv`")


# --------------------------------------------------------------------------- tokens


_B62 = string.ascii_letters + string.digits


def new_token() -> str:
    """A fresh token in tokengate's shape: tg_ + base62."""
    return "tg_" + "".join(secrets.choice(_B62) for _ in range(32))


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode("utf-8")).decode("ascii")


def basic_raw(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode("ascii")


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- config generation


def load_shipped() -> dict:
    with open(SHIPPED_ENVOY_YAML) as f:
        return yaml.safe_load(f)


def _hcm(cfg: dict) -> dict:
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                tc = flt.get("typed_config", {})
                if tc.get("@type") == HCM_TYPE:
                    return tc
    raise HarnessError("no HttpConnectionManager in envoy.yaml")


def _wasm_filter(cfg: dict) -> dict:
    for flt in _hcm(cfg)["http_filters"]:
        if flt.get("typed_config", {}).get("@type") == WASM_FILTER_TYPE:
            return flt
    raise HarnessError("no wasm filter in envoy.yaml")


def filter_configuration(cfg: dict) -> dict:
    """The tokengate configuration (a protobuf Any) of a generated config, either build."""
    for flt in _hcm(cfg)["http_filters"]:
        tc = flt.get("typed_config", {})
        if tc.get("@type") == WASM_FILTER_TYPE:
            return tc["config"]["configuration"]
        if tc.get("@type") == NATIVE_FILTER_TYPE:
            return tc["filter_config"]
    raise HarnessError("no tokengate filter in the config")


def to_native(cfg: dict) -> dict:
    """Turns a generated wasm config into the same config for the native build: the wasm filter
    becomes a dynamic_modules filter with the same configuration as its `filter_config`, and the
    access log reads the native filter-state keys (`tokengate.*` instead of `wasm.tokengate.*`).
    proxy-wasm PluginConfig fields (failure policy, allow_on_headers_stop_iteration) have no
    counterpart: the native filter always holds headers itself and never fails open."""
    flt = _wasm_filter(cfg)
    pc = flt["typed_config"]["config"]
    flt["typed_config"] = {
        "@type": NATIVE_FILTER_TYPE,
        "dynamic_module_config": {"name": NATIVE_MODULE_NAME, "do_not_close": True,
                                  "module": {"local": {"filename": NATIVE_LIB}}},
        "filter_name": "tokengate",
        "filter_config": pc["configuration"],
    }
    hcm = _hcm(cfg)
    for log in hcm.get("access_log", []):
        src = log.get("typed_config", {}).get("log_format", {}).get("text_format_source", {})
        if "inline_string" in src:
            src["inline_string"] = src["inline_string"].replace("FILTER_STATE(wasm.tokengate.", "FILTER_STATE(tokengate.")
    return cfg


def shipped_plugin_config() -> dict:
    """The plugin configuration of the shipped envoy.yaml, as a dict."""
    conf = _wasm_filter(load_shipped())["typed_config"]["config"]["configuration"]
    if conf.get("@type", "").endswith("google.protobuf.Struct"):
        return copy.deepcopy(conf["value"])
    return json.loads(conf["value"])


def _set_cluster_port(cfg: dict, name: str, port: int) -> None:
    for cluster in cfg["static_resources"]["clusters"]:
        if cluster["name"] == name:
            for ep in cluster["load_assignment"]["endpoints"]:
                for lb in ep["lb_endpoints"]:
                    lb["endpoint"]["address"]["socket_address"]["port_value"] = port
            return
    raise HarnessError(f"no cluster {name!r} in envoy.yaml")


def generate_config(*, listener_port: int, admin_port: int, upstream_port: int, audit_port: int,
                    plugin_config=None, as_string: bool = False, hcm_overrides: dict | None = None,
                    wasm_path: str = WASM_PATH, with_filter: bool = True, plugin_overrides: dict | None = None,
                    raw_plugin_string: str | None = None, build: str | None = None) -> dict:
    """The shipped config with ports, wasm path and plugin configuration rewritten.

    plugin_config: dict (None keeps the shipped one). as_string: pass it as a JSON
    google.protobuf.StringValue instead of a Struct. raw_plugin_string: exact StringValue text
    (for malformed JSON). hcm_overrides: keys merged into the HttpConnectionManager (a value of
    None deletes the key). plugin_overrides: keys merged into the wasm PluginConfig.
    with_filter=False removes the wasm filter (harness self-tests).
    """
    cfg = load_shipped()
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listener = cfg["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = listener_port
    _set_cluster_port(cfg, "upstream", upstream_port)
    _set_cluster_port(cfg, "audit_sink", audit_port)
    hcm = _hcm(cfg)
    for k, v in (hcm_overrides or {}).items():
        if v is None:
            hcm.pop(k, None)
        else:
            hcm[k] = v
    if not with_filter:
        hcm["http_filters"] = [f for f in hcm["http_filters"]
                               if f.get("typed_config", {}).get("@type") != WASM_FILTER_TYPE]
        return cfg
    pc = _wasm_filter(cfg)["typed_config"]["config"]
    pc["vm_config"]["code"]["local"]["filename"] = os.path.abspath(wasm_path)
    for k, v in (plugin_overrides or {}).items():
        if v is None:
            pc.pop(k, None)
        else:
            pc[k] = v
    if raw_plugin_string is not None:
        pc["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                               "value": raw_plugin_string}
    elif plugin_config is not None:
        if as_string:
            pc["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": json.dumps(plugin_config)}
        else:
            pc["configuration"] = {"@type": "type.googleapis.com/google.protobuf.Struct",
                                   "value": copy.deepcopy(plugin_config)}
    if (build or BUILD) == "native":
        return to_native(cfg)
    return cfg


# --------------------------------------------------------------------------- Envoy process


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM this Envoy if the test process dies without
    running its teardown (e.g. pytest killed with SIGKILL)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 (best effort; not Linux)
        pass


class Envoy:
    """One Envoy process on free ports. Use start() / stop(); stop() is idempotent."""

    def __init__(self, workdir: str, upstream_port: int, audit_port: int, *, concurrency: int = 1,
                 log_level: str = "info", extra_args=(), config_factory=None, **gen_kwargs):
        self.workdir = workdir
        self.port = free_port()
        self.admin_port = free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()
        # config_factory(listener_port, admin_port): another bootstrap (tests/service's ECDS one).
        if config_factory is not None:
            self.config = config_factory(self.port, self.admin_port)
        else:
            self.config = generate_config(listener_port=self.port, admin_port=self.admin_port,
                                          upstream_port=upstream_port, audit_port=audit_port, **gen_kwargs)
        os.makedirs(workdir, exist_ok=True)
        # Written as JSON: Envoy's YAML loader would read an unquoted `y`/`on` as a boolean.
        fd, self.config_path = tempfile.mkstemp(prefix="envoy-", suffix=".json", dir=workdir)
        with os.fdopen(fd, "w") as f:
            json.dump(self.config, f, indent=1)
        base = self.config_path[:-5]
        self.log_path = base + ".log"  # Envoy's own log (stderr)
        self.stdout_path = base + ".stdout"  # access log (stdout)
        self.concurrency = concurrency
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None

    @property
    def argv(self) -> list:
        return [envoy_bin(), "-c", self.config_path, "--disable-hot-restart",
                "--concurrency", str(self.concurrency), "-l", self.log_level,
                "--file-flush-interval-msec", "100", "--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v",
                *self.extra_args]

    def start(self, wait_ready: bool = True, timeout: float = 20.0) -> "Envoy":
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.log_path, "wb")
        # The native module is found by name there when a config (ECDS) names it without a path.
        env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": NATIVE_DIR}
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     cwd=REPO, env=env, preexec_fn=_die_with_parent)
        if wait_ready:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise HarnessError(f"Envoy exited with {rc} before /ready; log:\n{self.log()[-6000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise HarnessError(f"Envoy not ready after {timeout}s; log:\n{self.log()[-6000:]}")

    def wait_exit(self, timeout: float = 20.0):
        """For configs Envoy must refuse: waits for exit; returns the exit code, or None if it got ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                return rc
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=0.5) as r:
                    if r.status == 200:
                        return None
            except OSError:
                pass
            time.sleep(0.05)
        return None

    def stop(self, timeout: float = 5.0) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout)
            except ProcessLookupError:
                pass
        for fh in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if fh is not None and not fh.closed:
                fh.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def access_log(self) -> str:
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_access_log(self, pattern: str, timeout: float = 5.0) -> str:
        """Waits for an access-log line matching regex `pattern`; returns it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.access_log().splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no access-log line matches {pattern!r}:\n{self.access_log()[-3000:]}")
            time.sleep(0.1)

    # ---- admin / stats
    def admin(self, path: str, method: str = "GET") -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode("utf-8", "replace")

    def stats(self, filter_regex: str = "tokengate") -> dict:
        """Counters and gauges whose name matches `filter_regex` (Envoy's /stats?filter=)."""
        text = self.admin("/stats?filter=" + urllib.parse.quote(filter_regex))
        out = {}
        for line in text.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and re.fullmatch(r"-?\d+", value.strip()):
                out[name] = int(value)
        return out

    def stat(self, name: str, default: int = 0) -> int:
        """One counter/gauge by its tokengate name, e.g. 'tokengate.denied.expired'; finds it with
        or without Envoy's prefix (wasmcustom.)."""
        found = self.stats(re.escape(name) + "$")
        for full, value in found.items():
            if full == name or full.endswith("." + name):
                return value
        return default

    # ---- client
    def client(self) -> "RawClient":
        return RawClient("127.0.0.1", self.port)

    def request(self, *args, **kwargs) -> "Response":
        return self.client().request(*args, **kwargs)

    def raw(self, data: bytes, **kwargs) -> "Response":
        return self.client().raw(data, **kwargs)



def expect_start_failure(workdir: str, upstream_port: int, audit_port: int, timeout: float = 20.0,
                         **gen_kwargs) -> tuple:
    """Starts Envoy with a config it must refuse. Returns (exit_code, log). If Envoy comes up
    instead, it is stopped and (None, log) is returned, so the caller's assertion fails."""
    env = Envoy(workdir, upstream_port, audit_port, **gen_kwargs)
    env.start(wait_ready=False)
    try:
        rc = env.wait_exit(timeout)
    finally:
        env.stop()
    return rc, env.log()


# --------------------------------------------------------------------------- raw HTTP client


@dataclass
class Response:
    status: int
    reason: str
    headers: list  # (name, value) pairs as received
    body: bytes
    raw: bytes

    def header_values(self, name: str) -> list:
        lname = name.lower()
        return [v for (k, v) in self.headers if k.lower() == lname]

    def header(self, name: str):
        values = self.header_values(name)
        if not values:
            return None
        if len(values) > 1:
            raise AssertionError(f"response header {name!r} repeated: {values!r}")
        return values[0]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} {self.body[:300]!r}>"


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.host, self.port, self.timeout = host, port, timeout

    def raw(self, data: bytes, timeout: float | None = None, head: bool = False) -> Response:
        """Sends `data` as-is on a new connection and parses one response."""
        with socket.create_connection((self.host, self.port), timeout=timeout or self.timeout) as s:
            s.sendall(data)
            return _read_response(s, head=head)

    def request(self, method: str, path: str, headers=None, body: bytes | str | None = None, *,
                auth: tuple | None = None, bearer: str | None = None, authorization: str | None = None,
                host: str = "tokengate.test", content_length: bool = True, timeout: float | None = None) -> Response:
        """Convenience: builds an HTTP/1.1 request. headers: dict or list of (name, value) pairs
        (a list allows duplicates and exact spelling). auth=("user", "token") adds Basic;
        bearer="tok" adds Bearer; authorization="..." adds that exact value."""
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if auth is not None:
            pairs.append(("Authorization", basic(*auth)))
        if bearer is not None:
            pairs.append(("Authorization", "Bearer " + bearer))
        if authorization is not None:
            pairs.append(("Authorization", authorization))
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for (k, v) in pairs]
        if body is not None and content_length and not any(k.lower() == "content-length" for k, _ in pairs):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + (body or b"")
        return self.raw(data, timeout=timeout, head=(method.upper() == "HEAD"))


def _read_response(sock: socket.socket, head: bool = False) -> Response:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise HarnessError(f"connection closed before a full response head: {buf!r}")
        buf += chunk
    head_bytes, rest = buf.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode("latin-1").split("\r\n")
    version, _, status_reason = lines[0].partition(" ")
    status_s, _, reason = status_reason.partition(" ")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    hmap = {k.lower(): v for k, v in headers}
    status = int(status_s)
    body = rest
    if head or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in hmap.get("transfer-encoding", "").lower():
        body = _read_chunked(sock, rest)
    elif "content-length" in hmap:
        n = int(hmap["content-length"])
        while len(body) < n:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        body = body[:n]
    else:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return Response(status, reason, headers, body, buf)


def _read_chunked(sock, data: bytes) -> bytes:
    out = b""

    def need(n):
        nonlocal data
        while len(data) < n:
            c = sock.recv(65536)
            if not c:
                raise HarnessError("connection closed inside a chunked body")
            data += c

    while True:
        while b"\r\n" not in data:
            need(len(data) + 1)
        line, data = data.split(b"\r\n", 1)
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return out
        need(size + 2)
        out += data[:size]
        data = data[size + 2:]


# --------------------------------------------------------------------------- assertions


def assert_jira_error(resp: Response, status: int, message: str | None = None) -> str:
    """Status, Jira's exact content-type and error shape. Returns the message."""
    assert resp.status == status, f"expected {status}, got {resp!r}"
    assert resp.header("content-type") == JIRA_CONTENT_TYPE, resp.headers
    body = resp.json()
    assert set(body) == {"errorMessages", "errors"}, body
    assert body["errors"] == {}, body
    msgs = body["errorMessages"]
    assert isinstance(msgs, list) and len(msgs) == 1 and isinstance(msgs[0], str) and msgs[0], body
    if message is not None:
        assert body == {"errorMessages": [message], "errors": {}}, body
    return msgs[0]


def www_authenticate(resp: Response) -> str:
    return ", ".join(resp.header_values("www-authenticate"))


def assert_challenge(resp: Response, methods: str) -> None:
    """401 carries WWW-Authenticate for the enabled schemes only."""
    got = www_authenticate(resp)
    assert got, f"401 without WWW-Authenticate: {resp!r}"
    has_basic = 'Basic realm="tokengate"' in got
    has_bearer = re.search(r"(^|,\s*)Bearer\b", got) is not None
    assert has_basic == (methods in ("basic", "both")), got
    assert has_bearer == (methods in ("bearer", "both")), got


# --------------------------------------------------------------------------- framing helpers


def upstream_rq_total(env: "Envoy") -> int:
    """Requests Envoy has started towards the `upstream` cluster (Envoy's own counter). It
    counts a request as soon as its headers go upstream, so it proves "nothing reached the
    upstream, not even the headers" where the demo upstream (which records complete requests)
    cannot."""
    name = "cluster.upstream.upstream_rq_total"
    return env.stats("^" + re.escape(name) + "$").get(name, 0)


def request_head(method: str, path: str, headers=(), host: str = "tokengate.test") -> bytes:
    """An HTTP/1.1 request head (request line, Host, `headers` pairs as given, blank line)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for (k, v) in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def chunked(chunks, trailers=()) -> bytes:
    """A chunked body: each element of `chunks` (bytes) one chunk, then the last chunk, the
    trailer fields `trailers` ((name, value) pairs) and the final CRLF."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    out += b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for (k, v) in trailers) + b"\r\n"
    return out


class OpenRequest:
    """A request sent in parts on one connection: send(), then response(). Close with close()
    or use as a context manager."""

    def __init__(self, env: "Envoy", timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", env.port), timeout=timeout)

    def send(self, data: bytes) -> "OpenRequest":
        self.sock.sendall(data)
        return self

    def response(self, head: bool = False) -> Response:
        return _read_response(self.sock, head=head)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
