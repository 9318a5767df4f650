#!/usr/bin/env python3
"""`make profile`: where tokengate's own wasm code spends its time.

Runs dist/tokengate.wasm under bench/wasm-host/host.mjs (a proxy-wasm host in Node that answers
host calls itself, nearly for free; see that file) for one of the benchmark cases, with the
plugin configuration and request that `make bench` uses (imported from scripts/bench.py):

1. checks the case as the benchmark does (the request allowed, its refused requests refused);
2. a timed run without the profiler: ns per request;
3. the same run under ``node --cpu-prof --cpu-prof-interval 50`` (µs);
4. prints the top functions by self and by inclusive time among the samples taken during the
   timed runs (host.mjs reports that window), each with its share and an estimate of its ns
   per request (share × the unprofiled ns per request). Rust symbols are demangled (v0, and
   legacy) by a small best-effort demangler, without crate hashes.

Usage: scripts/profile-wasm.py [bearer|basic10|json|100k] [--requests N] [--interval US]
[--top K] [--width W] [--keep]. The work directory is a temporary one, removed at the end
(--keep leaves it, with the .cpuprofile, which Chrome DevTools can open).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

CASES = {"bearer": "tg-bearer", "basic10": "tg-basic10", "json": "tg-json", "100k": "tg-100k"}


# --------------------------------------------------------------------------- demangling

_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BASIC = {"a": "i8", "b": "bool", "c": "char", "d": "f64", "e": "str", "f": "f32", "h": "u8", "i": "isize",
          "j": "usize", "l": "i32", "m": "u32", "n": "i128", "o": "u128", "s": "i16", "t": "u16", "u": "()",
          "v": "...", "x": "i64", "y": "u64", "z": "!", "p": "_"}


class _V0:
    """A Rust v0 symbol (after `_R`), printed without crate hashes. Raises ValueError on what
    it does not know."""

    def __init__(self, sym: str):
        self.s, self.i, self.depth = sym, 0, 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def eat(self, c: str) -> bool:
        if self.peek() == c:
            self.i += 1
            return True
        return False

    def next(self) -> str:
        c = self.peek()
        if not c:
            raise ValueError("end of symbol")
        self.i += 1
        return c

    def b62(self) -> int:
        if self.eat("_"):
            return 0
        v = 0
        while True:
            c = self.next()
            if c == "_":
                return v + 1
            v = v * 62 + _B62.index(c)

    def opt_b62(self, tag: str) -> int:
        return self.b62() + 1 if self.eat(tag) else 0

    def decimal(self) -> int:
        """"0", or digits not starting with 0 ("00" is two numbers)."""
        start = self.i
        if self.eat("0"):
            return 0
        while self.peek().isdigit():
            self.i += 1
        if start == self.i:
            raise ValueError("number expected")
        return int(self.s[start:self.i])

    def undisambiguated(self) -> str:
        self.eat("u")  # punycode: printed as encoded
        n = self.decimal()
        self.eat("_")
        name = self.s[self.i:self.i + n]
        if len(name) != n:
            raise ValueError("short identifier")
        self.i += n
        return name

    def ident(self) -> tuple:
        dis = self.opt_b62("s")
        return self.undisambiguated(), dis

    def backref(self, parse):
        pos = self.b62()
        if pos >= self.i:
            raise ValueError("forward backref")
        self.depth += 1
        if self.depth > 100:
            raise ValueError("backref loop")
        saved, self.i = self.i, pos
        try:
            return parse()
        finally:
            self.i = saved
            self.depth -= 1

    def path(self, value: bool = True) -> str:
        tag = self.next()
        if tag == "C":
            return self.ident()[0]
        if tag == "M":
            self.opt_b62("s")
            self.path()
            return f"<{self.type()}>"
        if tag == "X":
            self.opt_b62("s")
            self.path()
            t = self.type()
            return f"<{t} as {self.path(False)}>"
        if tag == "Y":
            t = self.type()
            return f"<{t} as {self.path(False)}>"
        if tag == "N":
            ns = self.next()
            p = self.path(value)
            name, dis = self.ident()
            if ns.isupper():
                kind = {"C": "closure", "S": "shim"}.get(ns, ns)
                return f"{p}::{{{kind}{':' + name if name else ''}#{dis}}}"
            return f"{p}::{name}" if name else p
        if tag == "I":
            p = self.path(value)
            args = []
            while not self.eat("E"):
                a = self.generic_arg()
                if a is not None:
                    args.append(a)
            return f"{p}{'::' if value else ''}<{', '.join(args)}>" if args else p
        if tag == "B":
            return self.backref(lambda: self.path(value))
        raise ValueError(f"path tag {tag!r}")

    def generic_arg(self):
        if self.eat("L"):
            self.b62()
            return None  # lifetimes are not printed
        if self.eat("K"):
            return self.const()
        return self.type()

    def const(self) -> str:
        if self.eat("B"):
            return self.backref(self.const)
        if self.eat("p"):
            return "_"
        t = self.next()
        if t not in _BASIC:
            raise ValueError("structural constant")
        neg = self.eat("n")
        start = self.i
        while self.peek() != "_":
            self.next()
        digits = self.s[start:self.i]
        self.i += 1
        v = int(digits, 16) if digits else 0
        if t == "b":
            return "true" if v else "false"
        if t == "c":
            return repr(chr(v))
        return str(-v if neg else v)

    def type(self) -> str:
        c = self.peek()
        if c in _BASIC:
            self.i += 1
            return _BASIC[c]
        if c in "CMXYNI":
            return self.path(False)
        self.i += 1
        if c == "A":
            t = self.type()
            return f"[{t}; {self.const()}]"
        if c == "S":
            return f"[{self.type()}]"
        if c == "T":
            ts = []
            while not self.eat("E"):
                ts.append(self.type())
            return "(" + ", ".join(ts) + ("," if len(ts) == 1 else "") + ")"
        if c in "RQ":
            if self.eat("L"):
                self.b62()
            return ("&" if c == "R" else "&mut ") + self.type()
        if c in "PO":
            return ("*const " if c == "P" else "*mut ") + self.type()
        if c == "F":
            self.opt_b62("G")
            unsafe = self.eat("U")
            if self.eat("K") and not self.eat("C"):
                self.undisambiguated()
            args = []
            while not self.eat("E"):
                args.append(self.type())
            ret = self.type()
            return f"{'unsafe ' if unsafe else ''}fn({', '.join(args)})" + ("" if ret == "()" else f" -> {ret}")
        if c == "D":
            self.opt_b62("G")
            traits = []
            while not self.eat("E"):
                p = self.path(False)
                binds = []
                while self.eat("p"):
                    name = self.undisambiguated()
                    binds.append(f"{name} = {self.type()}")
                if binds:
                    p = p[:-1] + ", " + ", ".join(binds) + ">" if p.endswith(">") else p + "<" + ", ".join(binds) + ">"
                traits.append(p)
            if self.eat("L"):
                self.b62()
            return "dyn " + " + ".join(traits)
        if c == "B":
            return self.backref(self.type)
        raise ValueError(f"type tag {c!r}")


def _identifiers(sym: str) -> str:
    """Fallback: the `<len><ident>` runs of a v0 symbol, crate disambiguators skipped."""
    s = re.sub(r"s[0-9a-zA-Z]*_(?=u?\d)", "", sym[2:])
    out, i = [], 0
    while i < len(s):
        m = re.match(r"u?(\d+)_?", s[i:])
        if m and (i == 0 or not s[i - 1].isdigit()):
            n = int(m.group(1))
            name = s[i + m.end():i + m.end() + n]
            if len(name) == n and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or "-"):
                out.append(name)
                i += m.end() + n
                continue
        i += 1
    return "::".join(out) or sym


_LEGACY = {"$LT$": "<", "$GT$": ">", "$RF$": "&", "$BP$": "*", "$C$": ",", "$SP$": "@", "$u20$": " ",
           "$u27$": "'", "$u5b$": "[", "$u5d$": "]", "$u7b$": "{", "$u7d$": "}", "$u7e$": "~"}


def _legacy(sym: str) -> str:
    parts, i = [], 3
    while i < len(sym) and sym[i] != "E":
        m = re.match(r"\d+", sym[i:])
        if not m:
            return sym
        n = int(m.group(0))
        i += m.end()
        parts.append(sym[i:i + n])
        i += n
    if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()
    text = "::".join(parts)
    for k, v in _LEGACY.items():
        text = text.replace(k, v)
    return text.replace("..", "::")


def demangle(sym: str) -> str:
    """Best effort: Rust v0 (`_R...`) and legacy (`_ZN...E`) symbols, without crate hashes;
    anything else unchanged."""
    base = re.sub(r"\.(llvm|cold|lto_priv)\..*$", "", sym)
    if base.startswith("_R"):
        p = _V0(base[2:])
        try:
            if p.peek().isdigit():
                raise ValueError("encoding version")
            return p.path()
        except (ValueError, IndexError, RecursionError):
            return _identifiers(base)
    if base.startswith("_ZN"):
        return _legacy(base)
    return sym


# --------------------------------------------------------------------------- profile

# host.mjs's request loop and module body: every sample is under them.
DRIVER = {"loop", "one", ""}


def frame_name(cf: dict) -> tuple:
    """(display name, kind) of a profile node: kind wasm, js (host.mjs), driver (host.mjs's
    request loop), gc or other (V8, Node)."""
    fn, url = cf["functionName"], cf["url"]
    if url.startswith("wasm://"):
        return demangle(fn) if fn else f"wasm-function@{cf['columnNumber']}", "wasm"
    if fn == "(garbage collector)":
        return fn, "gc"
    if fn.startswith("("):
        return fn, "other"
    if url.endswith("host.mjs"):
        name = f"[host.mjs] {fn or '(anonymous)'}:{cf['lineNumber'] + 1}"
        return name, "driver" if fn in DRIVER else "js"
    return f"[{os.path.basename(url) or 'native'}] {fn or '(anonymous)'}", "other"


def analyse(prof: dict, window: tuple) -> dict:
    nodes = {n["id"]: n for n in prof["nodes"]}
    parent = {c: n["id"] for n in prof["nodes"] for c in n.get("children", [])}
    names = {i: frame_name(n["callFrame"]) for i, n in nodes.items()}
    lo, hi = window
    t = prof["startTime"]
    picked = []
    for sid, dt in zip(prof["samples"], prof["timeDeltas"]):
        t += dt
        if lo <= t <= hi:
            picked.append(sid)
    whole = False
    if len(picked) < 100:  # the clocks did not line up: take everything, say so
        picked, whole = list(prof["samples"]), True
    self_c: collections.Counter = collections.Counter()
    incl_c: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    for sid in picked:
        name, kind = names[sid]
        self_c[name] += 1
        kinds[kind] += 1
        seen = set()
        n = sid
        while n is not None:
            nm, k = names[n]
            # Frames every sample is under (the driver, Node's module runner) are left out.
            if nm not in seen and (k in ("wasm", "js", "gc") or (k == "other" and n == sid)):
                seen.add(nm)
                incl_c[nm] += 1
            n = parent.get(n)
    return {"samples": len(picked), "whole": whole, "self": self_c, "incl": incl_c, "kinds": kinds}


def short(name: str, width: int) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def report(case, res: dict, prof_res: dict, a: dict, args) -> None:
    n = a["samples"]
    ns = res["ns_per_request"]
    pct = lambda c: 100.0 * c / n  # noqa: E731
    kinds = a["kinds"]
    print(f"\ntokengate wasm profile: {case.name} ({case.label})")
    print(f"  wasm {os.path.relpath(case.wasm, bench.REPO)}, {args.requests:,} requests × 5 timed runs, "
          f"node --cpu-prof-interval {args.interval} µs")
    print(f"  ns/request: {ns:.0f} unprofiled (profiled run: {prof_res['ns_per_request']:.0f}); host calls per request "
          f"{res['host_calls_total']:g}")
    print(f"  samples{' (whole process: the timed window was not found)' if a['whole'] else ' in the timed runs'}: "
          f"{n:,} — wasm {pct(kinds['wasm']):.1f}%, host.mjs host calls {pct(kinds['js']):.1f}%, "
          f"request loop {pct(kinds['driver']):.1f}%, GC {pct(kinds['gc']):.1f}%, other {pct(kinds['other']):.1f}%")
    print("  ns/req = share × unprofiled ns/request (an estimate). proxy_on_* are the VM's entry points; "
          "[host.mjs] frames are the stub host (env.<computed> counts calls and holds the wasm<->JS transition).")
    for title, main, other in (("self", a["self"], a["incl"]), ("inclusive", a["incl"], a["self"])):
        print(f"\nTop {args.top} by {title} time")
        head = ("self %", "ns/req", "incl %") if title == "self" else ("incl %", "ns/req", "self %")
        print(f"  {head[0]:>6} {head[1]:>7} {head[2]:>6}  function")
        for name, c in main.most_common(args.top):
            print(f"  {pct(c):6.1f} {pct(c) * ns / 100:7.0f} {pct(other[name]):6.1f}  {short(name, args.width)}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Profile tokengate's wasm code under bench/wasm-host/host.mjs.")
    ap.add_argument("case", nargs="?", default="bearer",
                    help="bearer (default), basic10, json, 100k, or a wasm case name of bench.py")
    ap.add_argument("--requests", type=int, default=100_000, help="requests per timed run (5 runs)")
    ap.add_argument("--interval", type=int, default=50, help="sampling interval, µs")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--width", type=int, default=110, help="longest function name printed")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (and the .cpuprofile)")
    args = ap.parse_args()
    name = CASES.get(args.case, args.case)
    cases = {c.name: c for c in bench.wasmhost_cases([])}
    if name not in cases:
        print(f"profile: unknown case {args.case!r}; one of {', '.join(CASES)} or {', '.join(cases)}", file=sys.stderr)
        return 2
    case = cases[name]
    for path in (case.wasm, bench.WASM_HOST):
        if not os.path.exists(path):
            raise bench.BenchError(f"{path} is missing (make profile builds the wasm: make wasm)")
    if not shutil.which("node"):
        raise bench.BenchError("node is missing (make profile installs Debian's nodejs)")
    workdir = tempfile.mkdtemp(prefix="tokengate-profile-")
    try:
        config_path, request_path, refused_paths = bench.write_wasmhost_inputs(case, workdir)
        bench.check_wasmhost(case, config_path, request_path, refused_paths)
        bench.log(f"{case.name}: {case.sanity}; timed run")
        res = bench.run_host(case.wasm, config_path, request_path, args.requests)
        bench.check_wasmhost_allowed(case, res)
        bench.log(f"{case.name}: {res['ns_per_request']:.0f} ns/request; profiled run")
        prof_dir = os.path.join(workdir, "prof")
        prof_res = bench.run_host(case.wasm, config_path, request_path, args.requests,
                                  node_args=("--cpu-prof", "--cpu-prof-interval", str(args.interval),
                                             "--cpu-prof-dir", prof_dir))
        files = sorted(glob.glob(os.path.join(prof_dir, "*.cpuprofile")))
        if not files:
            raise bench.BenchError(f"node wrote no .cpuprofile in {prof_dir}")
        with open(files[-1]) as f:
            prof = json.load(f)
        report(case, res, prof_res, analyse(prof, tuple(prof_res["measured_us"])), args)
        if args.keep:
            print(f"\nkept: {workdir} (profile {files[-1]})")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (bench.BenchError, subprocess.SubprocessError) as e:
        print(f"profile: {e}", file=sys.stderr)
        sys.exit(1)
