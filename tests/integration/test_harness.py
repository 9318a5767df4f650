"""Self-tests of the harness and of the shipped envoy.yaml (Envoy without the filter where possible)."""

import json

import harness


def test_shipped_config_has_the_deployment_settings():
    cfg = harness.load_shipped()
    hcm = harness._hcm(cfg)
    assert hcm["use_remote_address"] is True
    assert hcm["normalize_path"] is True
    assert hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    listener = cfg["static_resources"]["listeners"][0]
    plugin = harness.shipped_plugin_config()
    assert listener["per_connection_buffer_limit_bytes"] > plugin.get("max_body_bytes", 1 << 20)
    pc = harness._wasm_filter(cfg)["typed_config"]["config"]
    assert pc["name"] == pc["root_id"] == "tokengate"
    assert pc["allow_on_headers_stop_iteration"] is True
    assert pc["failure_policy"] == "FAIL_CLOSED"
    assert pc["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert pc["vm_config"]["code"]["local"]["filename"] == "dist/tokengate.wasm"
    # the router is last
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    # only digests in the shipped config
    for t in plugin["tokens"]:
        assert "token" not in t and len(t["sha256"]) == 64
    assert plugin.get("secure_mode") is True
    assert {c["name"] for c in cfg["static_resources"]["clusters"]} >= {"upstream", "audit_sink"}
    fmt = hcm["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"]
    for key in ("token_id", "user", "decision", "reason"):
        assert f"%FILTER_STATE(wasm.tokengate.{key}:PLAIN)%" in fmt


def test_generate_config_rewrites_ports_plugin_and_hcm():
    plugin = {"tokens": [{"id": "a", "sha256": "0" * 64}]}
    cfg = harness.generate_config(listener_port=1, admin_port=2, upstream_port=3, audit_port=4,
                                  plugin_config=plugin, as_string=True,
                                  hcm_overrides={"normalize_path": False, "merge_slashes": None})
    hcm = harness._hcm(cfg)
    assert hcm["normalize_path"] is False and "merge_slashes" not in hcm
    conf = harness._wasm_filter(cfg)["typed_config"]["config"]["configuration"]
    assert conf["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    assert json.loads(conf["value"]) == plugin
    assert harness._wasm_filter(cfg)["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] \
        == harness.WASM_PATH
    cfg = harness.generate_config(listener_port=1, admin_port=2, upstream_port=3, audit_port=4,
                                  plugin_config=plugin)
    conf = harness._wasm_filter(cfg)["typed_config"]["config"]["configuration"]
    assert conf == {"@type": "type.googleapis.com/google.protobuf.Struct", "value": plugin}
    assert cfg["admin"]["address"]["socket_address"]["port_value"] == 2
    ports = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
             ["socket_address"]["port_value"] for c in cfg["static_resources"]["clusters"]}
    assert ports == {"upstream": 3, "audit_sink": 4}


def test_raw_client_and_upstream_record_without_filter(envoys, demo):
    env = envoys.get(with_filter=False)
    r = env.raw(b"GET /rest/api/2/issue/DEMO-1?x=1 HTTP/1.1\r\nHost: t\r\nX-Dup: 1\r\nX-Dup: 2\r\n"
                b"Cookie: a=b\r\nConnection: close\r\n\r\n")
    assert r.status == 200, r
    assert r.json()["path"] == "/rest/api/2/issue/DEMO-1?x=1"
    assert r.json()["cookie"] is True
    (rec,) = demo.upstream.requests
    assert rec.header_values("x-dup") == ["1", "2"]
    r = env.request("POST", "/p", headers=[("Content-Type", "text/plain")], body=b"hello", auth=("u", "t"))
    assert r.status == 200 and r.json()["body_bytes"] == 5 and r.json()["authorization"] is True
    assert r.json()["authorization_value"] == harness.basic("u", "t")
    # Envoy's own 400 for a lower-case method comes back parsed too
    r = env.raw(b"get / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert r.status == 400
    assert env.stat("http.tokengate.downstream_rq_total") >= 3
    assert any(k.endswith("downstream_rq_total") for k in env.stats("downstream_rq_total"))


def test_hcm_override_and_access_log(envoys):
    env = envoys.get(with_filter=False, hcm_overrides={"merge_slashes": False})
    r = env.request("GET", "/a//b")
    assert r.json()["path"] == "/a//b"
    env2 = envoys.get(with_filter=False)
    assert env2.request("GET", "/a//b").json()["path"] == "/a/b"
    env2.wait_access_log(r'"GET /a/b" 200 token=- user=- decision=- reason=-')


def test_sink_control_api(demo):
    import urllib.request
    base = f"http://127.0.0.1:{demo.sink.port}"
    req = urllib.request.Request(base + "/audit", data=b'{"a":1}\n{"b":2}\n', method="POST")
    assert urllib.request.urlopen(req).status == 200
    assert demo.sink.lines == [{"a": 1}, {"b": 2}]
    demo.sink.fail_next(1)
    try:
        urllib.request.urlopen(urllib.request.Request(base + "/audit", data=b'{"c":1}\n', method="POST"))
        raise AssertionError("expected 500")
    except urllib.error.HTTPError as e:
        assert e.code == 500
    assert json.loads(urllib.request.urlopen(base + "/__audit").read()) == [{"a": 1}, {"b": 2}]
    demo.sink.go_down()
    try:
        urllib.request.urlopen(urllib.request.Request(base + "/audit", data=b"{}\n", method="POST"), timeout=2)
        raise AssertionError("expected connection refused")
    except urllib.error.URLError:
        pass
    demo.sink.come_up()
    assert urllib.request.urlopen(base + "/__health").status == 200
    assert json.loads(urllib.request.urlopen(base + "/__requests").read()) == []


def test_shipped_config_with_real_wasm_runs_the_demo(envoys, demo):
    """envoy/envoy.yaml as shipped (only ports and the wasm path rewritten) loads and the
    demo tokens printed by demo/run.py behave as run.py says; the access log shows filter state."""
    import run as demo_run  # demo/run.py

    env = envoys.get()  # plugin configuration as shipped
    r = env.request("GET", "/rest/api/2/issue/DEMO-1", auth=("demo", demo_run.DEMO_TOKEN))
    assert r.status == 200 and r.json()["identity"] == "demo", r
    r = env.request("GET", "/rest/api/2/issue/DEMO-1", auth=("demo", demo_run.REVOKED_TOKEN))
    harness.assert_jira_error(r, 401, "token revoked")
    env.wait_access_log(r'"GET /rest/api/2/issue/DEMO-1" 200 token=demo user=demo decision=allow reason=ok')
    env.wait_access_log(r'" 401 token=demo-revoked user=demo decision=deny reason=revoked')
    for _desc, _curl, method, path, headers, status, check in demo_run.examples("tga_unused"):
        if method is None:  # an API example, run by `make run`'s smoke test
            continue
        r = env.request(method, path, headers=headers)
        assert r.status == status and check(r.json()), (_desc, r)


def test_stats_helper_reads_tokengate_counters(envoys, demo):
    import run as demo_run

    env = envoys.get()
    before = {n: env.stat(n) for n in ("tokengate.allowed", "tokengate.denied", "tokengate.denied.revoked",
                                       "tokengate.passthrough")}
    env.request("GET", "/rest/api/2/issue/DEMO-1", auth=("demo", demo_run.DEMO_TOKEN))
    env.request("GET", "/rest/api/2/issue/DEMO-1", auth=("demo", demo_run.REVOKED_TOKEN))
    env.request("GET", "/rest/api/2/issue/DEMO-1")
    after = {n: env.stat(n) for n in before}
    assert {n: after[n] - before[n] for n in before} == {
        "tokengate.allowed": 1, "tokengate.denied": 1, "tokengate.denied.revoked": 1, "tokengate.passthrough": 1}


def test_native_config_carries_the_same_plugin_configuration():
    """TOKENGATE_BUILD=native: the wasm filter becomes a dynamic_modules filter with the very same
    configuration, and the access log reads the native filter-state keys."""
    kw = dict(listener_port=1, admin_port=2, upstream_port=3, audit_port=4)
    wasm = harness.generate_config(build="wasm", **kw)
    native = harness.generate_config(build="native", **kw)
    assert harness.filter_configuration(native) == harness.filter_configuration(wasm)
    flt = [f for f in harness._hcm(native)["http_filters"]
           if f["typed_config"]["@type"] == harness.NATIVE_FILTER_TYPE]
    assert len(flt) == 1
    dm = flt[0]["typed_config"]["dynamic_module_config"]
    assert dm["module"]["local"]["filename"] == harness.NATIVE_LIB
    fmt = harness._hcm(native)["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"]
    assert "wasm.tokengate." not in fmt
    for key in ("token_id", "user", "decision", "reason"):
        assert f"%FILTER_STATE(tokengate.{key}:PLAIN)%" in fmt
