"""Harness for the token service tests: tokengate-server, PostgreSQL and Envoys subscribed by
ECDS, all real processes on loopback, on free ports, stopped by pid even when a test fails.

* ``Server``: ``target/debug/tokengate-server`` (built by ``make server``) on a database URL.
* ``Postgres``: Debian's PostgreSQL server as the ``postgres`` user (its binaries refuse root)
  with a temporary data directory; one per test session.
* ``service_envoy``: the shipped ``envoy/envoy-service.yaml`` with ports, paths and the node id
  rewritten, run by the integration harness's ``Envoy`` class.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from harness import REPO, HarnessError, free_port  # noqa: E402

SERVER_BIN = os.environ.get("TOKENGATE_SERVER_BIN") or os.path.join(REPO, "target", "debug", "tokengate-server")
SERVICE_ENVOY_YAML = os.path.join(REPO, "envoy", "envoy-service.yaml")


def require_server() -> None:
    if not (os.path.isfile(SERVER_BIN) and os.access(SERVER_BIN, os.X_OK)):
        raise HarnessError(f"{SERVER_BIN} is missing: run `make server` (or `make test`)")


class ApiResponse:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class Server:
    """One tokengate-server process."""

    def __init__(self, workdir: str, db: str, *, wasm: str | None = None, listen_port: int | None = None,
                 xds_port: int | None = None, extra_args=(), env=None):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.db = db
        self.port = listen_port or free_port()
        self.xds_port = xds_port or free_port()
        self.wasm = wasm or harness.WASM_PATH
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(workdir, f"server-{self.port}.log")
        self.key: str | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args, input_text: str | None = None, check: bool = True, timeout: float = 30):
        require_server()
        p = subprocess.run([SERVER_BIN, "--db", self.db, *args], input=input_text, capture_output=True,
                           text=True, timeout=timeout, env={**os.environ, **self.env})
        if check and p.returncode != 0:
            raise HarnessError(f"tokengate-server {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p

    def admin_key(self, name: str = "admin") -> str:
        return self.cli("admin", "key", name).stdout.strip()

    def start(self, timeout: float = 20.0) -> "Server":
        require_server()
        self._log = open(self.log_path, "ab")
        argv = [SERVER_BIN, "--db", self.db, "--listen", f"127.0.0.1:{self.port}",
                "--xds", f"127.0.0.1:{self.xds_port}", "--wasm", self.wasm, *self.extra_args]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL,
                                     cwd=self.workdir, env={**os.environ, **self.env},
                                     preexec_fn=harness._die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"tokengate-server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        if self.key is None:
                            self.key = self.admin_key()
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise HarnessError(f"tokengate-server not healthy after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.kill(p.pid, sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout)
            except ProcessLookupError:
                pass
        fh = getattr(self, "_log", None)
        if fh is not None and not fh.closed:
            fh.close()

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def api(self, method: str, path: str, body=None, *, key: str | None = "default", headers=None,
            raw: bytes | None = None, timeout: float = 30) -> ApiResponse:
        h = dict(headers or {})
        if key == "default":
            key = self.key
        if key:
            h["Authorization"] = f"Bearer {key}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return ApiResponse(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return ApiResponse(e.code, e.headers, e.read())

    def ok(self, method: str, path: str, body=None, status: int = 200, **kw):
        r = self.api(method, path, body, **kw)
        if r.status != status:
            raise AssertionError(f"{method} {path}: expected {status}, got {r!r}")
        return r.json() if r.body else None

    def create(self, **fields) -> tuple[dict, str | None]:
        out = self.ok("POST", "/api/v1/tokens", fields, status=201)
        return out["token"], out.get("secret")


# --------------------------------------------------------------------------- PostgreSQL

PG_BIN = "/usr/lib/postgresql/15/bin"


def pg_bin(name: str) -> str:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin/" + name), reverse=True):
        return cand
    raise HarnessError(f"PostgreSQL's {name} is missing: run `make service-tools` "
                       "(apt-get install postgresql)")


class Postgres:
    """A private PostgreSQL server run as the `postgres` user, on a free loopback port."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tokengate-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.password = "tg-test-" + os.urandom(6).hex()

    def _as_pg(self, argv, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, **kw)

    def start(self) -> "Postgres":
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise HarnessError("no `postgres` user: run `make service-tools` (apt-get install postgresql)")
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password)
        shutil.chown(self.dir, "postgres")
        shutil.chown(pwfile, "postgres")
        p = self._as_pg([pg_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=scram-sha-256",
                         f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"], timeout=120)
        if p.returncode != 0:
            raise HarnessError(f"initdb failed: {p.stderr}")
        self._log = open(os.path.join(self.dir, "postgres.log"), "ab")
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", pg_bin("postgres"), "-D", self.data, "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
             "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL, preexec_fn=harness._die_with_parent)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"postgres exited: {open(os.path.join(self.dir, 'postgres.log')).read()[-3000:]}")
            r = subprocess.run([pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True)
            if r.returncode == 0:
                return self
            time.sleep(0.1)
        raise HarnessError("postgres did not get ready in 30 s")

    def url(self, db: str) -> str:
        return f"postgres://postgres:{self.password}@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        p = subprocess.run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
                           capture_output=True, text=True, env={**os.environ, "PGPASSWORD": self.password})
        if p.returncode != 0:
            raise HarnessError(f"createdb {name}: {p.stderr}")
        return self.url(name)

    def sql(self, db: str, statement: str) -> str:
        p = subprocess.run([pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                            "-Atc", statement], capture_output=True, text=True,
                           env={**os.environ, "PGPASSWORD": self.password})
        if p.returncode != 0:
            raise HarnessError(f"psql: {p.stderr}")
        return p.stdout

    def stop(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            # runuser forwards SIGTERM? It execs nothing: signal the server itself via its pid file.
            pid_file = os.path.join(self.data, "postmaster.pid")
            try:
                with open(pid_file) as f:
                    pg_pid = int(f.readline())
                os.kill(pg_pid, signal.SIGINT)  # fast shutdown
            except (OSError, ValueError):
                os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        fh = getattr(self, "_log", None)
        if fh is not None and not fh.closed:
            fh.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- Envoy on ECDS


def _cluster(cfg: dict, name: str) -> dict:
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == name:
            return c
    raise HarnessError(f"no cluster {name!r} in envoy-service.yaml")


def _set_port(cluster: dict, port: int) -> None:
    for ep in cluster["load_assignment"]["endpoints"]:
        for lb in ep["lb_endpoints"]:
            lb["endpoint"]["address"]["socket_address"]["port_value"] = port


def service_envoy_config(*, listener_port: int, admin_port: int, upstream_port: int, server: Server | None = None,
                         xds_port: int | None = None, audit_port: int | None = None, node_id: str = "envoy-1",
                         xds_tls: dict | None = None, native: bool = False) -> dict:
    with open(SERVICE_ENVOY_YAML) as f:
        cfg = yaml.safe_load(f)
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    cfg["node"]["id"] = node_id
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listener_port
    _set_port(_cluster(cfg, "upstream"), upstream_port)
    _set_port(_cluster(cfg, "tokengate_xds"), xds_port or (server.xds_port if server else free_port()))
    _set_port(_cluster(cfg, "tokengate_server"), audit_port or (server.port if server else free_port()))
    if xds_tls is not None:
        _cluster(cfg, "tokengate_xds")["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": "tokengate-server",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    **({"tls_certificates": [{
                        "certificate_chain": {"filename": xds_tls["cert"]},
                        "private_key": {"filename": xds_tls["key"]},
                    }]} if xds_tls.get("cert") else {}),
                    "validation_context": {
                        "trusted_ca": {"filename": xds_tls["ca"]},
                        "match_typed_subject_alt_names": [{
                            "san_type": "DNS", "matcher": {"exact": "tokengate-server"}}],
                    },
                },
            },
        }
    hcm = harness._hcm(cfg)
    for flt in hcm["http_filters"]:
        cd = flt.get("config_discovery")
        if not cd:
            continue
        dc = cd["default_config"]
        if native:
            # The native build (SPEC §18): the service pushes it with --native-module.
            cd["type_urls"] = [harness.NATIVE_FILTER_TYPE]
            cd["default_config"] = {
                "@type": harness.NATIVE_FILTER_TYPE,
                "dynamic_module_config": {"name": harness.NATIVE_MODULE_NAME, "do_not_close": True},
                "filter_name": "tokengate",
                "filter_config": dc["config"]["configuration"],
            }
        else:
            dc["config"]["vm_config"]["code"]["local"]["filename"] = harness.WASM_PATH
    return cfg


def service_envoy(workdir: str, upstream_port: int, server: Server | None = None, **kw) -> harness.Envoy:
    """An Envoy (not started) subscribed to `server` by ECDS."""
    def factory(listener_port, admin_port):
        return service_envoy_config(listener_port=listener_port, admin_port=admin_port,
                                    upstream_port=upstream_port, server=server, **kw)
    return harness.Envoy(workdir, upstream_port, 0, config_factory=factory)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"):
    """Polls until predicate() is truthy; returns (value, seconds waited)."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        last = predicate()
        if last:
            return last, time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def acked(envoy: harness.Envoy, version: str) -> bool:
    """Whether Envoy's ECDS config for tokengate is at `version` (from its config dump)."""
    try:
        dump = json.loads(envoy.admin("/config_dump?resource=ecds_filters"))
    except Exception:  # noqa: BLE001
        return False
    for c in dump.get("configs", []):
        if c.get("ecds_filter", {}).get("name") == "tokengate" and c.get("version_info") == version:
            return True
    return False
