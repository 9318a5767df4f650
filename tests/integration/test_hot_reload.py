"""Hot token updates through a real Envoy: ECDS from a watched file (envoy/envoy-hot-reload.yaml).

The Envoy config is the shipped envoy/envoy.yaml (ports and wasm path rewritten by the harness)
turned into its hot-reload variant by the same function that generates envoy/envoy-hot-reload.yaml
(scripts/publish-tokens.py render), with the watched file in a temporary directory. Token sets
are published with the same code path as `scripts/publish-tokens.py publish` (temp file in the
watched directory, then rename).

Measured and written to .run/hot-reload-summary.json (and printed; `pytest -s` shows it):
publish-to-effect for 10 publishes (median, max) and the requests a client loop on an unchanged
token got served while the sets switched.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import statistics
import threading
import time

import pytest

import harness

_spec = importlib.util.spec_from_file_location("publish_tokens", os.path.join(harness.REPO, "scripts",
                                                                              "publish-tokens.py"))
publish_tokens = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(publish_tokens)

EFFECT_BOUND_S = 2.0
SUMMARY = os.path.join(harness.REPO, ".run", "hot-reload-summary.json")

TOKEN_A = harness.new_token()  # revoked by the switch
TOKEN_B = harness.new_token()  # added by the switch
TOKEN_C = harness.new_token()  # unchanged: the client loop uses it
TOKEN_D = harness.new_token()  # JsonData line: used for the in-flight request

PATH = "/rest/api/2/myself"


def token_entry(tid: str, token: str, **extra) -> dict:
    return {"id": tid, "name": f"token {tid}", "user": tid, "sha256": harness.sha256_hex(token), **extra}


def token_set(*, a: str = "active", b: bool = False, d_revoked: bool = False) -> dict:
    """The plugin config: the shipped one with this test's tokens. a: active|revoked|absent."""
    pc = harness.shipped_plugin_config()
    tokens = []
    if a != "absent":
        tokens.append(token_entry("a", TOKEN_A, revoked=(a == "revoked")))
    if b:
        tokens.append(token_entry("b", TOKEN_B))
    tokens.append(token_entry("c", TOKEN_C))
    tokens.append(token_entry("d", TOKEN_D, revoked=d_revoked,
                              limit_to=["[post]/rest/api/2/issue[JsonData::fields.project.key==KAN]"]))
    pc["tokens"] = tokens
    return pc


class HotEnvoy:
    """An Envoy (harness.Envoy, concurrency 2) whose tokengate filter comes from a watched file."""

    def __init__(self, workdir: str, demo, initial: dict):
        self.tokens_dir = os.path.join(workdir, "tokens")
        os.makedirs(self.tokens_dir, exist_ok=True)
        self.tokens_file = os.path.join(self.tokens_dir, "tokengate.json")
        self.env = harness.Envoy(workdir, demo.upstream.port, demo.sink.port, concurrency=2)
        # The harness wrote the static variant; keep its ports and wasm path, move the filter to ECDS.
        self.wasm = publish_tokens.wasm_filter_of(self.env.config)["typed_config"]
        hot = publish_tokens.render_hot_reload(self.env.config, self.tokens_file, self.tokens_dir)
        with open(self.env.config_path, "w") as f:
            json.dump(hot, f, indent=1)
        self.publish(initial)

    def publish(self, plugin_config: dict) -> dict:
        """What `publish-tokens.py publish` does after validation: resource file, temp + rename."""
        res = publish_tokens.resource_file(self.wasm, plugin_config)
        publish_tokens.write_atomically(self.tokens_file, publish_tokens.serialize(res))
        return res

    def publish_raw(self, data: bytes) -> None:
        publish_tokens.write_atomically(self.tokens_file, data)

    def ecds(self) -> dict:
        return publish_tokens.admin_stats(f"http://127.0.0.1:{self.env.admin_port}")

    def wait_ecds(self, key: str, above: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.ecds()
            if int(st.get(key, 0) or 0) > above:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"ECDS stat {key} did not pass {above} in {timeout}s: {st}\n"
                                     f"{self.env.log()[-3000:]}")
            time.sleep(0.05)


@pytest.fixture
def hot(demo, tmp_path):
    try:
        harness.require_artifacts()
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    h = HotEnvoy(str(tmp_path), demo, token_set())
    try:
        h.env.start()
    except harness.HarnessError as e:
        pytest.fail(f"Envoy did not start: {e}", pytrace=False)
    try:
        yield h
    finally:
        h.env.stop()


def status(env: harness.Envoy, token: str, user: str, timeout: float = 5.0) -> int:
    return env.request("GET", PATH, auth=(user, token), timeout=timeout).status


class ClientLoop(threading.Thread):
    """Calls with token C on new connections until stopped (bounded: at most `limit_s`)."""

    def __init__(self, env: harness.Envoy, limit_s: float = 180.0):
        super().__init__(name="token-c-loop", daemon=True)
        self.env = env
        self.stop_event = threading.Event()
        self.limit_s = limit_s
        self.results: list[tuple[float, object]] = []  # (monotonic time, status or error text)

    def run(self):
        deadline = time.monotonic() + self.limit_s
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            t = time.monotonic()
            try:
                r = self.env.request("GET", PATH, auth=("c", TOKEN_C), timeout=5)
                outcome = r.status if r.status != 200 or r.json().get("identity") == "c" else f"200 as {r.body!r}"
            except Exception as e:  # noqa: BLE001 - every failure counts
                outcome = f"{type(e).__name__}: {e}"
            self.results.append((t, outcome))

    def stop(self):
        self.stop_event.set()
        self.join(30)

    def between(self, t0: float, t1: float) -> list:
        return [o for (t, o) in self.results if t0 <= t <= t1]


def wait_effect(env: harness.Envoy, t0: float, expect: dict, confirm: int = 8, timeout: float = 10.0) -> float:
    """Probes until every (token, user) -> status in `expect` holds; returns seconds since t0 of the
    first probe round where all held, then checks `confirm` more rounds (new connections, so both
    workers answer) agree."""
    deadline = t0 + timeout
    while True:
        t = time.monotonic()
        got = {k: status(env, *k) for k in expect}
        if got == expect:
            effect = t - t0
            break
        if t > deadline:
            raise AssertionError(f"not in effect after {timeout}s: {got} != {expect}")
        time.sleep(0.005)
    for _ in range(confirm):
        got = {k: status(env, *k) for k in expect}
        assert got == expect, f"flapped after taking effect: {got} != {expect}"
    return effect


def test_revoke_and_add_while_serving(hot):
    env = hot.env
    old = {(TOKEN_A, "a"): 200, (TOKEN_B, "b"): 401}
    new = {(TOKEN_A, "a"): 401, (TOKEN_B, "b"): 200}
    assert wait_effect(env, time.monotonic(), old, timeout=5) < 5
    assert status(env, TOKEN_C, "c") == 200

    loop = ClientLoop(env)
    loop.start()
    try:
        time.sleep(0.3)  # the loop is running before the first switch
        switch_start = time.monotonic()
        effects = []
        for i in range(10):
            revoke = i % 2 == 0
            before = hot.ecds()
            t0 = time.monotonic()
            hot.publish(token_set(a="revoked", b=True) if revoke else token_set())
            effects.append(wait_effect(env, t0, new if revoke else old))
            hot.wait_ecds("update_success", int(before.get("update_success", 0)))
            if revoke:
                r = env.request("GET", PATH, auth=("a", TOKEN_A))
                harness.assert_jira_error(r, 401, "token revoked")
        switch_end = time.monotonic()

        # An invalid set (the filter refuses it: unknown field) is rejected; the last set serves on.
        before = hot.ecds()
        bad = token_set()
        bad["tokens"][0]["surprise"] = True
        hot.publish(bad)
        hot.wait_ecds("update_rejected", int(before.get("update_rejected", 0)))
        assert "configuration rejected" in env.log() and "surprise" in env.log()
        # A file that is not even JSON: a failed update, same outcome.
        hot.publish_raw(b'{"resources": [ {"name": "tokengate", ')
        hot.wait_ecds("update_failure", int(before.get("update_failure", 0)))
        bad_end = time.monotonic()
        wait_effect(env, bad_end, old, timeout=1)
        time.sleep(0.5)  # the loop keeps going on the old set for a while
    finally:
        loop.stop()
    end = time.monotonic()

    served_switching = loop.between(switch_start, switch_end)
    served_bad = loop.between(switch_end, end)
    failures = [o for (_, o) in loop.results if o != 200]
    summary = {
        "publishes": len(effects),
        "publish_to_effect_ms": [round(e * 1000, 1) for e in effects],
        "median_ms": round(statistics.median(effects) * 1000, 1),
        "max_ms": round(max(effects) * 1000, 1),
        "token_c_requests_during_switches": len(served_switching),
        "token_c_requests_during_invalid_sets": len(served_bad),
        "token_c_requests_total": len(loop.results),
        "token_c_failures": len(failures),
        "envoy_workers": env.concurrency,
    }
    os.makedirs(os.path.dirname(SUMMARY), exist_ok=True)
    with open(SUMMARY, "w") as f:
        json.dump(summary, f, indent=2)
    print("\nhot reload:", json.dumps(summary))

    assert not failures, f"token C failed {len(failures)} time(s): {failures[:10]}"
    assert len(served_switching) > 0 and len(served_bad) > 0, summary
    assert max(effects) < EFFECT_BOUND_S, summary
    # And the last good set (A active, B unknown) still serves after the invalid ones.
    assert status(env, TOKEN_C, "c") == 200


def test_request_in_flight_finishes_under_the_old_set(hot, demo):
    """A request whose body is still arriving when its token is revoked is decided under the set
    it started with (SPEC §14); the next request with that token is refused."""
    env = hot.env
    body = json.dumps({"fields": {"project": {"key": "KAN"}, "summary": "in flight"}}).encode()
    probe = json.dumps({"fields": {"project": {"key": "KAN"}, "summary": "probe"}}).encode()
    head = (f"POST /rest/api/2/issue HTTP/1.1\r\nHost: tokengate.test\r\n"
            f"Authorization: {harness.basic('d', TOKEN_D)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        s.sendall(head + body[:10])  # headers and part of the body: the filter holds the request
        time.sleep(0.2)
        hot.publish(token_set(d_revoked=True))
        t0 = time.monotonic()
        while True:  # the revocation is live for new requests...
            r = env.request("POST", "/rest/api/2/issue", auth=("d", TOKEN_D), body=probe,
                            headers={"Content-Type": "application/json"})
            if r.status == 401:
                harness.assert_jira_error(r, 401, "token revoked")
                break
            assert time.monotonic() - t0 < EFFECT_BOUND_S, f"revocation not live: {r!r}"
            time.sleep(0.01)
        s.sendall(body[10:])  # ...and the request in flight finishes under the set it started with
        resp = harness._read_response(s)
    assert resp.status == 200, resp
    assert resp.json()["identity"] == "d"
    got = [q for q in demo.upstream.requests if q.body == body]
    assert len(got) == 1, got


def test_start_with_invalid_watched_file_fails_closed(demo, tmp_path):
    """A token file the filter refuses at start-up: Envoy does not serve token requests unchecked."""
    harness.require_artifacts()
    h = HotEnvoy(str(tmp_path), demo, token_set())
    bad = token_set()
    bad["unknown_top_level"] = 1
    h.publish(bad)
    h.env.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 20
        outcome = None
        while time.monotonic() < deadline and outcome is None:
            if not h.env.running:
                outcome = "exited"
                break
            try:
                r = h.env.request("GET", PATH, auth=("c", TOKEN_C), timeout=2)
                outcome = r.status
            except (OSError, harness.HarnessError):
                time.sleep(0.1)
        assert outcome is not None, "Envoy neither exited nor answered"
        print(f"\nstart with a refused token file: {outcome}")
        assert outcome == "exited" or outcome >= 500, outcome
        assert not demo.upstream.requests, "a request reached the upstream without a token set"
    finally:
        h.env.stop()


def test_publish_tool_validates_and_writes_atomically(tmp_path, demo, capsys):
    """The CLI path: validation with Envoy's own loader refuses a bad set and leaves the file
    untouched; a good set is written in full (temp file + rename), nothing left behind."""
    harness.require_artifacts()
    h = HotEnvoy(str(tmp_path), demo, token_set())  # not started: only its files are used
    before = open(h.tokens_file, "rb").read()
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokens:\n  - id: x\n    sha256: " + "ab" * 32 + "\n    limit_to: ['[get]/rest/(?=x).*']\n")
    rc = publish_tokens.main(["publish", str(bad), "--to", h.tokens_file, "--validate", "envoy",
                              "--envoy", harness.envoy_bin()])
    assert rc == 1
    err = capsys.readouterr().err
    assert "Envoy refuses this token set" in err and "look-ahead" in err, err
    assert open(h.tokens_file, "rb").read() == before
    good = tmp_path / "good.json"
    good.write_text(json.dumps(token_set(a="revoked", b=True)))
    rc = publish_tokens.main(["publish", str(good), "--to", h.tokens_file, "--validate", "envoy",
                              "--envoy", harness.envoy_bin()])
    assert rc == 0
    doc = json.load(open(h.tokens_file))
    assert publish_tokens.plugin_config_from_input(doc) == token_set(a="revoked", b=True)
    # The wasm filter options come from the file it replaced (same wasm path, VM, failure policy).
    assert publish_tokens.wasm_of_resource_file(doc)["config"]["vm_config"] == h.wasm["config"]["vm_config"]
    assert sorted(os.listdir(h.tokens_dir)) == ["tokengate.json"]
