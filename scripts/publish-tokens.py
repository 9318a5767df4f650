#!/usr/bin/env python3
"""Publish a new tokengate token set to a running Envoy without a restart (ECDS from a file).

Envoy started with ``envoy/envoy-hot-reload.yaml`` takes the tokengate filter's configuration
from ``envoy/tokens/tokengate.json`` (Extension Config Discovery from a watched directory).
Publishing a new token set means replacing that file atomically: this tool writes the new
resource to a temporary file in the same directory, flushes it, and renames it over the watched
file. Envoy sees the rename, loads the new configuration into fresh root contexts (the listener,
its connections and requests in flight stay as they are) and new requests are decided under the
new set within milliseconds. A set the filter refuses (``on_configure`` false) is rejected by
Envoy and the previous set keeps serving.

Commands:

  publish CONFIG   CONFIG is a tokengate plugin configuration (YAML or JSON: the same shape as
                   ``configuration.value`` in envoy/envoy.yaml or Istio's ``pluginConfig``), or a
                   whole envoy.yaml whose tokengate filter holds it, or ``-`` for stdin.
                   Options: --to FILE (default envoy/tokens/tokengate.json), --validate
                   auto|envoy|none (default auto: with Envoy's own loader when an Envoy binary is
                   found), --admin URL (wait until that Envoy reports the set live or rejected).
  show             print the plugin configuration currently published (--to FILE).
  render           regenerate envoy/envoy-hot-reload.yaml from envoy/envoy.yaml (--check: only
                   report whether the committed file is current; exit 1 when it drifted).
  init             write the watched file from envoy/envoy.yaml's plugin configuration when it
                   is missing (--force: overwrite).

Only the standard library is required for JSON input; YAML input and ``render``/``init`` need
PyYAML (``pip install pyyaml``; the project's .venv has it).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SHIPPED_ENVOY_YAML = os.path.join(REPO, "envoy", "envoy.yaml")
HOT_RELOAD_YAML = os.path.join(REPO, "envoy", "envoy-hot-reload.yaml")

# Paths as Envoy sees them: relative to Envoy's working directory (the repository root for a
# local run; /tokengate in docker-compose, which mounts the repository layout there).
TOKENS_DIR_REL = "envoy/tokens"
TOKENS_FILE_REL = TOKENS_DIR_REL + "/tokengate.json"
DEFAULT_TOKENS_FILE = os.path.join(REPO, TOKENS_FILE_REL)

FILTER_NAME = "tokengate"  # HTTP filter name == ECDS resource name
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TEC_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
STRUCT_TYPE = "type.googleapis.com/google.protobuf.Struct"
STRING_TYPE = "type.googleapis.com/google.protobuf.StringValue"

HOT_RELOAD_HEADER = """\
# GENERATED from envoy/envoy.yaml by `scripts/publish-tokens.py render` (`make hot-reload-config`).
# Do not edit: change envoy/envoy.yaml and regenerate; `make test` fails when this file drifts.
#
# The same Envoy as envoy/envoy.yaml (listener 127.0.0.1:10000, admin 9901, upstream 8081,
# audit sink 8082), except that the tokengate filter's configuration (wasm module, VM options and
# the token set) comes from envoy/tokens/tokengate.json through Extension Config Discovery (ECDS),
# read from a watched directory. Publish a new token set with
#   scripts/publish-tokens.py publish my-tokens.yaml
# (writes a temp file in envoy/tokens/ and renames it over tokengate.json). New requests use the
# new set within milliseconds; requests in flight finish under the old one; a set the filter
# refuses is rejected and the previous set keeps serving. See docs/operations.md.
# Paths are relative to Envoy's working directory: run it from the repository root.
"""


class PublishError(Exception):
    pass


# --------------------------------------------------------------------------- loading


def _yaml():
    try:
        import yaml  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - depends on the host
        raise PublishError("PyYAML is needed for YAML input (pip install pyyaml), or give JSON") from e
    return yaml


def load_document(text: str, name: str):
    """JSON first (exact), then YAML."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    yaml = _yaml()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PublishError(f"{name}: not valid YAML or JSON: {e}") from e


def load_file(path: str):
    if path == "-":
        return load_document(sys.stdin.read(), "<stdin>")
    with open(path, encoding="utf-8") as f:
        return load_document(f.read(), path)


def _hcms(bootstrap: dict):
    for listener in (bootstrap.get("static_resources") or {}).get("listeners") or []:
        for chain in listener.get("filter_chains") or []:
            for flt in chain.get("filters") or []:
                tc = flt.get("typed_config") or {}
                if tc.get("@type") == HCM_TYPE:
                    yield tc


def wasm_filter_of(bootstrap: dict) -> dict:
    """The tokengate wasm HTTP filter entry ({name, typed_config}) of an Envoy bootstrap."""
    for hcm in _hcms(bootstrap):
        for flt in hcm.get("http_filters") or []:
            if (flt.get("typed_config") or {}).get("@type") == WASM_TYPE:
                return flt
    raise PublishError("no tokengate wasm filter (envoy.extensions.filters.http.wasm.v3.Wasm) in the Envoy config")


def plugin_config_from_configuration(configuration: dict):
    """The plugin config (a dict) from a PluginConfig.configuration Any."""
    t = configuration.get("@type", "")
    if t == STRUCT_TYPE:
        return copy.deepcopy(configuration.get("value"))
    if t == STRING_TYPE:
        return json.loads(configuration.get("value") or "null")
    raise PublishError(f"unsupported plugin configuration type {t!r}")


def plugin_config_from_input(doc) -> dict:
    """Accepts a plugin config, a whole envoy.yaml, or an ECDS resource file."""
    if not isinstance(doc, dict):
        raise PublishError("the token set must be a YAML/JSON mapping (the tokengate plugin configuration)")
    if "static_resources" in doc:
        return plugin_config_from_configuration(wasm_filter_of(doc)["typed_config"]["config"]["configuration"])
    if "resources" in doc:
        return plugin_config_from_configuration(wasm_of_resource_file(doc)["config"]["configuration"])
    return doc


def wasm_of_resource_file(doc: dict) -> dict:
    """The Wasm filter message inside an ECDS resource file."""
    try:
        res = [r for r in doc["resources"] if r.get("name") == FILTER_NAME]
        if len(res) != 1:
            raise KeyError(FILTER_NAME)
        tc = res[0]["typed_config"]
        if tc.get("@type") != WASM_TYPE:
            raise KeyError("@type")
        return tc
    except (KeyError, TypeError, AttributeError) as e:
        raise PublishError(f"not a tokengate ECDS resource file (resources[name={FILTER_NAME}] of type Wasm): {e}") from e


# --------------------------------------------------------------------------- building


def resource_file(wasm: dict, plugin_config: dict, version: str | None = None) -> dict:
    """The ECDS resource file (a DiscoveryResponse) for Wasm filter `wasm` with `plugin_config`."""
    wasm = copy.deepcopy(wasm)
    wasm.setdefault("config", {})["configuration"] = {"@type": STRUCT_TYPE, "value": copy.deepcopy(plugin_config)}
    body = json.dumps(wasm, sort_keys=True, separators=(",", ":")).encode()
    if version is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        version = f"{stamp}-{hashlib.sha256(body).hexdigest()[:12]}"
    return {
        "version_info": version,
        "resources": [{"@type": TEC_TYPE, "name": FILTER_NAME, "typed_config": wasm}],
    }


def wasm_template(target: str) -> dict:
    """VM/plugin options for the resource: from the currently published file when there is one
    (so a deployment keeps its own wasm path and options), else from envoy/envoy.yaml."""
    if os.path.isfile(target):
        try:
            return wasm_of_resource_file(load_file(target))
        except PublishError:
            pass  # a broken file must not block publishing a good one
    return shipped_wasm()


def shipped_wasm() -> dict:
    return copy.deepcopy(wasm_filter_of(load_file(SHIPPED_ENVOY_YAML))["typed_config"])


def render_hot_reload(bootstrap: dict, tokens_file: str = TOKENS_FILE_REL, tokens_dir: str = TOKENS_DIR_REL) -> dict:
    """`bootstrap` (envoy.yaml) with the tokengate filter taken from `tokens_file` by ECDS."""
    cfg = copy.deepcopy(bootstrap)
    node = cfg.setdefault("node", {})  # a file-based xDS subscription needs a node id and cluster
    node.setdefault("id", "tokengate")
    node.setdefault("cluster", "tokengate")
    for hcm in _hcms(cfg):
        filters = hcm.get("http_filters") or []
        for i, flt in enumerate(filters):
            if (flt.get("typed_config") or {}).get("@type") == WASM_TYPE:
                filters[i] = {
                    "name": FILTER_NAME,
                    "config_discovery": {
                        "config_source": {
                            "path_config_source": {"path": tokens_file, "watched_directory": {"path": tokens_dir}},
                            "resource_api_version": "V3",
                        },
                        "type_urls": [WASM_TYPE],
                    },
                }
                return cfg
    raise PublishError("no tokengate wasm filter in envoy/envoy.yaml")


def render_hot_reload_text(bootstrap: dict) -> str:
    yaml = _yaml()
    return HOT_RELOAD_HEADER + yaml.safe_dump(render_hot_reload(bootstrap), sort_keys=False, width=120)


# --------------------------------------------------------------------------- validation


def find_envoy(explicit: str | None = None) -> str | None:
    for cand in (explicit, os.environ.get("ENVOY_BIN"), os.path.join(REPO, ".venv", "bin", "envoy"),
                 shutil.which("envoy")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def validate_with_envoy(resource: dict, envoy: str, workdir: str, timeout: float = 60.0) -> None:
    """Loads the resource's Wasm filter in `envoy --mode validate` (which runs the filter's
    on_configure, so the filter's own checks apply). Raises PublishError with the reason."""
    wasm = copy.deepcopy(resource["resources"][0]["typed_config"])
    pc = plugin_config_from_configuration(wasm["config"]["configuration"])
    clusters = []
    audit_cluster = ((pc or {}).get("audit") or {}).get("cluster") if isinstance(pc, dict) else None
    for name in {"upstream", audit_cluster or "audit_sink"}:
        clusters.append({"name": name, "type": "STATIC", "connect_timeout": "1s",
                         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                             {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                          "port_value": 9}}}}]}]}})
    bootstrap = {"static_resources": {"listeners": [{
        "name": "validate", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": HCM_TYPE, "stat_prefix": "validate",
            "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
            "http_filters": [
                {"name": FILTER_NAME, "typed_config": wasm},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }}]}]}], "clusters": clusters}}
    with tempfile.TemporaryDirectory(prefix="tokengate-validate-") as tmp:
        path = os.path.join(tmp, "validate.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(bootstrap, f)
        try:
            proc = subprocess.run([envoy, "--mode", "validate", "-c", path, "-l", "error", "--log-format", "%v"],
                                  cwd=workdir, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise PublishError(f"validation with {envoy} timed out after {timeout:.0f}s") from e
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).splitlines()
        why = [line for line in out if "configuration rejected" in line]
        raise PublishError("Envoy refuses this token set: " + (why[0].strip() if why else "\n".join(out[-8:])))


# --------------------------------------------------------------------------- publishing


def write_atomically(path: str, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over `path` (what Envoy's watch expects)."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    mode = 0o644
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".tokengate-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def serialize(resource: dict) -> bytes:
    return (json.dumps(resource, indent=2) + "\n").encode("utf-8")


def admin_stats(admin: str) -> dict:
    url = admin.rstrip("/") + "/stats?filter=" + urllib.parse.quote(
        rf"^extension_config_discovery\.http_filter\.{FILTER_NAME}\.")
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode("utf-8", "replace")
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            out[name.rsplit(".", 1)[-1]] = value.strip().strip('"')
    return out


def wait_live(admin: str, version: str, before: dict, timeout: float) -> str:
    """'live' once Envoy reports `version`, 'rejected' when its reject/failure counters move."""
    deadline = time.monotonic() + timeout
    keys = ("update_rejected", "update_failure")
    while True:
        try:
            now = admin_stats(admin)
            if now.get("version_text") == version:
                return "live"
            if any(int(now.get(k, 0) or 0) > int(before.get(k, 0) or 0) for k in keys):
                return "rejected"
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return "unknown"
        time.sleep(0.05)


def publish(config_path: str, target: str = DEFAULT_TOKENS_FILE, validate: str = "auto", envoy: str | None = None,
            workdir: str | None = None, admin: str | None = None, wait: float = 10.0, quiet: bool = False) -> dict:
    plugin_config = plugin_config_from_input(load_file(config_path))
    resource = resource_file(wasm_template(target), plugin_config)
    workdir = workdir or os.getcwd()
    if validate != "none":
        bin_ = find_envoy(envoy)
        if bin_ is None:
            if validate == "envoy":
                raise PublishError("--validate envoy: no Envoy binary (set ENVOY_BIN or --envoy)")
            print("publish-tokens: no Envoy binary found: publishing without validation (Envoy still refuses "
                  "a bad set and keeps the previous one)", file=sys.stderr)
        else:
            validate_with_envoy(resource, bin_, workdir)
    before = {}
    if admin:
        try:
            before = admin_stats(admin)
        except OSError as e:
            raise PublishError(f"admin {admin} unreachable: {e}") from e
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    write_atomically(target, serialize(resource))
    n = len((plugin_config or {}).get("tokens") or []) if isinstance(plugin_config, dict) else 0
    msg = f"publish-tokens: published version {resource['version_info']} ({n} token(s)) to {target}"
    state = None
    if admin:
        state = wait_live(admin, resource["version_info"], before, wait)
        msg += {"live": "; Envoy reports it live",
                "rejected": "; ENVOY REJECTED IT (previous set still serving; see Envoy's log)",
                "unknown": f"; Envoy did not report it within {wait:.0f}s"}[state]
    if not quiet:
        print(msg)
    if state == "rejected":
        raise PublishError("Envoy rejected the published token set")
    return resource


# --------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish", help="publish a token set (plugin configuration) atomically")
    p.add_argument("config", help="plugin configuration YAML/JSON, an envoy.yaml, or - for stdin")
    p.add_argument("--to", default=DEFAULT_TOKENS_FILE, help="the watched file (default %(default)s)")
    p.add_argument("--validate", choices=("auto", "envoy", "none"), default="auto")
    p.add_argument("--envoy", help="Envoy binary for validation (default: $ENVOY_BIN, .venv/bin/envoy, PATH)")
    p.add_argument("--workdir", help="directory the wasm path is relative to during validation (default: cwd)")
    p.add_argument("--admin", help="Envoy admin URL, e.g. http://127.0.0.1:9901: wait until the set is live")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait with --admin (default 10)")
    s = sub.add_parser("show", help="print the published plugin configuration")
    s.add_argument("--to", default=DEFAULT_TOKENS_FILE)
    r = sub.add_parser("render", help="regenerate envoy/envoy-hot-reload.yaml from envoy/envoy.yaml")
    r.add_argument("--check", action="store_true", help="exit 1 if the committed file is not current")
    i = sub.add_parser("init", help="write the watched file from envoy/envoy.yaml if missing")
    i.add_argument("--to", default=DEFAULT_TOKENS_FILE)
    i.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "publish":
            publish(args.config, args.to, args.validate, args.envoy, args.workdir, args.admin, args.wait)
        elif args.cmd == "show":
            pc = plugin_config_from_input(load_file(args.to))
            try:
                print(_yaml().safe_dump(pc, sort_keys=False), end="")
            except PublishError:
                print(json.dumps(pc, indent=2))
        elif args.cmd == "render":
            text = render_hot_reload_text(load_file(SHIPPED_ENVOY_YAML))
            current = open(HOT_RELOAD_YAML, encoding="utf-8").read() if os.path.exists(HOT_RELOAD_YAML) else ""
            if args.check:
                if current != text:
                    print("envoy/envoy-hot-reload.yaml is not current with envoy/envoy.yaml: run "
                          "`make hot-reload-config` (scripts/publish-tokens.py render) and commit it", file=sys.stderr)
                    return 1
                print("envoy/envoy-hot-reload.yaml is current")
            elif current != text:
                write_atomically(HOT_RELOAD_YAML, text.encode("utf-8"))
                print("wrote envoy/envoy-hot-reload.yaml")
        elif args.cmd == "init":
            if os.path.exists(args.to) and not args.force:
                print(f"{args.to} exists (use --force to overwrite)")
                return 0
            wasm = shipped_wasm()
            pc = plugin_config_from_configuration(wasm["config"]["configuration"])
            res = resource_file(wasm, pc, version="shipped")
            os.makedirs(os.path.dirname(os.path.abspath(args.to)), exist_ok=True)
            write_atomically(args.to, serialize(res))
            print(f"wrote {args.to}")
    except (PublishError, OSError) as e:
        print(f"publish-tokens: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
