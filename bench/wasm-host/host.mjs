// A minimal proxy-wasm host in Node, for profiling a filter's own wasm code.
//
// Envoy's per-request cost mixes three things: Envoy itself, the wasm<->host crossings, and
// the filter's own code. In Envoy only the total can be measured (perf cannot name V8's JIT
// frames there). Here the host side is nearly free (a few JS lines per host call), V8 is the
// same engine with the same optimizing compiler, and Node's CPU profiler names the wasm
// functions; so the time per request measured here is, to a good approximation, the filter's
// own code, and `--cpu-prof` says where it goes.
//
// This is a measuring instrument, not a test: it answers every host call the way Envoy would
// for one fixed request, and checks nothing about behaviour (the integration tests do that
// through a real Envoy). Like Envoy it runs the root context's timer (proxy_on_tick at the
// period the filter asks for) and answers the HTTP calls the filter dispatches (an audit sink
// replying 200), so work a filter defers to its timer is in the figures too.
//
//   node bench/wasm-host/host.mjs FILTER.wasm CONFIG(file|-|"") REQUEST.json [N]
//
// REQUEST.json: {"headers": [[name, value], ...], "body": "...", "status": 200,
//                "source": "127.0.0.1:5555"}
// Prints one JSON object: ns per request (median of 5 timed runs of N, after an untimed
// warm-up), host calls per request by import (timer and call-answer work included, spread over
// the requests), the timed window on the monotonic clock (for scripts/profile-wasm.py), and
// what the filter did to the last request: the local reply status, if any, and the request
// headers it would have sent upstream.

import { readFileSync } from "node:fs";

const [wasmPath, configArg, requestPath, nArg] = process.argv.slice(2);
if (!wasmPath || configArg === undefined || !requestPath) {
  console.error("usage: host.mjs FILTER.wasm CONFIG REQUEST.json [N]");
  process.exit(2);
}
const N = Number(nArg || 100000);
const config = configArg === "" ? new Uint8Array() : readFileSync(configArg === "-" ? 0 : configArg);
const request = JSON.parse(readFileSync(requestPath, "utf8"));
const body = Buffer.from(request.body || "");
const enc = new TextEncoder();

// Header map types (proxy-wasm ABI 0.2.1) and buffer types.
const REQUEST_HEADERS = 0;
const RESPONSE_HEADERS = 2;
const CALL_RESPONSE_HEADERS = 6;
const REQUEST_BODY = 0;
const CALL_RESPONSE_BODY = 4;
const PLUGIN_CONFIGURATION = 7;

let ex; // the instance's exports (the getter on instance.exports is not free)
let alloc;
// Views of the VM's memory, made again only when it has grown (the old buffer is then
// detached, its length 0): a new DataView per host call would cost more than the call.
let u8 = new Uint8Array(0);
let dv = new DataView(new ArrayBuffer(0));
function views() {
  if (u8.byteLength === 0) {
    u8 = new Uint8Array(ex.memory.buffer);
    dv = new DataView(ex.memory.buffer);
  }
}
let localReply = null;
let headers = [];

// Copies data into the VM through its allocator, as Envoy does, and writes (ptr, len).
function give(data, retPtr, retLen) {
  const p = alloc(data.length);
  views();
  u8.set(data, p);
  dv.setUint32(retPtr, p, true);
  dv.setUint32(retLen, data.length, true);
  return 0;
}
// Short ASCII strings: TextDecoder costs about a microsecond per call in Node, more than
// what is being measured.
function str(p, n) {
  views();
  let s = "";
  for (let i = p; i < p + n; i++) s += String.fromCharCode(u8[i]);
  return s;
}
// Whether the VM's bytes at (p, n) are `want` (pre-encoded): no string is built.
function same(p, n, want) {
  if (n !== want.length) return false;
  views();
  for (let i = 0; i < n; i++) if (u8[p + i] !== want[i]) return false;
  return true;
}

function serializeMap(pairs) {
  const kv = pairs.map(([k, v]) => [enc.encode(k), enc.encode(v)]);
  let size = 4 + kv.length * 8;
  for (const [k, v] of kv) size += k.length + v.length + 2;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, kv.length, true);
  let p = 4 + kv.length * 8;
  kv.forEach(([k, v], i) => {
    view.setUint32(4 + i * 8, k.length, true);
    view.setUint32(8 + i * 8, v.length, true);
    out.set(k, p);
    p += k.length + 1;
    out.set(v, p);
    p += v.length + 1;
  });
  return out;
}

const code = new Uint8Array(8);
new DataView(code.buffer).setBigInt64(0, BigInt(request.status || 200), true);
const source = enc.encode(request.source || "127.0.0.1:5555");
const paths = [
  [enc.encode("source\0address"), source],
  [enc.encode("source\0address\0"), source],
  [enc.encode("response\0code"), code],
  [enc.encode("response\0code\0"), code],
];
// What Envoy's direct response hands a filter, and what the audit sink answers.
const respHeaders = [[":status", String(request.status || 200)], ["content-length", "3"],
  ["content-type", "text/plain"], ["server", "envoy"]];
const respMap = serializeMap(respHeaders);
const callHeaders = [[":status", "200"], ["content-length", "0"]];
const callMap = serializeMap(callHeaders);
const empty = new Uint8Array(0);
const reqHeaders = request.headers;
const reqMap = serializeMap(reqHeaders);
const reqValues = new Map(reqHeaders.map(([, v]) => [v, enc.encode(v)]));
function mapOf(type) {
  if (type === REQUEST_HEADERS) return headers;
  if (type === RESPONSE_HEADERS) return respHeaders;
  if (type === CALL_RESPONSE_HEADERS) return callHeaders;
  return null;
}

let metricId = 0;
let callToken = 0;
let pendingCalls = [];
let tickMs = 0;
let nextTick = 0;
let ticks = 0;
let answered = 0;

const host = {
  proxy_log: () => 0,
  proxy_get_log_level: (ret) => (views(), dv.setUint32(ret, 2, true), 0),
  proxy_get_current_time_nanoseconds: (ret) => {
    // Nanoseconds since the epoch as two 32-bit halves (no BigInt per call); ms resolution.
    const ns = Date.now() * 1e6;
    const hi = Math.floor(ns / 4294967296);
    views();
    dv.setUint32(ret, ns - hi * 4294967296, true);
    dv.setUint32(ret + 4, hi, true);
    return 0;
  },
  proxy_set_tick_period_milliseconds: (ms) => {
    tickMs = ms;
    nextTick = Date.now() + ms;
    return 0;
  },
  proxy_get_buffer_bytes: (type, start, max, retPtr, retLen) => {
    if (type === PLUGIN_CONFIGURATION) return give(config, retPtr, retLen);
    if (type === REQUEST_BODY) return give(body.subarray(start, start + max), retPtr, retLen);
    if (type === CALL_RESPONSE_BODY) return give(empty, retPtr, retLen);
    return 1;
  },
  proxy_get_header_map_pairs: (type, retPtr, retLen) => {
    if (type === REQUEST_HEADERS) return give(headers === reqHeaders ? reqMap : serializeMap(headers), retPtr, retLen);
    if (type === RESPONSE_HEADERS) return give(respMap, retPtr, retLen);
    if (type === CALL_RESPONSE_HEADERS) return give(callMap, retPtr, retLen);
    return give(serializeMap([]), retPtr, retLen);
  },
  proxy_get_header_map_value: (type, kp, kn, retPtr, retLen) => {
    const map = mapOf(type);
    if (!map) return 1;
    const key = str(kp, kn);
    const hit = map.find(([k]) => k === key);
    return hit ? give(reqValues.get(hit[1]) || enc.encode(hit[1]), retPtr, retLen) : 1;
  },
  proxy_remove_header_map_value: (type, kp, kn) => {
    if (type === REQUEST_HEADERS) {
      const key = str(kp, kn);
      headers = headers.filter(([k]) => k !== key);
    }
    return 0;
  },
  proxy_replace_header_map_value: (type, kp, kn, vp, vn) => {
    if (type === REQUEST_HEADERS) {
      const key = str(kp, kn);
      headers = headers.filter(([k]) => k !== key);
      headers.push([key, str(vp, vn)]);
    }
    return 0;
  },
  proxy_add_header_map_value: (type, kp, kn, vp, vn) => {
    if (type === REQUEST_HEADERS) headers = [...headers, [str(kp, kn), str(vp, vn)]];
    return 0;
  },
  proxy_set_header_map_pairs: () => 0,
  proxy_get_property: (pp, pn, retPtr, retLen) => {
    for (const [path, value] of paths) if (same(pp, pn, path)) return give(value, retPtr, retLen);
    return 1;
  },
  proxy_set_property: () => 0,
  proxy_define_metric: (type, np, nn, ret) => (views(), dv.setUint32(ret, ++metricId, true), 0),
  proxy_increment_metric: () => 0,
  proxy_record_metric: () => 0,
  proxy_get_metric: () => 1,
  proxy_send_local_response: (status) => ((localReply = status), 0),
  proxy_http_call: (up, upn, hp, hn, bp, bn, tp, tn, timeout, ret) => {
    views();
    dv.setUint32(ret, ++callToken, true);
    pendingCalls.push(callToken);
    return 0;
  },
  proxy_dispatch_http_call: (up, upn, hp, hn, bp, bn, tp, tn, timeout, ret) => host.proxy_http_call(
    up, upn, hp, hn, bp, bn, tp, tn, timeout, ret),
  proxy_set_effective_context: () => 0,
  proxy_continue_stream: () => 0,
  proxy_close_stream: () => 0,
  proxy_done: () => 0,
};

const module = new WebAssembly.Module(readFileSync(wasmPath));
const env = {};
const importNames = [];
const counts = [];
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.kind !== "function") continue;
  const f = host[imp.name] || (() => 0);
  const i = importNames.length;
  importNames.push(imp.name);
  counts.push(0);
  env[imp.name] = (a, b, c, d, e, g, h, j, k, l) => {
    counts[i]++;
    return f(a, b, c, d, e, g, h, j, k, l);
  };
}
const instance = new WebAssembly.Instance(module, {
  env,
  wasi_snapshot_preview1: new Proxy({}, { get: () => () => 0 }),
});
ex = instance.exports;
alloc = ex.proxy_on_memory_allocate || ex.malloc;
const onRequestBody = ex.proxy_on_request_body;
const onResponseHeaders = ex.proxy_on_response_headers;
const onTick = ex.proxy_on_tick;
const onCallResponse = ex.proxy_on_http_call_response;
(ex._initialize || ex._start || (() => {}))();
ex.proxy_on_context_create(1, 0);
if (ex.proxy_on_vm_start) ex.proxy_on_vm_start(1, 0);
if (!ex.proxy_on_configure(1, config.length)) {
  console.error("the filter refused its configuration");
  process.exit(1);
}

// The event loop's other work, between requests: answers to dispatched calls, the timer.
function events() {
  if (pendingCalls.length) {
    const due = pendingCalls;
    pendingCalls = [];
    for (const token of due) {
      answered++;
      if (onCallResponse) onCallResponse(1, token, callHeaders.length, 0, 0);
    }
  }
  if (tickMs > 0 && onTick) {
    const now = Date.now();
    if (now >= nextTick) {
      nextTick = now + tickMs;
      ticks++;
      onTick(1);
    }
  }
}

let nextId = 2;
function one() {
  const id = nextId++;
  headers = reqHeaders; // copied on the first change
  localReply = null;
  ex.proxy_on_context_create(id, 1);
  ex.proxy_on_request_headers(id, headers.length, body.length === 0 ? 1 : 0);
  if (body.length > 0 && onRequestBody) onRequestBody(id, body.length, 1);
  if (onResponseHeaders) onResponseHeaders(id, respHeaders.length, 1);
  // Envoy's order: the stream's onDestroy (proxy_on_done), then the access log (proxy_on_log),
  // then the context goes (proxy_on_delete).
  ex.proxy_on_done(id);
  ex.proxy_on_log(id);
  ex.proxy_on_delete(id);
}

function loop(n) {
  for (let i = 0; i < n; i++) {
    one();
    if ((i & 15) === 15) events();
  }
}

loop(Math.min(N, 50000)); // let V8 tier up and the allocator settle
counts.fill(0);
ticks = 0;
answered = 0;
const runs = [];
const start = process.hrtime.bigint();
for (let r = 0; r < 5; r++) {
  const t0 = process.hrtime.bigint();
  loop(N);
  runs.push(Number(process.hrtime.bigint() - t0) / N);
}
const end = process.hrtime.bigint();
runs.sort((a, b) => a - b);
const perReq = {};
importNames.forEach((name, i) => {
  if (counts[i]) perReq[name] = +(counts[i] / (5 * N)).toFixed(4);
});
console.log(JSON.stringify({
  wasm: wasmPath,
  requests_per_run: N,
  ns_per_request: +runs[2].toFixed(1),
  runs_ns: runs.map((x) => +x.toFixed(1)),
  host_calls_per_request: perReq,
  host_calls_total: +Object.values(perReq).reduce((a, b) => a + b, 0).toFixed(2),
  timer_ticks: ticks,
  http_calls_answered: answered,
  // The timed runs on the monotonic clock in µs, the clock of `node --cpu-prof` timestamps.
  measured_us: [Number(start / 1000n), Number(end / 1000n)],
  local_reply: localReply,
  upstream_headers: localReply === null ? headers : null,
}));
