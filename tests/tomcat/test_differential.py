"""Differential test: tokengate's decisions against what the real Tomcat 10 and Jackson resolve
(see differential.py). Every request tokengate lets through must be one the same token line
allows on Tomcat's view, with the acting user as the only identity Tomcat sees.

`make test` runs the fixed catalog plus TOMCAT_FUZZ_COUNT (default 10,000) generated requests
from TOMCAT_FUZZ_SEED (default 1), each through both Envoy modes; `make fuzz-tomcat` runs more.
"""

import json
import os
import time

import differential

SEED = int(os.environ.get("TOMCAT_FUZZ_SEED", "1"))
COUNT = int(os.environ.get("TOMCAT_FUZZ_COUNT", "10000"))
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _run(tomcat_envoys, reqs, name, h2=False):
    ports = {m: e.port for m, e in tomcat_envoys.items()}
    t0 = time.monotonic()
    outcomes = (differential.run_h2 if h2 else differential.run)(reqs, ports)
    s = differential.summary(outcomes)
    s["seconds"] = round(time.monotonic() - t0, 1)
    s["catalog"] = len(reqs)
    os.makedirs(os.path.join(REPO, ".run"), exist_ok=True)
    with open(os.path.join(REPO, ".run", f"tomcat-{name}.json"), "w") as f:
        json.dump({"summary": s, "by_origin": by_origin(outcomes),
                   "notes": sorted({n for o in outcomes for n in o.notes})[:50]}, f, indent=1)
    print(f"\n{name}: {json.dumps(s)}")
    return outcomes, s


def by_origin(outcomes):
    out = {}
    for o in outcomes:
        k = o.req.origin.split(" ")[0]
        d = out.setdefault(k, {})
        d[o.kind] = d.get(o.kind, 0) + 1
    return out


def test_the_catalog_agrees_with_tomcat(tomcat_envoys):
    outcomes, s = _run(tomcat_envoys, differential.catalog(), "catalog")
    assert s["error"] == 0, differential.report([o for o in outcomes if o.kind == "error"])
    assert s["disagreements"] == 0, differential.report(outcomes)
    # the catalog is not vacuous: each part has requests allowed and requests refused
    kinds = by_origin(outcomes)
    for part in ("canonical", "query", "json", "number", "unicode"):
        assert kinds[part].get("allowed", 0) > 0 and kinds[part].get("refused", 0) > 0, (part, kinds[part])


def test_the_catalog_agrees_with_tomcat_over_http2(tomcat_envoys):
    """The catalog again, the client speaking HTTP/2 (h2c) to Envoy, bodies in two DATA frames."""
    outcomes, s = _run(tomcat_envoys, differential.catalog(), "catalog-h2", h2=True)
    assert s["disagreements"] == 0, differential.report(outcomes)
    kinds = by_origin(outcomes)
    for part in ("canonical", "query", "json", "number", "unicode"):
        assert kinds[part].get("allowed", 0) > 0 and kinds[part].get("refused", 0) > 0, (part, kinds[part])


def test_generated_requests_agree_with_tomcat(tomcat_envoys):
    reqs = differential.generate(SEED, COUNT)
    outcomes, s = _run(tomcat_envoys, reqs, f"generated-{SEED}-{COUNT}")
    assert s["error"] == 0, differential.report([o for o in outcomes if o.kind == "error"])
    assert s["disagreements"] == 0, differential.report(outcomes)
    assert s["allowed"] > COUNT // 20 and s["refused"] > COUNT // 20, s
