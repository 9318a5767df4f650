#!/usr/bin/env python3
"""Demo servers for tokengate (standard library only).

Two HTTP servers:

* the **demo upstream**, standing in for Jira/Confluence: answers every method and path with
  200 and a JSON summary of what reached it (method, raw path with query, the identity header,
  whether Authorization / Cookie arrived, body size). It records every request it received, so
  tests can assert exactly what Envoy forwarded, including "nothing at all" for refusals.
* the **audit sink**: ``POST /audit`` appends the body (NDJSON lines) to a file and answers
  200. Tests can make it answer 500 or go down for a while.

The sink port also carries the out-of-process control API (the upstream port is reachable
through Envoy, so it carries none: every request there is a request Envoy forwarded):

* ``GET /__requests``  - JSON list of the requests the upstream recorded
* ``DELETE /__requests`` - forget them
* ``GET /__audit``     - JSON list of the audit lines the sink received (parsed)

In-process use (tests): ``servers = DemoServers(upstream_port=0, audit_port=0); servers.start()``
then ``servers.upstream.requests``, ``servers.sink.lines``, ``servers.sink.set_mode("error")``,
``servers.sink.go_down()`` / ``come_up()``, ``servers.reset()``, ``servers.stop()``.

CLI: ``python demo/server.py --upstream-port 8081 --audit-port 8082 --audit-file .run/audit.ndjson``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_IDENTITY_HEADER = "x-forwarded-user"


@dataclass
class RecordedRequest:
    """One request as the demo upstream received it."""

    method: str
    path: str  # raw request target, query included
    headers: list  # list of (name, value) pairs in arrival order, names as sent
    body: bytes
    time: float = field(default_factory=time.time)

    def header_values(self, name: str) -> list:
        """All values of header `name` (case-insensitive), in order."""
        lname = name.lower()
        return [v for (k, v) in self.headers if k.lower() == lname]

    def header(self, name: str):
        """The single value of header `name`, None if absent; error if repeated."""
        values = self.header_values(name)
        if not values:
            return None
        if len(values) > 1:
            raise AssertionError(f"header {name!r} arrived {len(values)} times: {values!r}")
        return values[0]

    def has_header(self, name: str) -> bool:
        return bool(self.header_values(name))

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "path": self.path,
            "headers": [[k, v] for (k, v) in self.headers],
            "body": self.body.decode("utf-8", "replace"),
            "body_bytes": len(self.body),
            "time": self.time,
        }


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Reads a request body framed by Content-Length or chunked Transfer-Encoding."""
    te = handler.headers.get("Transfer-Encoding", "")
    if "chunked" in te.lower():
        chunks = []
        while True:
            line = handler.rfile.readline(65537)
            if not line:
                break
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # trailers until the empty line
                while True:
                    t = handler.rfile.readline(65537)
                    if not t or t in (b"\r\n", b"\n"):
                        break
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline(3)  # CRLF after the chunk
        return b"".join(chunks)
    length = handler.headers.get("Content-Length")
    if length:
        return handler.rfile.read(int(length))
    return b""


def _send_json(handler: BaseHTTPRequestHandler, status: int, obj, extra_headers=()) -> None:
    data = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json;charset=UTF-8")
    handler.send_header("Content-Length", str(len(data)))
    for k, v in extra_headers:
        handler.send_header(k, v)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    verbose = False

    def log_message(self, fmt, *args):  # noqa: N802 (stdlib name)
        if self.verbose:
            sys.stderr.write("%s %s\n" % (self.server.server_address[1], fmt % args))


# --------------------------------------------------------------------------- demo upstream


class DemoUpstream:
    """The Jira stand-in. Thread-safe record of every request received."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, identity_header: str = DEFAULT_IDENTITY_HEADER,
                 verbose: bool = False):
        self.host = host
        self.identity_header = identity_header
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._arrived = threading.Condition(self._lock)
        upstream = self

        class Handler(_QuietHandler):
            def _any(self):
                body = _read_body(self)
                rec = RecordedRequest(self.command, self.path, list(self.headers.items()), body)
                upstream._record(rec)
                auth = rec.header_values("authorization")
                ident = rec.header_values(upstream.identity_header)
                _send_json(self, 200, {
                    "method": rec.method,
                    "path": rec.path,
                    "identity": ident[0] if len(ident) == 1 else (ident or None),
                    "authorization": bool(auth),
                    "authorization_value": auth[0] if len(auth) == 1 else (auth or None),
                    "cookie": rec.has_header("cookie"),
                    "body_bytes": len(body),
                })

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any

            def handle_one_request(self):
                # Accept any method token (e.g. PROPFIND), not only the do_X ones defined above.
                try:
                    return super().handle_one_request()
                except ConnectionError:
                    self.close_connection = True

            def __getattr__(self, name):
                if name.startswith("do_"):
                    return self._any
                raise AttributeError(name)

        Handler.verbose = verbose
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = None

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)
            self._arrived.notify_all()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests recorded so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        """Waits until at least `count` requests were recorded; returns them (maybe fewer on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            return list(self._requests)

    def start(self) -> "DemoUpstream":
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"demo-upstream:{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- audit sink


class AuditSink:
    """POST /audit appends NDJSON to a file (optional) and keeps the lines in memory.

    Modes (set_mode): "ok" (200), "error" (500, body not stored). go_down() closes the listening
    socket (connections are refused) until come_up() reopens it on the same port.
    Control API (out-of-process): GET/DELETE /__requests (the upstream's record), GET /__audit.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, audit_file: str | None = None,
                 upstream: DemoUpstream | None = None, verbose: bool = False):
        self.host = host
        self.audit_file = audit_file
        self.upstream = upstream
        self.verbose = verbose
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._posts: list[dict] = []  # every POST /audit seen: {"status", "headers", "body"}
        self._lines: list[dict] = []  # parsed lines of accepted batches
        self._mode = "ok"
        self._fail_next = 0
        self.server = None
        self.port = port
        self._thread = None
        self._bind()

    # ---- in-process control
    def set_mode(self, mode: str) -> None:
        if mode not in ("ok", "error"):
            raise ValueError(mode)
        with self._lock:
            self._mode = mode

    def fail_next(self, n: int) -> None:
        """Answer the next `n` POST /audit with 500, then go back to the current mode."""
        with self._lock:
            self._fail_next = n

    def go_down(self) -> None:
        """Stop listening: new connections are refused."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def come_up(self) -> None:
        """Listen again on the same port."""
        if self.server is None:
            deadline = time.monotonic() + 5
            while True:
                try:
                    self._bind()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self.start()

    @property
    def is_up(self) -> bool:
        return self.server is not None

    @property
    def lines(self) -> list[dict]:
        with self._lock:
            return list(self._lines)

    @property
    def posts(self) -> list[dict]:
        with self._lock:
            return list(self._posts)

    def reset(self) -> None:
        with self._lock:
            self._lines.clear()
            self._posts.clear()
            self._mode = "ok"
            self._fail_next = 0
        if self.server is None:
            self.come_up()

    def wait_for_lines(self, count: int = 1, timeout: float = 5.0, predicate=None) -> list[dict]:
        """Waits until at least `count` lines (matching `predicate`, if given) arrived."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [l for l in self._lines if predicate is None or predicate(l)]
                left = deadline - time.monotonic()
                if len(got) >= count or left <= 0:
                    return got
                self._cond.wait(left)

    # ---- server
    def _bind(self) -> None:
        sink = self

        class Handler(_QuietHandler):
            def do_POST(self):  # noqa: N802
                body = _read_body(self)
                if sink.server is not self.server:
                    # Down (go_down), or a kept-alive connection from before it: answer nothing
                    # and close, as a dead host would. Otherwise a client's pooled connection
                    # would keep delivering through an outage.
                    self.close_connection = True
                    return
                if self.path.split("?", 1)[0] != "/audit":
                    _send_json(self, 404, {"error": "not found"})
                    return
                status = sink._accept(list(self.headers.items()), body)
                _send_json(self, status, {"ok": status == 200})

            def do_GET(self):  # noqa: N802
                _read_body(self)
                p = self.path.split("?", 1)[0]
                if p == "/__requests" and sink.upstream is not None:
                    _send_json(self, 200, [r.to_json() for r in sink.upstream.requests])
                elif p == "/__audit":
                    _send_json(self, 200, sink.lines)
                elif p == "/__health":
                    _send_json(self, 200, {"ok": True})
                else:
                    _send_json(self, 404, {"error": "not found"})

            def do_DELETE(self):  # noqa: N802
                _read_body(self)
                p = self.path.split("?", 1)[0]
                if p == "/__requests" and sink.upstream is not None:
                    sink.upstream.reset()
                    _send_json(self, 200, {"ok": True})
                elif p == "/__audit":
                    with sink._lock:
                        sink._lines.clear()
                        sink._posts.clear()
                    _send_json(self, 200, {"ok": True})
                else:
                    _send_json(self, 404, {"error": "not found"})

        Handler.verbose = self.verbose
        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def _accept(self, headers, body: bytes) -> int:
        with self._lock:
            if self._fail_next > 0:
                self._fail_next -= 1
                status = 500
            else:
                status = 200 if self._mode == "ok" else 500
            self._posts.append({"status": status, "headers": headers, "body": body})
            if status == 200:
                text = body.decode("utf-8", "replace")
                for line in text.splitlines():
                    if not line.strip():
                        continue
                    try:
                        self._lines.append(json.loads(line))
                    except ValueError:
                        self._lines.append({"__unparsed__": line})
                if self.audit_file:
                    with open(self.audit_file, "ab") as f:
                        f.write(body if body.endswith(b"\n") or not body else body + b"\n")
            self._cond.notify_all()
            return status

    def start(self) -> "AuditSink":
        server = self.server
        self._thread = threading.Thread(target=server.serve_forever, name=f"audit-sink:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.go_down()


class DemoServers:
    """Upstream + audit sink together (what the CLI runs)."""

    def __init__(self, upstream_port: int = 0, audit_port: int = 0, audit_file: str | None = None,
                 host: str = "127.0.0.1", identity_header: str = DEFAULT_IDENTITY_HEADER, verbose: bool = False):
        self.upstream = DemoUpstream(host, upstream_port, identity_header, verbose)
        self.sink = AuditSink(host, audit_port, audit_file, self.upstream, verbose)

    def start(self) -> "DemoServers":
        self.upstream.start()
        self.sink.start()
        return self

    def reset(self) -> None:
        self.upstream.reset()
        self.sink.reset()

    def stop(self) -> None:
        self.upstream.stop()
        self.sink.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="tokengate demo upstream (Jira stand-in) and audit sink")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--upstream-port", type=int, default=8081)
    ap.add_argument("--audit-port", type=int, default=8082)
    ap.add_argument("--audit-file", default=".run/audit.ndjson")
    ap.add_argument("--identity-header", default=DEFAULT_IDENTITY_HEADER)
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    if args.audit_file:
        d = os.path.dirname(args.audit_file)
        if d:
            os.makedirs(d, exist_ok=True)
    servers = DemoServers(args.upstream_port, args.audit_port, args.audit_file, args.host, args.identity_header,
                          args.verbose).start()
    print(f"demo upstream on http://{args.host}:{servers.upstream.port}  "
          f"audit sink on http://{args.host}:{servers.sink.port}/audit -> {args.audit_file}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    servers.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
