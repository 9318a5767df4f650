#!/usr/bin/env python3
"""`make bench` (second part) / `make bench-service`: the token service and the audit store.

Token service (SQLite; SPEC §15):
0. Time to effect on two Envoys at once (a small set): 10 creates (-> 200 on both) and
   10 revokes (-> 401 on both), from the API call.
1. API create rate: BENCH_API_TOKENS (1,000) tokens created one by one through POST /api/v1/tokens.
2. Scale: the store filled to BENCH_TOKENS (100,000) tokens (the rest written straight into the
   database, then one generation bump), an Envoy subscribed by ECDS: time from Envoy start to the
   whole set enforced, the configuration's size, the service's RSS.
3. Revoke-to-effect at that scale: BENCH_REVOKES (10) revokes, each timed from the API call to
   Envoy answering 401 "token revoked"; and request latency (p50/p99) on a second token while
   those pushes happen, against the same client loop with no push.

Audit store (SQLite and PostgreSQL; SPEC §16):
3b. Full load: one Envoy worker at saturation (hey) auditing into the service: requests/s,
   lines stored against requests allowed, lines dropped or batches failed at the Envoy.
4. Ingest: BENCH_AUDIT_LINES (10,000,000) lines in batches of 500 through POST /audit, four
   client threads: lines/s, database bytes per million lines.
5. Queries on that store: token + one-day range, user + decision; BENCH_QUERIES (200) each,
   p50/p99 (ms).

Prints a table and writes BENCHMARKS-service.md (BENCH_SERVICE_OUT). BENCH_SKIP_PG=1 skips the
PostgreSQL run, BENCH_SKIP_TOKENS=1 / BENCH_SKIP_AUDIT=1 skip a half. Every process it starts is
stopped by pid, also on failure.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "service"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import harness  # noqa: E402
import service  # noqa: E402
from service import Postgres, Server, service_envoy, wait_for  # noqa: E402

OUT = os.environ.get("BENCH_SERVICE_OUT") or os.path.join(REPO, "BENCHMARKS-service.md")
N_API = int(os.environ.get("BENCH_API_TOKENS", "1000"))
N_TOKENS = int(os.environ.get("BENCH_TOKENS", "100000"))
N_REVOKES = int(os.environ.get("BENCH_REVOKES", "10"))
N_LINES = int(os.environ.get("BENCH_AUDIT_LINES", "10000000"))
N_QUERIES = int(os.environ.get("BENCH_QUERIES", "200"))
BATCH = 500


def log(msg):
    print(f"bench-service: {msg}", file=sys.stderr, flush=True)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def metric(server, name):
    text = server.api("GET", "/metrics", key=None).body.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


# --------------------------------------------------------------------------- tokens


def bench_tokens(work: str, demo) -> dict:
    db_path = os.path.join(work, "tokens.db")
    srv = Server(os.path.join(work, "tokens"), f"sqlite://{db_path}")
    srv.start()
    env = None
    try:
        srv.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
        t0 = time.monotonic()
        for i in range(N_API):
            srv.create(name=f"api {i}", id=f"api-{i:06d}", user=f"u{i % 500}",
                       limit_to=["[get]/rest/api/2/issue/JRA-.*"])
        api_s = time.monotonic() - t0
        log(f"API: {N_API} tokens in {api_s:.1f} s")
        # The rest straight into the database, as a bulk import would: one generation bump.
        secrets = {}
        con = sqlite3.connect(db_path, timeout=30)
        now = int(time.time() * 1000)
        rows = []
        for i in range(N_API, N_TOKENS):
            s = f"tg_bench{i:032d}xx"
            if i in (N_API, N_API + 1) or i >= N_TOKENS - N_REVOKES:
                secrets[f"bulk-{i:06d}"] = s
            # No restriction line on these: each compiled line costs about 12 KB (regex), and
            # 100,000 of them exceed the wasm VM's memory (see BENCHMARKS-service.md).
            rows.append((f"bulk-{i:06d}", f"bulk {i}", f"u{i % 500}", hashlib.sha256(s.encode()).hexdigest(), now,
                         "bench", None, None, None, "[]", "[]", "[]"))
        con.executemany("INSERT INTO tokens (id, name, user_name, sha256, created_at, created_by, expires_at, "
                        "revoked_at, revoked_by, ips, run_as, limit_to) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        con.execute("UPDATE config_state SET generation = generation + 1 WHERE id = 1")
        con.commit()
        con.close()
        wait_for(lambda: (metric(srv, "tokengate_server_config_tokens") or 0) >= N_TOKENS, 60, 0.2,
                 "the service built the 100,000-token configuration")
        size = metric(srv, "tokengate_server_config_bytes")
        rss = rss_mib(srv.proc.pid)
        first = secrets[f"bulk-{N_API:06d}"]
        env = service_envoy(os.path.join(work, "envoy"), demo.upstream.port, srv, node_id="bench-envoy")
        t0 = time.monotonic()
        env.start(timeout=120)

        def ok(secret, path="/rest/api/2/issue/JRA-1"):  # noqa: E306
            return env.request("GET", path, headers={"Authorization": f"Bearer {secret}"}).status

        wait_for(lambda: ok(first) == 200, 120, 0.05, "the 100,000-token set enforced")
        load_s = time.monotonic() - t0
        log(f"Envoy start -> 100,000 tokens enforced in {load_s:.2f} s; config {size / 1e6:.1f} MB; RSS {rss:.0f} MiB")
        # Latency on a steady token with and without pushes.
        steady = secrets[f"bulk-{N_API + 1:06d}"]

        def loop(seconds):
            lat, end = [], time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.monotonic()
                assert ok(steady) == 200
                lat.append((time.monotonic() - t) * 1000)
            return lat

        quiet = loop(5)
        during, effects = [], []
        stop = threading.Event()

        def background():
            while not stop.is_set():
                t = time.monotonic()
                if ok(steady) != 200:
                    during.append(float("inf"))
                else:
                    during.append((time.monotonic() - t) * 1000)

        th = threading.Thread(target=background, daemon=True)
        th.start()
        for i in range(N_REVOKES):
            tid = f"bulk-{N_TOKENS - 1 - i:06d}"
            s = secrets[tid]
            t = time.monotonic()
            srv.ok("POST", f"/api/v1/tokens/{tid}/revoke")
            wait_for(lambda: ok(s) == 401, 30, 0.005, f"revoke of {tid} in effect")
            effects.append(time.monotonic() - t)
            time.sleep(0.5)
        stop.set()
        th.join(10)
        rss_after = rss_mib(srv.proc.pid)
        return {
            "api_rate": N_API / api_s, "api_s": api_s, "size": size, "rss": max(rss, rss_after),
            "load_s": load_s, "effects": effects, "quiet": quiet, "during": during,
        }
    finally:
        if env is not None:
            env.stop()
        srv.stop()


def bench_two_envoys(work: str, demo) -> dict:
    srv = Server(os.path.join(work, "two"), f"sqlite://{work}/two.db")
    srv.start()
    envs = []
    try:
        srv.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
        secrets = [srv.create(name=f"t{i}", id=f"t{i}", user="u")[1] for i in range(10)]
        for n in ("a", "b"):
            e = service_envoy(os.path.join(work, "two-" + n), demo.upstream.port, srv, node_id="two-" + n)
            e.start()
            envs.append(e)

        def st(e, s):
            return e.request("GET", "/rest/api/2/myself", headers={"Authorization": f"Bearer {s}"}).status

        wait_for(lambda: all(st(e, s) == 200 for e in envs for s in secrets), 20)
        create, revoke = [], []
        for i in range(10):
            t = time.monotonic()
            _, s = srv.create(name=f"n{i}", id=f"n{i}", user="u")
            wait_for(lambda: all(st(e, s) == 200 for e in envs), 5, 0.005)
            create.append(time.monotonic() - t)
            t = time.monotonic()
            srv.ok("POST", f"/api/v1/tokens/t{i}/revoke")
            wait_for(lambda: all(st(e, secrets[i]) == 401 for e in envs), 5, 0.005)
            revoke.append(time.monotonic() - t)
            time.sleep(0.3)
        return {"create": create, "revoke": revoke}
    finally:
        for e in envs:
            e.stop()
        srv.stop()


def bench_full_load(work: str, demo) -> dict:
    """One Envoy worker at full load (hey, 16 connections, 20 s, direct-response route) auditing
    into the service: does the receiver keep up (no line dropped or failed at the Envoy)?"""
    import subprocess
    srv = Server(os.path.join(work, "load"), f"sqlite://{work}/load.db")
    srv.start()
    env = None
    try:
        srv.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
        _, s = srv.create(name="load", id="load", user="u", limit_to=["[get]/rest/api/2/issue/JRA-.*"])

        def factory(lp, ap):
            cfg = service.service_envoy_config(listener_port=lp, admin_port=ap, upstream_port=demo.upstream.port,
                                               server=srv, node_id="load")
            hcm = harness._hcm(cfg)
            hcm["route_config"]["virtual_hosts"][0]["routes"] = [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
            hcm.pop("access_log", None)
            return cfg

        env = harness.Envoy(os.path.join(work, "load-envoy"), demo.upstream.port, 0, config_factory=factory)
        env.start()
        auth = f"Authorization: Bearer {s}"
        url = f"http://127.0.0.1:{env.port}/rest/api/2/issue/JRA-1"
        wait_for(lambda: env.request("GET", "/rest/api/2/issue/JRA-1", headers={"Authorization": f"Bearer {s}"}).status
                 == 200, 10)
        base = env.stat("tokengate.allowed")
        p = subprocess.run(["hey", "-z", "20s", "-c", "16", "-H", auth, url], capture_output=True, text=True)
        rps = next((float(l.split()[-1]) for l in p.stdout.splitlines() if "Requests/sec" in l), 0.0)
        time.sleep(5)
        allowed = env.stat("tokengate.allowed") - base
        stored = srv.ok("GET", "/api/v1/tokens/load")["usage"]["calls"] - 1  # less the warm-up call
        return {"rps": rps, "allowed": allowed, "stored": stored, "dropped": env.stat("tokengate.audit.dropped"),
                "failed": env.stat("tokengate.audit.failed")}
    finally:
        if env is not None:
            env.stop()
        srv.stop()


# --------------------------------------------------------------------------- audit


def batches(n_lines, seed=1):
    """NDJSON batch bodies: 1,000 tokens, 500 users, 30 days, 10% refused."""
    rnd = random.Random(seed)
    start = int(time.time() * 1000) - 30 * 86_400_000
    step = (30 * 86_400_000) // max(n_lines, 1)
    reasons = ["restricted", "unknown_token", "ip", "expired"]
    body = []
    for i in range(n_lines):
        tok = rnd.randrange(1000)
        allowed = rnd.random() >= 0.1
        ts = datetime.datetime.fromtimestamp((start + i * step) / 1000, datetime.timezone.utc)
        line = ('{"ts":"%s.%03dZ","request_id":"%08x-bench-%d","token_id":"tok-%d","token_name":"Token %d",'
                '"user":"user%d","acting_as":%s,"client_ip":"10.%d.%d.%d","method":"GET",'
                '"path":"/rest/api/2/issue/JRA-%d","query":["expand"],"decision":"%s","reason":"%s","rule":%s,'
                '"status":%d,"duration_ms":%d}\n') % (
            ts.strftime("%Y-%m-%dT%H:%M:%S"), ts.microsecond // 1000, i, seed, tok, tok, tok % 500,
            f'"user{tok % 500}"' if allowed else "null", tok % 256, (i >> 8) % 256, i % 256, i % 9000,
            "allow" if allowed else "deny", "ok" if allowed else reasons[i % 4], "1" if allowed else "null",
            200 if allowed else 403, rnd.randrange(5))
        body.append(line)
        if len(body) == BATCH:
            yield "".join(body)
            body = []
    if body:
        yield "".join(body)


def db_bytes(db_url, pg, path):
    if db_url.startswith("sqlite://"):
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    return int(pg.sql(db_url.rsplit("/", 1)[1], "SELECT pg_database_size(current_database())").strip())


def bench_audit(work: str, db_url: str, label: str, pg=None, path: str | None = None) -> dict:
    srv = Server(os.path.join(work, label), db_url)
    srv.start()
    try:
        cred = json.loads(srv.cli("export", "--format", "json").stdout)["audit"]["authorization"]
        gen = batches(N_LINES)
        lock = threading.Lock()
        errors, retries = [], []

        def worker(k):
            while True:
                with lock:
                    try:
                        body = next(gen)
                    except StopIteration:
                        return
                req = urllib.request.Request(srv.base + "/audit", data=body.encode(), method="POST", headers={
                    "Authorization": cred, "Content-Type": "application/x-ndjson",
                    "x-tokengate-batch": hashlib.sha256(body.encode()).hexdigest()[:32]})
                last = "not stored"
                # As the filter does: a refused attempt (503 while the database is busy) is
                # retried with backoff; retries are counted, only a batch never stored fails.
                for attempt in range(8):
                    try:
                        with urllib.request.urlopen(req, timeout=120) as r:
                            if r.status == 200:
                                break
                    except Exception as e:  # noqa: BLE001
                        last = str(e)
                    with lock:
                        retries.append(1)
                    time.sleep(0.25 * 2 ** attempt)
                else:
                    errors.append(last)

        t0 = time.monotonic()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        last = t0
        while any(t.is_alive() for t in threads):
            time.sleep(5)
            if time.monotonic() - last > 60:
                log(f"{label}: ingest running, {time.monotonic() - t0:.0f} s")
                last = time.monotonic()
        for t in threads:
            t.join()
        ingest_s = time.monotonic() - t0
        if errors:
            raise RuntimeError(f"{label}: {len(errors)} batch(es) failed: {errors[:3]}")
        size = db_bytes(db_url, pg, path)
        log(f"{label}: {N_LINES:,} lines in {ingest_s:.0f} s ({N_LINES / ingest_s:,.0f} lines/s), {size / 1e6:.0f} MB")
        rnd = random.Random(7)
        day = 86_400_000
        start = int(time.time() * 1000) - 30 * day

        def iso(ms):
            return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        def timed(path):
            t = time.monotonic()
            r = srv.api("GET", path)
            assert r.status == 200, r
            return (time.monotonic() - t) * 1000, len(r.json()["lines"])

        tok_lat, usr_lat, tok_n, usr_n = [], [], [], []
        for _ in range(N_QUERIES):
            a = start + rnd.randrange(29) * day
            ms, n = timed(f"/api/v1/audit?token=tok-{rnd.randrange(1000)}&from={iso(a)}&to={iso(a + day)}&limit=100")
            tok_lat.append(ms)
            tok_n.append(n)
            ms, n = timed(f"/api/v1/audit?user=user{rnd.randrange(500)}&decision=deny&limit=100")
            usr_lat.append(ms)
            usr_n.append(n)
        return {"label": label, "lines": N_LINES, "retries": len(retries), "ingest_s": ingest_s, "rate": N_LINES / ingest_s, "bytes": size,
                "tok": tok_lat, "usr": usr_lat, "tok_n": statistics.median(tok_n), "usr_n": statistics.median(usr_n)}
    finally:
        srv.stop()


# --------------------------------------------------------------------------- report


def report(tk, audits, two=None, load=None) -> str:
    L = ["# tokengate-server benchmarks", "",
         f"`make bench` (scripts/bench-service.py), {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
         f"{platform.node()}, {os.cpu_count()} cores, {os.path.relpath(service.SERVER_BIN, REPO)}.", ""]
    if two:
        f = lambda v: f"median {statistics.median(v) * 1000:.0f} ms, max {max(v) * 1000:.0f} ms"  # noqa: E731
        L += ["## Time to effect, two Envoys at once", "",
              "| change (10 each, from the API call) | in effect on both Envoys |", "|---|---|",
              f"| create → 200 | {f(two['create'])} |", f"| revoke → 401 | {f(two['revoke'])} |", ""]
    if tk:
        e = sorted(tk["effects"])
        L += ["## Token service (SQLite)", "",
              "| measure | value |", "|---|---|",
              f"| API create rate ({N_API} tokens, one client) | {tk['api_rate']:.0f} tokens/s |",
              f"| pushed configuration at {N_TOKENS:,} tokens | {tk['size'] / 1e6:.1f} MB |",
              f"| Envoy start → {N_TOKENS:,} tokens enforced | {tk['load_s']:.2f} s |",
              f"| revoke → 401 through Envoy at {N_TOKENS:,} tokens ({len(e)}×) | median {statistics.median(e) * 1000:.0f} ms, "
              f"max {max(e) * 1000:.0f} ms |",
              f"| request latency, no push (p50 / p99) | {pct(tk['quiet'], 50):.2f} / {pct(tk['quiet'], 99):.2f} ms |",
              f"| request latency during pushes (p50 / p99) | {pct(tk['during'], 50):.2f} / {pct(tk['during'], 99):.2f} ms |",
              f"| service RSS with {N_TOKENS:,} tokens | {tk['rss']:.0f} MiB |", ""]
    if load:
        L += ["## Audit at full load", "",
              "One Envoy worker, direct-response route, `hey -z 20s -c 16`, audit batches into the service (SQLite).", "",
              "| requests/s | allowed | lines stored | dropped at Envoy | failed batches |", "|---|---|---|---|---|",
              f"| {load['rps']:,.0f} | {load['allowed']:,} | {load['stored']:,} | {load['dropped']} | {load['failed']} |", ""]
    if audits:
        L += ["## Audit store", "", f"{N_LINES:,} lines (1,000 tokens, 500 users, 30 days, 10% refused), batches of {BATCH}, "
              "four client threads; queries with `limit=100`.", "",
              "| store | ingest | bytes per stored line (= MB per million) | token + 1 day (p50 / p99) | user + deny (p50 / p99) |",
              "|---|---|---|---|---|"]
        for a in audits:
            L.append(f"| {a['label']} | {a['rate']:,.0f} lines/s ({a['ingest_s']:.0f} s, {a['retries']} retried batches) | {a['bytes'] / N_LINES:.0f} | "
                     f"{pct(a['tok'], 50):.1f} / {pct(a['tok'], 99):.1f} ms "
                     f"({a['tok_n']:.0f} lines) | {pct(a['usr'], 50):.1f} / {pct(a['usr'], 99):.1f} ms ({a['usr_n']:.0f} lines) |")
        L.append("")
    return "\n".join(L)


def main() -> int:
    service.require_server()
    harness.require_artifacts()
    work = tempfile.mkdtemp(prefix="tokengate-bench-service-")
    demo = harness.demo_server.DemoServers(upstream_port=0, audit_port=0).start()
    pg = None
    try:
        two = None if os.environ.get("BENCH_SKIP_TOKENS") else bench_two_envoys(work, demo)
        tk = None if os.environ.get("BENCH_SKIP_TOKENS") else bench_tokens(work, demo)
        load = None if os.environ.get("BENCH_SKIP_AUDIT") or os.environ.get("BENCH_SKIP_LOAD") else bench_full_load(work, demo)
        audits = []
        if not os.environ.get("BENCH_SKIP_AUDIT"):
            path = os.path.join(work, "audit.db")
            if not os.environ.get("BENCH_SKIP_SQLITE"):
                audits.append(bench_audit(work, f"sqlite://{path}", "SQLite", path=path))
            if not os.environ.get("BENCH_SKIP_PG"):
                pg = Postgres().start()
                url = pg.create_db("tg_bench")
                audits.append(bench_audit(work, url, "PostgreSQL", pg=pg))
        text = report(tk, audits, two, load)
        print(text)
        with open(OUT, "w") as f:
            f.write(text + "\n")
        return 0
    finally:
        demo.stop()
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    sys.exit(main())
