"""Running the service (SPEC §15): migration from the original app, export for Istio and plain
Envoy, no secret at rest, two instances on one PostgreSQL, xDS over TLS with client certificates."""

import glob
import json
import os
import subprocess
import time

import pytest
import yaml

import harness
import service
from harness import REPO, assert_jira_error
from service import Server, service_envoy, wait_for

TOKENCTL = os.path.join(REPO, "target", "debug", "tokenctl")
ISSUE = "/rest/api/2/issue/JRA-1"


def bearer(env, secret, path=ISSUE):
    return env.request("GET", path, headers={"Authorization": f"Bearer {secret}"}).status


def test_tokenctl_import_moves_the_original_apps_tokens_over(server, envoy_for, tmp_path, demo):
    server.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    legacy = [
        {"label": "Ansible", "user": "ansible@jira.pl", "token": "token0987654321",
         "limitTo": "[get].*/rest/api/2/issue/JRA.*<br>[post].*/rest/api/2/issue/KANBAN-100/comment.*",
         "ip": "127.0.0.1", "validUntil": int((time.time() + 86400 * 30) * 1000)},
        {"label": "Old bearer", "user": "admin", "token": "qt3sumg4gd8r47n98tcnmuarnfufviog", "validUntil": 0},
        {"label": "Expired one", "user": "bob", "token": "expired-legacy-token", "validUntil": 1_600_000_000_000},
    ]
    f = tmp_path / "tokens.json"
    f.write_text(json.dumps(legacy))
    env_vars = {**os.environ, "TOKENGATE_ADMIN_KEY": server.key}
    p = subprocess.run([TOKENCTL, "import", str(f), "--server", server.base], capture_output=True, text=True,
                       env=env_vars, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["imported ansible", "imported old-bearer", "imported expired-one"]
    for t in legacy:
        assert t["token"] not in p.stdout + p.stderr
    again = subprocess.run([TOKENCTL, "import", str(f), "--server", server.base], capture_output=True, text=True,
                           env=env_vars, timeout=30)
    assert again.returncode == 0 and [l.split()[0] for l in again.stdout.splitlines()] == ["exists"] * 3
    toks = {t["id"]: t for t in server.ok("GET", "/api/v1/tokens")["tokens"]}
    assert toks["ansible"]["limit_to"][1] == "[post].*/rest/api/2/issue/KANBAN-100/comment.*"
    assert toks["ansible"]["ips"] == ["127.0.0.1"] and toks["expired-one"]["status"] == "expired"
    env = envoy_for(server, "envoy-import")
    # The scripts keep working with the secrets they have. (Until the first push a legacy secret,
    # having no tg_ prefix, goes to the app's own authentication like any password.)
    wait_for(lambda: env.request("GET", "/rest/api/2/project", auth=("ansible@jira.pl", "token0987654321")).status
             == 403, 5, what="imported lines enforced")
    demo.reset()
    assert env.request("GET", ISSUE, auth=("ansible@jira.pl", "token0987654321")).status == 200
    assert demo.upstream.wait_for(1)[-1].header("x-forwarded-user") == "ansible@jira.pl"
    assert bearer(env, "qt3sumg4gd8r47n98tcnmuarnfufviog") == 200
    assert_jira_error(env.request("GET", ISSUE, auth=("bob", "expired-legacy-token")), 401, "token expired")
    # Without --server: plugin-config entries, digests only.
    p = subprocess.run([TOKENCTL, "import", str(f)], capture_output=True, text=True, timeout=30)
    out = json.loads(p.stdout)
    assert [t["id"] for t in out["tokens"]] == ["ansible", "old-bearer", "expired-one"]
    assert all("token" not in t and len(t["sha256"]) == 64 for t in out["tokens"])
    bad = tmp_path / "bad.json"
    bad.write_text('[{"label": "x"}]')
    p = subprocess.run([TOKENCTL, "import", str(bad)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "entry 0: `token`" in p.stderr


def test_export_for_istio_and_for_plain_envoy(server, tmp_path, demo):
    server.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    _, secret = server.create(name="exported", user="eve", limit_to=["[get]/rest/api/2/.*"])
    wp = server.cli("export", "--format", "wasmplugin", "--url", "oci://registry.local/tokengate:1").stdout
    assert secret not in wp
    doc = yaml.safe_load(wp)
    assert doc["kind"] == "WasmPlugin" and doc["apiVersion"] == "extensions.istio.io/v1alpha1"
    assert doc["spec"]["phase"] == "AUTHN" and doc["spec"]["url"] == "oci://registry.local/tokengate:1"
    pc = doc["spec"]["pluginConfig"]
    assert [t["id"] for t in pc["tokens"]] == ["exported"] and pc["auth_methods"] == "both"
    # The same configuration loads in the filter: plain Envoy with the exported filter entry.
    entry = yaml.safe_load(server.cli("export", "--format", "envoy", "--url", harness.WASM_PATH).stdout)
    port, admin = service.free_port(), service.free_port()
    cfg = harness.generate_config(listener_port=port, admin_port=admin, upstream_port=demo.upstream.port,
                                  audit_port=service.free_port())
    hcm = harness._hcm(cfg)
    hcm["http_filters"] = entry + [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
    env = harness.Envoy(str(tmp_path / "exported"), demo.upstream.port, 0, config_factory=lambda a, b: {
        **cfg, "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": b}}},
        "static_resources": {**cfg["static_resources"], "listeners": [
            {**cfg["static_resources"]["listeners"][0],
             "address": {"socket_address": {"address": "127.0.0.1", "port_value": a}}}]}})
    try:
        env.start()
        assert bearer(env, secret, "/rest/api/2/issue/X-1") == 200
        assert bearer(env, secret, "/rest/api/2/issue/X-1") == 200
        assert env.request("POST", "/rest/api/2/issue", headers={"Authorization": f"Bearer {secret}"}).status == 403
    finally:
        env.stop()


def test_no_secret_at_rest(db_url, tmp_path, started, envoy_for, request):
    """The secret's bytes are in no database file and no log after creation (nor an admin's
    password or API key)."""
    srv = started(Server(str(tmp_path / "s"), db_url)).start()
    srv.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    _, secret = srv.create(name="secret check", user="zoe")
    pw = "a password nobody stores"
    srv.cli("admin", "add", "zoe-admin", input_text=pw + "\n")
    key = srv.admin_key("other")
    env = envoy_for(srv, "envoy-rest")
    wait_for(lambda: bearer(env, secret) == 200, 5)
    env.request("GET", ISSUE, auth=("zoe", secret))
    time.sleep(1.5)  # audit lines stored
    srv.stop()
    files = glob.glob(os.path.join(srv.workdir, "*.log")) + [env.log_path, env.stdout_path]
    if db_url.startswith("sqlite://"):
        files += glob.glob(db_url[len("sqlite://"):] + "*")
    else:
        pg = request.getfixturevalue("pg")
        pg.sql("postgres", "CHECKPOINT")
        files += [f for f in glob.glob(os.path.join(pg.data, "**", "*"), recursive=True) if os.path.isfile(f)]
    assert len(files) > 3
    needles = [secret.encode(), secret[3:].encode(), pw.encode(), key.encode(), key[4:].encode()]
    for path in files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        for n in needles:
            assert n not in data, f"secret material in {path}"


def test_two_instances_on_one_postgres_both_push(pg, tmp_path, started, envoy_for):
    url = pg.create_db("tg_two")
    a = started(Server(str(tmp_path / "a"), url)).start()
    b = started(Server(str(tmp_path / "b"), url)).start()
    a.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    ea = envoy_for(a, "envoy-on-a")
    eb = envoy_for(b, "envoy-on-b")
    _, s1 = a.create(name="made on a", user="u1")
    wait_for(lambda: bearer(ea, s1) == 200 and bearer(eb, s1) == 200, 3, what="change on A reaches both")
    t2, s2 = b.create(name="made on b", user="u2")
    wait_for(lambda: bearer(ea, s2) == 200 and bearer(eb, s2) == 200, 3, what="change on B reaches both")
    a.ok("POST", f"/api/v1/tokens/{t2['id']}/revoke")
    wait_for(lambda: bearer(ea, s2) == 401 and bearer(eb, s2) == 401, 3, what="revoke on A reaches B's Envoy")
    time.sleep(0.5)
    fleet = b.ok("GET", "/api/v1/fleet")
    nodes = {n["node_id"]: n for n in fleet["nodes"]}
    assert set(nodes) == {"envoy-on-a", "envoy-on-b"} and nodes["envoy-on-a"]["instance"] != nodes["envoy-on-b"]["instance"]
    assert all(n["acked_version"] == fleet["version"] and n["connected"] for n in nodes.values()), nodes
    assert a.ok("GET", "/api/v1/config")["version"] == fleet["version"]


def _certs(d):
    """A CA, a server certificate for `tokengate-server` and a client certificate, by openssl."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=tokengate test CA")
    for name, ext in (("server", "subjectAltName=DNS:tokengate-server\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {k: os.path.join(d, v) for k, v in
            (("ca", "ca.pem"), ("cert", "client.pem"), ("key", "client.key"), ("server_cert", "server.pem"),
             ("server_key", "server.key"))}


def test_xds_over_tls_with_client_certificates(tmp_path, started, demo):
    d = tmp_path / "pki"
    d.mkdir()
    c = _certs(str(d))
    srv = started(Server(str(tmp_path / "s"), f"sqlite://{tmp_path}/tls.db",
                         extra_args=["--xds-tls-cert", c["server_cert"], "--xds-tls-key", c["server_key"],
                                     "--xds-client-ca", c["ca"]])).start()
    srv.ok("PUT", "/api/v1/settings", {"auth_methods": "both"})
    _, secret = srv.create(name="over tls", user="tls-user")
    good = started(service_envoy(str(tmp_path / "good"), demo.upstream.port, srv, node_id="envoy-tls",
                                 xds_tls={"ca": c["ca"], "cert": c["cert"], "key": c["key"]})).start()
    wait_for(lambda: bearer(good, secret) == 200, 10, what="config over TLS")
    # Without a client certificate the handshake fails: that Envoy never gets a token.
    anon = started(service_envoy(str(tmp_path / "anon"), demo.upstream.port, srv, node_id="envoy-anon",
                                 xds_tls={"ca": c["ca"]})).start()
    time.sleep(3)
    assert_jira_error(anon.request("GET", ISSUE, headers={"Authorization": f"Bearer {secret}"}), 401, "unknown token")
    assert [n["node_id"] for n in srv.ok("GET", "/api/v1/fleet")["nodes"]] == ["envoy-tls"]
    # And a plaintext client cannot speak to the TLS port.
    plain = started(service_envoy(str(tmp_path / "plain"), demo.upstream.port, srv, node_id="envoy-plain")).start()
    time.sleep(2)
    assert bearer(plain, secret) == 401
