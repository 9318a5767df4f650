"""The shipped docker-compose.yml, run for real (`make compose-test`, scripts/compose-test.sh:
a private Docker engine with stand-in images under the official names).

The module brings the stack up itself (`up -d --no-build`, published on free host ports) and
takes it down at the end, volumes included: Envoy (ECDS from the service), tokengate-server on
SQLite in the tokengate-data volume (later on PostgreSQL, profile `postgres`), the demo
upstream. The service forwards its audit lines (--audit-forward) to the demo's own audit sink
(upstream:8083), which stands in for the Vector profile's pipeline. The tests run in order:
each builds on the stack the earlier ones left.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import harness  # noqa: E402

REPO = harness.REPO
DOCKER = os.environ.get("TOKENGATE_COMPOSE_DOCKER", "docker")
COMPOSE = shlex.split(os.environ.get("COMPOSE", "docker-compose"))
PROJECT = os.environ.get("COMPOSE_PROJECT_NAME", "tokengate-compose-test")
PG_URL = "postgres://tokengate:tokengate@postgres:5432/tokengate"

if not os.environ.get("DOCKER_HOST"):
    pytest.fail("tests/compose runs in `make compose-test` (DOCKER_HOST names its private engine)",
                pytrace=False)

PORTS = {"TOKENGATE_HTTP_PORT": harness.free_port(), "TOKENGATE_ENVOY_ADMIN_PORT": harness.free_port(),
         "TOKENGATE_API_PORT": harness.free_port()}
ENV = {**os.environ, **{k: str(v) for k, v in PORTS.items()}, "COMPOSE_PROJECT_NAME": PROJECT,
       "TOKENGATE_AUDIT_FORWARD": "http://upstream:8083/audit"}


def compose(*args: str, env: dict | None = None, check: bool = True, timeout: float = 300,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(COMPOSE + ["-f", os.path.join(REPO, "docker-compose.yml"), *args], cwd=REPO,
                       env=env or ENV, capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(COMPOSE)} {' '.join(args)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p


def docker(*args: str, check: bool = True) -> str:
    p = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p.stdout


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s: {what}")
        time.sleep(interval)


def http(method: str, port: int, path: str, body=None, headers=None, timeout: float = 5.0):
    """(status, parsed JSON or text); (None, error) when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={**({"content-type": "application/json"} if data else {}),
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except OSError as e:
        return None, str(e)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class Stack:
    key: str = ""

    def api(self, method: str, path: str, body=None):
        return http(method, PORTS["TOKENGATE_API_PORT"], path, body,
                    {"authorization": f"Bearer {self.key}"})

    def client(self) -> harness.RawClient:
        return harness.RawClient("127.0.0.1", PORTS["TOKENGATE_HTTP_PORT"])

    def get(self, path: str, token: str, user: str = "demo") -> harness.Response:
        return self.client().request("GET", path, auth=(user, token))

    def healthy(self) -> bool:
        return http("GET", PORTS["TOKENGATE_API_PORT"], "/healthz")[0] == 200

    def envoy_ready(self) -> bool:
        return http("GET", PORTS["TOKENGATE_ENVOY_ADMIN_PORT"], "/ready")[0] == 200

    def wait_up(self, timeout: float = 90) -> None:
        wait_for(self.envoy_ready, timeout, "Envoy /ready (docker-compose logs envoy)")
        wait_for(self.healthy, timeout, "tokengate-server /healthz (docker-compose logs tokengate-server)")

    def new_key(self) -> str:
        p = compose("exec", "-T", "tokengate-server", "tokengate-server", "admin", "key", "compose-test")
        key = p.stdout.strip()
        assert key.startswith("tga_") and "\n" not in key, p.stdout
        return key

    def create(self, **fields) -> tuple[dict, str]:
        status, body = self.api("POST", "/api/v1/tokens", {"name": "compose", "user": "demo", **fields})
        assert status == 201, body
        return body["token"], body["secret"]

    def wait_allowed(self, token: str, timeout: float = 2.0) -> float:
        t = time.monotonic()
        wait_for(lambda: self.get("/rest/api/2/myself", token).status == 200, timeout,
                 "the new token is not allowed through Envoy")
        return time.monotonic() - t

    def audit(self, **q) -> list:
        query = "&".join(f"{k}={v}" for k, v in q.items())
        status, body = self.api("GET", f"/api/v1/audit?{query}")
        assert status == 200, body
        return body["lines"]

    def forwarded(self) -> list:
        """The lines the service re-sent to the demo's audit sink (upstream:8083)."""
        p = compose("exec", "-T", "upstream", "python", "-c",
                    "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8083/__audit').read().decode())")
        return json.loads(p.stdout)

    def container(self, service: str) -> str:
        return compose("ps", "-q", service).stdout.strip()

    def resources(self) -> dict:
        label = f"label=com.docker.compose.project={PROJECT}"
        return {"containers": docker("ps", "-a", "-q", "--filter", label).split(),
                "networks": docker("network", "ls", "-q", "--filter", label).split(),
                "volumes": docker("volume", "ls", "-q", "--filter", label).split()}


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    compose("down", "-v", "--remove-orphans", check=False)
    compose("up", "-d", "--no-build")
    try:
        s.wait_up()
        s.key = s.new_key()
        yield s
    finally:
        for svc in ("envoy", "tokengate-server"):
            logs = compose("logs", "--no-color", "--tail", "30", svc, check=False).stdout
            print(f"---- {svc} (last lines)\n{logs}")
        compose("--profile", "postgres", "down", "-v", "--remove-orphans", check=False)


def test_images_and_containers(stack):
    cfg = compose("config").stdout
    assert "image: envoyproxy/envoy:v1.40.0" in cfg and "image: tokengate/tokengate-server:0.1.0" in cfg
    out = compose("exec", "-T", "envoy", "envoy", "--version").stdout
    assert "1.40.0" in out, out
    # The service: not root, its database on the volume, healthy by its own HEALTHCHECK.
    assert compose("exec", "-T", "tokengate-server", "id", "-u").stdout.strip() != "0"
    cid = stack.container("tokengate-server")
    wait_for(lambda: docker("inspect", "-f", "{{.State.Health.Status}}", cid).strip() == "healthy", 60,
             "the tokengate-server container is not healthy (HEALTHCHECK /healthz)", interval=1)
    mounts = json.loads(docker("inspect", "-f", "{{json .Mounts}}", cid))
    assert [(m["Type"], m["Destination"]) for m in mounts] == [("volume", "/var/lib/tokengate")], mounts
    ls = compose("exec", "-T", "tokengate-server", "ls", "/var/lib/tokengate").stdout.split()
    assert "tokengate.db" in ls, ls
    # Envoy subscribed by ECDS: the fleet lists it with the version the service sends.
    status, cfg = stack.api("GET", "/api/v1/config")
    assert status == 200
    wait_for(lambda: any(n["acked_version"] == cfg["version"] for n in stack.api("GET", "/api/v1/fleet")[1]["nodes"]),
             5, "Envoy did not ACK the service's configuration")


def test_token_from_the_api_works_through_envoy_and_revoke_takes_under_2s(stack):
    token, secret = stack.create(name="compose-api")
    took = stack.wait_allowed(secret)
    r = stack.get("/rest/api/2/myself", secret)
    assert r.json()["identity"] == "demo", r
    # A token the service never pushed: refused by Envoy.
    harness.assert_jira_error(stack.get("/rest/api/2/myself", harness.new_token()), 401, "unknown token")
    # The identity header from a client is stripped.
    r = stack.client().request("GET", "/rest/api/2/myself", headers={"X-Forwarded-User": "admin"})
    assert r.status == 200 and r.json()["identity"] is None
    status, _ = stack.api("POST", f"/api/v1/tokens/{token['id']}/revoke")
    assert status == 200
    t = time.monotonic()
    wait_for(lambda: stack.get("/rest/api/2/myself", secret).status == 401, 2.0, "revoked token still allowed after 2 s",
             interval=0.02)
    harness.assert_jira_error(stack.get("/rest/api/2/myself", secret), 401, "token revoked")
    print(f"create -> allowed {took:.2f} s, revoke -> 401 {time.monotonic() - t:.2f} s")


def test_audit_lines_reach_the_store_and_the_forward(stack):
    token, secret = stack.create(name="compose-audit")
    stack.wait_allowed(secret)
    path = f"/rest/api/2/issue/COMPOSE-{secrets.token_hex(4)}"
    assert stack.get(path, secret).status == 200
    lines = wait_for(lambda: [x for x in stack.audit(token=token["id"]) if x.get("path") == path], 20,
                     f"no audit line for {path} in GET /api/v1/audit")
    (line,) = lines
    assert line["decision"] == "allow" and line["status"] == 200 and line["user"] == "demo", line
    wait_for(lambda: [x for x in stack.forwarded() if x.get("path") == path], 20,
             f"the line for {path} was not forwarded to --audit-forward")
    status, got = stack.api("GET", f"/api/v1/tokens/{token['id']}")
    assert status == 200 and got["usage"]["allowed"] >= 1, got


def test_service_restart_loses_nothing(stack):
    token, secret = stack.create(name="compose-restart")
    revoked, revoked_secret = stack.create(name="compose-restart-revoked")
    stack.wait_allowed(secret)
    stack.wait_allowed(revoked_secret)
    assert stack.api("POST", f"/api/v1/tokens/{revoked['id']}/revoke")[0] == 200
    wait_for(lambda: stack.get("/rest/api/2/myself", revoked_secret).status == 401, 2.0, "revoke")
    compose("stop", "tokengate-server")
    assert not stack.healthy()
    # Envoy keeps enforcing the last configuration while the service is away.
    tag = secrets.token_hex(4)
    sent = []
    for i in range(5):
        path = f"/rest/api/2/issue/DOWN-{tag}-{i}"
        r = stack.get(path, secret)
        assert r.status == 200, r
        sent.append(path)
        harness.assert_jira_error(stack.get(path + "-revoked", revoked_secret), 401, "token revoked")
        harness.assert_jira_error(stack.get(path + "-unknown", harness.new_token()), 401, "unknown token")
        time.sleep(0.3)
    compose("start", "tokengate-server")
    wait_for(stack.healthy, 60, "tokengate-server /healthz after the restart")
    # Tokens persist on the volume; the admin key too.
    status, got = stack.api("GET", f"/api/v1/tokens/{token['id']}")
    assert status == 200 and got["status"] == "active", got
    assert stack.api("GET", f"/api/v1/tokens/{revoked['id']}")[1]["status"] == "revoked"
    # Lines sent while the service was away arrive (the filter retries its batches).
    wait_for(lambda: {x["path"] for x in stack.audit(token=token["id"], limit=100)} >= set(sent), 30,
             "audit lines sent during the restart did not arrive")
    wait_for(lambda: len([x for x in stack.audit(token=revoked["id"], limit=100) if tag in x["path"]]) == 5, 30,
             "refusals during the restart did not arrive")
    # Envoy re-subscribed: a change made after the restart is enforced.
    _, fresh = stack.create(name="compose-after-restart")
    stack.wait_allowed(fresh)


def test_postgres_profile(stack):
    env = {**ENV, "TOKENGATE_DB": PG_URL}
    compose("--profile", "postgres", "up", "-d", "--no-build", env=env)
    wait_for(lambda: compose("--profile", "postgres", "ps", "-q", "postgres", env=env).stdout.strip(), 30,
             "postgres container")
    pg = compose("--profile", "postgres", "ps", "-q", "postgres", env=env).stdout.strip()
    wait_for(lambda: docker("inspect", "-f", "{{.State.Health.Status}}", pg).strip() == "healthy", 90,
             "postgres is not healthy", interval=1)
    wait_for(stack.healthy, 90, "tokengate-server on PostgreSQL /healthz")
    db = compose("exec", "-T", "tokengate-server", "printenv", "TOKENGATE_DB", env=env).stdout.strip()
    assert db == PG_URL
    p = compose("exec", "-T", "tokengate-server", "tokengate-server", "admin", "key", "compose-pg", env=env)
    stack.key = p.stdout.strip()
    assert stack.key.startswith("tga_")
    token, secret = stack.create(name="compose-pg")
    stack.wait_allowed(secret, timeout=5)  # Envoy re-subscribes to the recreated service first
    path = f"/rest/api/2/issue/PG-{secrets.token_hex(4)}"
    assert stack.get(path, secret).status == 200
    wait_for(lambda: [x for x in stack.audit(token=token["id"]) if x.get("path") == path], 20,
             "no audit line in the PostgreSQL store")
    rows = compose("--profile", "postgres", "exec", "-T", "postgres", "psql", "-U", "tokengate", "-d", "tokengate",
                   "-tAc", f"select count(*) from tokens where id = '{token['id']}'", env=env).stdout.strip()
    assert rows == "1", rows
    # Back to SQLite: the service is recreated on its volume, the earlier tokens still there.
    compose("--profile", "postgres", "stop", "postgres", env=env)
    compose("up", "-d", "--no-build")
    wait_for(stack.healthy, 60, "tokengate-server back on SQLite")
    stack.key = stack.new_key()
    assert stack.api("GET", f"/api/v1/tokens/{token['id']}")[0] == 404  # that one lives in PostgreSQL
    assert any(t["name"] == "compose-restart" for t in stack.api("GET", "/api/v1/tokens?limit=100")[1]["tokens"])


def test_down_keeps_only_the_volumes_and_down_v_leaves_nothing(stack):
    _, secret = stack.create(name="compose-down")
    stack.wait_allowed(secret)
    compose("--profile", "postgres", "down", "--remove-orphans")
    left = stack.resources()
    assert left["containers"] == [] and left["networks"] == [], left
    assert sorted(v.split("_", 1)[1] for v in left["volumes"]) == ["tokengate-data", "tokengate-postgres"], left
    # Up again: the tokens were on the volume.
    compose("up", "-d", "--no-build")
    stack.wait_up()
    stack.wait_allowed(secret, timeout=10)
    compose("--profile", "postgres", "down", "-v", "--remove-orphans")
    assert stack.resources() == {"containers": [], "networks": [], "volumes": []}
