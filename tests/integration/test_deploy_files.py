"""The deployment files parse, agree with each other and reference files that exist.

Without a Docker engine (`make compose-test` runs the stack for real): docker-compose.yml and
server/Dockerfile are checked with a compose parser (`docker compose config` or Debian's
docker-compose; `make deploy-tools` installs it) and by reading them, the Envoy configs and every
plugin configuration shipped in deploy/ are loaded by Envoy's own validator (which runs the
filter's on_configure), the OCI layout is read back by skopeo when it is installed.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest
import yaml

import harness

REPO = harness.REPO


def _load_script(name: str, filename: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", filename))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


publish_tokens = _load_script("publish_tokens", "publish-tokens.py")
oci_image = _load_script("oci_image", "oci-image.py")


def compose_cmd() -> list:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("no compose parser: run `make deploy-tools` (installs Debian's docker-compose)", pytrace=False)


def compose_config(env: dict | None = None) -> dict:
    proc = subprocess.run(compose_cmd() + ["-f", "docker-compose.yml", "config"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def envoy_validate(path: str) -> None:
    harness.require_artifacts()
    proc = subprocess.run([harness.envoy_bin(), "--mode", "validate", "-c", path, "-l", "error"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{path}: {proc.stdout}{proc.stderr}"


def validate_plugin_config(plugin_config) -> None:
    """The filter's own loader (through Envoy's validate mode) accepts this plugin config."""
    harness.require_artifacts()
    wasm = publish_tokens.shipped_wasm()
    wasm["config"]["vm_config"]["code"]["local"]["filename"] = harness.WASM_PATH
    publish_tokens.validate_with_envoy(publish_tokens.resource_file(wasm, plugin_config), harness.envoy_bin(), REPO)


# --------------------------------------------------------------------------- docker-compose


def _load_yaml(*parts: str):
    with open(os.path.join(REPO, *parts)) as f:
        return yaml.safe_load(f)


def _mounts(svc: dict) -> dict:
    return {(v.split(":")[0] if isinstance(v, str) else v["source"]):
            (v.split(":")[1] if isinstance(v, str) else v["target"]) for v in svc.get("volumes", [])}


def _cluster_addr(cfg: dict, name: str) -> tuple:
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == name:
            sa = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            return sa["address"], sa["port_value"]
    raise AssertionError(name)


def _port(p) -> tuple:
    """container port -> (host address, host port), from either compose ports syntax."""
    if isinstance(p, dict):
        return int(p["target"]), (p.get("host_ip"), int(p["published"]))
    host_ip, published, target = p.split("/")[0].split(":")
    return int(target), (host_ip, int(published))


def test_compose_file_is_the_whole_product_and_references_existing_files():
    cfg = compose_config()
    services = cfg["services"]
    assert set(services) == {"envoy", "tokengate-server", "upstream", "postgres", "audit"}
    # The optional services sit in profiles: a plain `up` runs envoy, tokengate-server, upstream.
    assert [n for n, s in services.items() if not s.get("profiles")] and \
        {n for n, s in services.items() if s.get("profiles")} == {"postgres", "audit"}
    assert services["postgres"]["profiles"] == ["postgres"] and services["audit"]["profiles"] == ["vector"]
    assert services["envoy"]["image"] == "envoyproxy/envoy:v1.40.0"
    assert services["tokengate-server"]["image"] == "tokengate/tokengate-server:0.1.0"
    assert services["tokengate-server"]["build"]["dockerfile"] == "server/Dockerfile"
    for name, svc in services.items():
        for src in _mounts(svc):
            if not src.startswith("/"):
                assert src in cfg.get("volumes", {}), f"{name}: named volume {src} is not declared"
                continue
            rel = os.path.relpath(src, REPO)
            if rel == ".run" or rel.startswith(".run" + os.sep):
                continue  # created on `up`
            assert os.path.exists(src), f"{name}: mounts {rel}, which does not exist"
            assert not rel.startswith(".."), f"{name}: mounts {src} outside the repository"


def test_compose_images_are_overridable():
    env = {"ENVOY_IMAGE": "e:1", "TOKENGATE_SERVER_IMAGE": "s:1", "PYTHON_IMAGE": "p:1",
           "POSTGRES_IMAGE": "pg:1", "VECTOR_IMAGE": "v:1"}
    services = compose_config(env)["services"]
    assert {n: s["image"] for n, s in services.items()} == {
        "envoy": "e:1", "tokengate-server": "s:1", "upstream": "p:1", "postgres": "pg:1", "audit": "v:1"}


def test_compose_envoy_and_service_agree():
    services = compose_config()["services"]
    envoy, server = services["envoy"], services["tokengate-server"]
    mounts = _mounts(envoy)
    cmd = envoy["command"]
    conf = cmd[cmd.index("-c") + 1]
    assert mounts[os.path.join(REPO, "deploy", "compose", "envoy.yaml")] == conf
    assert mounts[os.path.join(REPO, "dist", "tokengate.wasm")] == "/tokengate/dist/tokengate.wasm"
    assert envoy["working_dir"] == "/tokengate"
    env = server["environment"]
    # The module path the service pushes resolves, in the envoy container, to the mounted file.
    assert os.path.join(envoy["working_dir"], env["TOKENGATE_WASM"]) == "/tokengate/dist/tokengate.wasm"
    # The service lives in Envoy's network namespace: loopback xDS (plaintext is refused
    # elsewhere), and the clusters of deploy/compose/envoy.yaml point at its ports.
    assert server["network_mode"] == "service:envoy" and "ports" not in server
    ecfg = _load_yaml("deploy", "compose", "envoy.yaml")
    xds_host, xds_port = env["TOKENGATE_XDS"].rsplit(":", 1)
    assert xds_host == "127.0.0.1" and _cluster_addr(ecfg, "tokengate_xds") == ("127.0.0.1", int(xds_port))
    listen_port = int(env["TOKENGATE_LISTEN"].rsplit(":", 1)[1])
    assert _cluster_addr(ecfg, "tokengate_server") == ("127.0.0.1", listen_port)
    assert env["TOKENGATE_DB"].startswith("sqlite:///var/lib/tokengate/")
    assert _mounts(server) == {"tokengate-data": "/var/lib/tokengate"}
    # Published on the host's loopback: the listener, Envoy's admin and the service's HTTP port.
    published = dict(_port(p) for p in envoy["ports"])
    listener = ecfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    admin = ecfg["admin"]["address"]["socket_address"]["port_value"]
    assert published == {listener: ("127.0.0.1", 10000), admin: ("127.0.0.1", 9901), listen_port: ("127.0.0.1", 8080)}
    # The demo upstream serves on the upstream cluster's address.
    up = services["upstream"]["command"]
    assert "demo/server.py" in up
    assert _cluster_addr(ecfg, "upstream") == ("upstream", int(up[up.index("--upstream-port") + 1]))


def test_compose_envoy_config_is_envoy_service_yaml_with_compose_addresses():
    """deploy/compose/envoy.yaml differs from envoy/envoy-service.yaml in addresses only."""
    shipped, ours = _load_yaml("envoy", "envoy-service.yaml"), _load_yaml("deploy", "compose", "envoy.yaml")
    assert ours["admin"]["address"]["socket_address"]["address"] == "0.0.0.0"
    ours["admin"]["address"]["socket_address"]["address"] = "127.0.0.1"
    sa = ours["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert sa["address"] == "0.0.0.0"
    sa["address"] = "127.0.0.1"
    for c in ours["static_resources"]["clusters"]:
        if c["name"] == "upstream":
            assert c["type"] == "STRICT_DNS"
            c["type"] = "STATIC"
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
                "address"] = "127.0.0.1"
    assert ours == shipped


def test_compose_postgres_profile():
    services = compose_config({"TOKENGATE_DB": "postgres://tokengate:tokengate@postgres:5432/tokengate"})["services"]
    pg = services["postgres"]
    assert pg["image"] == "postgres:15"
    assert pg["environment"]["POSTGRES_USER"] == "tokengate" and pg["environment"]["POSTGRES_DB"] == "tokengate"
    assert _mounts(pg) == {"tokengate-postgres": "/var/lib/postgresql/data"}
    assert services["tokengate-server"]["environment"]["TOKENGATE_DB"] == \
        "postgres://tokengate:tokengate@postgres:5432/tokengate"


def test_server_dockerfile():
    with open(os.path.join(REPO, "server", "Dockerfile")) as f:
        lines = [ln.strip() for ln in f.read().replace("\\\n", " ").splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].endswith(" AS build"), froms  # multi-stage
    final = lines[lines.index(froms[1]):]
    assert any("rustc-web" in ln and "cargo-web" in ln for ln in lines), "the builder installs Debian's Rust 1.96"
    assert any(ln.startswith("COPY --from=build") for ln in final)
    user = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert user and user[-1] not in ("root", "0"), user
    assert any(ln.startswith("HEALTHCHECK") and "/healthz" in ln for ln in final)
    assert any(ln.startswith("VOLUME") and "/var/lib/tokengate" in ln for ln in final)
    assert any("TOKENGATE_DB=sqlite:///var/lib/tokengate/" in ln for ln in final)
    # The context (.dockerignore) holds the workspace's sources, never target/.
    with open(os.path.join(REPO, ".dockerignore")) as f:
        ignore = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*" and {"!Cargo.toml", "!Cargo.lock", "!core", "!server", "!dist/tokengate.wasm"} <= set(ignore)
    assert "**/target" in ignore
    # cargo loads the whole workspace: every member must be in the context and copied in.
    import tomllib
    with open(os.path.join(REPO, "Cargo.toml"), "rb") as f:
        members = [m for m in tomllib.load(f)["workspace"]["members"] if m != "."]
    copied = {ln.split()[1] for ln in lines if ln.startswith("COPY ") and not ln.startswith("COPY --from")}
    for m in members + ["src"]:
        assert f"!{m}" in ignore, f".dockerignore leaves out the workspace member {m}"
        assert m in copied, f"server/Dockerfile does not COPY the workspace member {m}"


def test_vector_pipeline_profile():
    vec = _load_yaml("deploy", "compose", "vector.yaml")
    (src,) = vec["sources"].values()
    assert src["type"] == "http_server"
    assert src["address"] == "0.0.0.0:8082" and src["path"] == "/audit" and src["method"] == "POST"
    assert src["framing"]["method"] == "newline_delimited" and src["decoding"]["codec"] == "json"
    assert src.get("path_key") not in (None, "path"), "Vector's path key would collide with the lines' `path`"
    sinks = [s for s in vec["sinks"].values() if s["type"] == "file"]
    assert sinks and sinks[0]["path"].startswith("/var/log/tokengate/")
    names = set(vec["sources"]) | set(vec.get("transforms", {}))
    for comp in list(vec.get("transforms", {}).values()) + list(vec["sinks"].values()):
        assert set(comp["inputs"]) <= names, comp
    # The service forwards to it when asked (TOKENGATE_AUDIT_FORWARD).
    url = "http://audit:8082/audit"
    services = compose_config({"TOKENGATE_AUDIT_FORWARD": url})["services"]
    assert services["tokengate-server"]["environment"]["TOKENGATE_AUDIT_FORWARD"] == url
    assert _mounts(services["audit"])[os.path.join(REPO, "deploy", "compose", "vector.yaml")] == "/etc/vector/vector.yaml"


# --------------------------------------------------------------------------- Envoy configs


def test_shipped_envoy_configs_load():
    envoy_validate("envoy/envoy.yaml")
    envoy_validate("envoy/envoy-hot-reload.yaml")
    envoy_validate("envoy/envoy-service.yaml")
    envoy_validate("deploy/compose/envoy.yaml")


def test_hot_reload_config_is_generated_from_envoy_yaml():
    expected = publish_tokens.render_hot_reload_text(harness.load_shipped())
    with open(os.path.join(REPO, "envoy", "envoy-hot-reload.yaml")) as f:
        current = f.read()
    assert current == expected, ("envoy/envoy-hot-reload.yaml drifted from envoy/envoy.yaml: run "
                                 "`make hot-reload-config` and commit the result")
    # The watched file exists (Envoy needs it at start) and carries the shipped filter options.
    doc = yaml.safe_load(current)
    flt = [f for f in harness._hcm(doc)["http_filters"] if f["name"] == publish_tokens.FILTER_NAME][0]
    src = flt["config_discovery"]["config_source"]["path_config_source"]
    assert os.path.isfile(os.path.join(REPO, src["path"]))
    assert os.path.isdir(os.path.join(REPO, src["watched_directory"]["path"]))
    assert os.path.dirname(src["path"]) == src["watched_directory"]["path"]
    with open(os.path.join(REPO, src["path"])) as f:
        wasm = publish_tokens.wasm_of_resource_file(json.load(f))
    shipped = publish_tokens.shipped_wasm()
    for key in ("vm_config", "allow_on_headers_stop_iteration", "failure_policy", "root_id"):
        assert wasm["config"].get(key) == shipped["config"].get(key), key


# --------------------------------------------------------------------------- Istio


def _istio_docs(name: str) -> list:
    with open(os.path.join(REPO, "deploy", "istio", name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def test_istio_wasmplugin():
    (wp,) = _istio_docs("wasmplugin.yaml")
    assert wp["apiVersion"] == "extensions.istio.io/v1alpha1" and wp["kind"] == "WasmPlugin"
    spec = wp["spec"]
    assert spec["phase"] == "AUTHN"
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["url"].startswith("oci://")
    assert spec.get("type", "HTTP") == "HTTP"
    assert spec["selector"]["matchLabels"] or spec.get("targetRefs")
    pc = spec["pluginConfig"]
    assert pc["secure_mode"] is True and all("sha256" in t and "token" not in t for t in pc["tokens"])
    validate_plugin_config(pc)


def test_istio_envoyfilter_sets_stop_iteration():
    (ef,) = _istio_docs("envoyfilter-stop-iteration.yaml")
    assert ef["apiVersion"] == "networking.istio.io/v1alpha3" and ef["kind"] == "EnvoyFilter"
    patches = ef["spec"]["configPatches"]
    ext = [p for p in patches if p["applyTo"] == "EXTENSION_CONFIG"]
    flt = [p for p in patches if p["applyTo"] == "HTTP_FILTER"]
    assert len(ext) == 1 and len(flt) == 1
    assert ext[0]["patch"]["operation"] == "ADD", "Istio applies only ADD to EXTENSION_CONFIG"
    value = ext[0]["patch"]["value"]
    cfg = value["typed_config"]["config"]
    assert value["typed_config"]["@type"] == publish_tokens.WASM_TYPE
    assert cfg["allow_on_headers_stop_iteration"] is True
    assert cfg["failure_policy"] == "FAIL_CLOSED"
    assert cfg["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert cfg["vm_config"]["code"]["remote"]["http_uri"]["uri"].startswith("oci://")
    # The HTTP filter takes its config from that extension (same name, Wasm type, over ADS).
    hf = flt[0]["patch"]["value"]
    assert hf["name"] == value["name"]
    assert hf["config_discovery"]["type_urls"] == [publish_tokens.WASM_TYPE]
    assert "ads" in hf["config_discovery"]["config_source"]
    assert ext[0]["match"]["context"] == flt[0]["match"]["context"]
    pc = publish_tokens.plugin_config_from_configuration(cfg["configuration"])
    assert any("JsonData::" in line for t in pc["tokens"] for line in t.get("limit_to", []))
    validate_plugin_config(pc)


def test_istio_manifests_agree_on_image_and_root_id():
    (wp,) = _istio_docs("wasmplugin.yaml")
    (ef,) = _istio_docs("envoyfilter-stop-iteration.yaml")
    cfg = [p for p in ef["spec"]["configPatches"] if p["applyTo"] == "EXTENSION_CONFIG"][0]["patch"]["value"][
        "typed_config"]["config"]
    assert cfg["vm_config"]["code"]["remote"]["http_uri"]["uri"] == wp["spec"]["url"]
    assert cfg["root_id"] == wp["spec"]["pluginName"]
    assert wp["metadata"]["namespace"] == ef["metadata"]["namespace"]
    assert wp["spec"]["selector"]["matchLabels"] == ef["spec"]["workloadSelector"]["labels"]


# --------------------------------------------------------------------------- OCI image


def test_dockerfile_is_from_scratch_with_plugin_wasm():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        lines = [ln.split() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == ["FROM", "scratch"]
    assert lines[1:] == [["COPY", "dist/tokengate.wasm", "./plugin.wasm"]]


def test_oci_image_layout(tmp_path):
    harness.require_artifacts()
    out = str(tmp_path / "oci")
    info = oci_image.build(harness.WASM_PATH, out, "test", str(tmp_path / "oci.tar"))
    again = oci_image.build(harness.WASM_PATH, str(tmp_path / "oci2"), "test", None)
    assert again["manifest_digest"] == info["manifest_digest"], "the image is not reproducible"

    def blob(digest: str) -> bytes:
        data = open(os.path.join(out, "blobs", "sha256", digest.split(":", 1)[1]), "rb").read()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data

    assert json.load(open(os.path.join(out, "oci-layout"))) == {"imageLayoutVersion": "1.0.0"}
    index = json.load(open(os.path.join(out, "index.json")))
    (desc,) = index["manifests"]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "test"
    manifest = json.loads(blob(desc["digest"]))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    (layer,) = manifest["layers"]  # one layer (Istio's compat variant)
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    layer_tar = gzip.decompress(blob(layer["digest"]))
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as tf:
        assert tf.getnames() == ["plugin.wasm"]
        assert tf.extractfile("plugin.wasm").read() == open(harness.WASM_PATH, "rb").read()
    config = json.loads(blob(manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]
    with tarfile.open(tmp_path / "oci.tar") as tf:
        assert "index.json" in tf.getnames() and "oci-layout" in tf.getnames()

    skopeo = shutil.which("skopeo")
    if skopeo:  # an independent reader of the layout (`make deploy-tools` installs it)
        for ref in (f"oci:{out}:test", f"oci-archive:{tmp_path / 'oci.tar'}:test"):
            proc = subprocess.run([skopeo, "inspect", ref], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            assert json.loads(proc.stdout)["Digest"] == info["manifest_digest"]
        proc = subprocess.run([skopeo, "copy", "-q", f"oci:{out}:test",
                               f"docker-archive:{tmp_path / 'docker.tar'}:tokengate:test"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
