"""The native build delivered by ECDS (a watched file, as scripts/publish-tokens.py does for the
wasm build): a token-set update replaces the filter config, and the lines the old config still
held reach the audit sink through the config that replaces it (SPEC §11), instead of only
Envoy's log.

Always drives the native module (whatever TOKENGATE_BUILD says); it runs in the wasm pass of
`make integration`, which runs every module. Fails, never skips, when the module is missing.
"""

from __future__ import annotations

import copy
import json
import os
import time

import pytest

import harness
from test_hot_reload import TOKEN_C, publish_tokens, token_set


class NativeHotEnvoy:
    """An Envoy whose tokengate filter (the native module) comes from a watched ECDS file."""

    def __init__(self, workdir: str, demo, initial: dict):
        self.tokens_dir = os.path.join(workdir, "tokens")
        os.makedirs(self.tokens_dir, exist_ok=True)
        self.tokens_file = os.path.join(self.tokens_dir, "tokengate.json")
        # The wasm variant first (publish-tokens renders ECDS from it), then the native filter.
        self.env = harness.Envoy(workdir, demo.upstream.port, demo.sink.port, concurrency=2, build="wasm")
        hot = publish_tokens.render_hot_reload(self.env.config, self.tokens_file, self.tokens_dir)
        for hcm in publish_tokens._hcms(hot):
            for flt in hcm.get("http_filters") or []:
                cd = flt.get("config_discovery")
                if cd:
                    cd["type_urls"] = [harness.NATIVE_FILTER_TYPE]
        self.native = harness.to_native(self.env.config)
        self.typed = None
        for flt in harness._hcm(self.native)["http_filters"]:
            if flt["typed_config"]["@type"] == harness.NATIVE_FILTER_TYPE:
                self.typed = flt["typed_config"]
        assert self.typed is not None
        with open(self.env.config_path, "w") as f:
            json.dump(hot, f, indent=1)
        self.publish(initial)

    def publish(self, plugin_config: dict) -> None:
        typed = copy.deepcopy(self.typed)
        typed["filter_config"] = {"@type": "type.googleapis.com/google.protobuf.Struct", "value": plugin_config}
        res = {"version_info": f"v{time.monotonic_ns()}",
               "resources": [{"@type": publish_tokens.TEC_TYPE, "name": publish_tokens.FILTER_NAME,
                              "typed_config": typed}]}
        publish_tokens.write_atomically(self.tokens_file, publish_tokens.serialize(res))


def _lines(demo, prefix):
    return [l for l in demo.sink.lines if l["path"].startswith(f"/rest/api/2/issue/{prefix}-")]


def test_token_set_update_hands_undelivered_lines_to_the_new_config(demo, tmp_path):
    try:
        harness.require_artifacts(build="native")
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    audit = {"flush_interval_ms": 2_000, "batch_max_lines": 500, "queue_max_lines": 1000}
    h = NativeHotEnvoy(str(tmp_path), demo, {**token_set(), "audit": audit})
    h.env.start()
    try:
        for i in range(6):
            r = h.env.request("GET", f"/rest/api/2/issue/N-{i}", auth=("c", TOKEN_C))
            assert r.status == 200, r
        assert _lines(demo, "N") == []  # held: the flush interval has not passed
        h.publish({**token_set(b=True), "audit": audit})
        deadline = time.monotonic() + 15
        while len(_lines(demo, "N")) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a duplicate would show up
        got = _lines(demo, "N")
        log = h.env.log()
        assert sorted(l["path"] for l in got) == [f"/rest/api/2/issue/N-{i}" for i in range(6)], log[-3000:]
        assert "handed to the configuration that replaces this one" in log, log[-3000:]
        assert "could not be delivered" not in log
        # The new config answers with the new token set, old tokens still work.
        assert h.env.request("GET", "/rest/api/2/issue/N-9", auth=("c", TOKEN_C)).status == 200
    finally:
        h.env.stop()
