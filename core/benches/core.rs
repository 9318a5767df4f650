//! Native micro-benchmarks of tokengate's core (no proxy-wasm, no Envoy): `make bench` runs
//! them with `cargo bench --bench core`.
//!
//! * restriction evaluation: a token with 1 and with 50 header-only lines, a JsonData line on
//!   a 1 KiB and a 1 MiB body;
//! * token lookup (SHA-256 of the credential + index) with 10 and with 100,000 tokens;
//! * the whole per-request pipeline (`decide_headers`, `decide_body`) for the request shapes
//!   `scripts/bench.py` sends through Envoy, so the core's share of the filter's cost is known;
//! * config load time and memory for 100,000 tokens, from JSON text and from the serialized
//!   `google.protobuf.Struct` that Envoy hands a YAML configuration over as. Memory is counted
//!   by the global allocator of this binary (bytes held by the loaded config, and the peak
//!   while loading).
//!
//! Timing: `std::time::Instant` and `std::hint::black_box`; each case is calibrated to about
//! 20 ms per round, run for several rounds, and reported as the median ns/op (min and max
//! beside it). Arguments: `--quick` (few iterations, e.g. under callgrind), and any other
//! non-option argument filters the cases by substring.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokengate_core::canonical::Query;
use tokengate_core::config::{self, Config};
use tokengate_core::digest;
use tokengate_core::policy::{self, Decision, RequestHeaders};
use tokengate_core::restriction::{BodyVerdict, HeadVerdict, RequestView, Restrictions};

// ------------------------------------------------------------------ counting allocator

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ------------------------------------------------------------------ timing

struct Opts {
    quick: bool,
    filters: Vec<String>,
}

impl Opts {
    fn from_args() -> Opts {
        let mut quick = std::env::var_os("BENCH_CORE_QUICK").is_some();
        let mut filters = Vec::new();
        for a in std::env::args().skip(1) {
            if a == "--quick" {
                quick = true;
            } else if !a.starts_with('-') {
                filters.push(a);
            }
        }
        Opts { quick, filters }
    }

    fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}

struct Row {
    name: String,
    median: f64,
    min: f64,
    max: f64,
    iters: u64,
    note: String,
}

/// Median ns/op of `f` over several rounds, each calibrated to about 20 ms.
fn time<T>(opts: &Opts, mut f: impl FnMut() -> T) -> (f64, f64, f64, u64) {
    let (target, rounds) = if opts.quick {
        (Duration::from_micros(500), 3)
    } else {
        (Duration::from_millis(20), 11)
    };
    let mut iters: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        let e = t.elapsed();
        if e >= target || iters >= 1 << 30 {
            if e < target {
                break;
            }
            // Scale to the target from this measurement.
            let per = e.as_nanos() as f64 / iters as f64;
            iters = ((target.as_nanos() as f64 / per).ceil() as u64).max(1);
            break;
        }
        iters = iters.saturating_mul(if e < target / 10 { 10 } else { 2 });
    }
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        iters,
    )
}

fn run<T>(opts: &Opts, rows: &mut Vec<Row>, name: &str, note: &str, f: impl FnMut() -> T) {
    if !opts.wants(name) {
        return;
    }
    let (median, min, max, iters) = time(opts, f);
    rows.push(Row {
        name: name.to_owned(),
        median,
        min,
        max,
        iters,
        note: note.to_owned(),
    });
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

// ------------------------------------------------------------------ fixtures

fn token_of(i: usize) -> String {
    format!("tg_bench{i:010}abcdefghijklmnopqrstuv")
}

/// A plugin configuration with `n` user-bound tokens given by digest (as in secure_mode).
fn token_set(n: usize, extra: Vec<Value>) -> Value {
    let mut tokens: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": format!("t{i}"),
                "name": format!("bench token {i}"),
                "user": format!("user{i}"),
                "sha256": digest::to_hex(&digest::sha256(token_of(i).as_bytes())),
            })
        })
        .collect();
    tokens.extend(extra);
    json!({"auth_methods": "both", "secure_mode": true, "tokens": tokens})
}

fn load_value(v: &Value) -> Config {
    config::load(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("bench config: {e}"))
}

fn header_lines(n: usize) -> Vec<String> {
    // Distinct projects; the benchmarked request matches only the last line (worst case).
    (1..=n)
        .map(|i| format!(r"[GET]/rest/api/2/issue/P{i}-\d+"))
        .collect()
}

const JSON_LINE: &str = r"[POST]/rest/api/2/issue [JsonData::fields.project.key==BENCH]";

/// A Jira create-issue body of exactly `size` bytes (padding in the description).
fn issue_body(size: usize) -> Vec<u8> {
    let make = |pad: usize| {
        format!(
            r#"{{"fields":{{"project":{{"key":"BENCH"}},"summary":"benchmark issue","issuetype":{{"name":"Task"}},"labels":["a","b","c"],"priority":{{"id":"3"}},"description":"{}"}}}}"#,
            "x".repeat(pad)
        )
    };
    let base = make(0).len();
    let body = make(size.saturating_sub(base));
    assert_eq!(body.len(), size.max(base));
    body.into_bytes()
}

fn view<'a>(method: &'a str, path: &'a str) -> RequestView<'a> {
    RequestView {
        method,
        path,
        query: Query::parse("").unwrap(),
        form_body: false,
    }
}

// -------------------------------------------------- google.protobuf.Struct encoding

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, field: u64, body: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn pb_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::Null => {
            varint(&mut out, 1 << 3);
            varint(&mut out, 0);
        }
        Value::Number(n) => {
            varint(&mut out, (2 << 3) | 1);
            out.extend_from_slice(&n.as_f64().unwrap().to_le_bytes());
        }
        Value::String(s) => field_bytes(&mut out, 3, s.as_bytes()),
        Value::Bool(b) => {
            varint(&mut out, 4 << 3);
            varint(&mut out, u64::from(*b));
        }
        Value::Object(_) => field_bytes(&mut out, 5, &pb_struct(v)),
        Value::Array(items) => {
            let mut list = Vec::new();
            for item in items {
                field_bytes(&mut list, 1, &pb_value(item));
            }
            field_bytes(&mut out, 6, &list);
        }
    }
    out
}

/// The bytes Envoy hands the VM for a `google.protobuf.Struct` plugin configuration.
fn pb_struct(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, val) in v.as_object().unwrap() {
        let mut entry = Vec::new();
        field_bytes(&mut entry, 1, k.as_bytes());
        field_bytes(&mut entry, 2, &pb_value(val));
        field_bytes(&mut out, 1, &entry);
    }
    out
}

// ------------------------------------------------------------------ pipeline fake host

struct Headers(Vec<(&'static str, Vec<u8>)>);

impl RequestHeaders for Headers {
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| std::borrow::Cow::Borrowed(v.as_slice()))
    }
    fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|(n, _)| *n == name).count()
    }
    fn source_address(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        Some(std::borrow::Cow::Borrowed(b"127.0.0.1:40000"))
    }
}

const NOW_MS: i64 = 1_800_000_000_000;

// ------------------------------------------------------------------ cases

fn restriction_cases(opts: &Opts, rows: &mut Vec<Row>) {
    let one = Restrictions::compile(&header_lines(1)).unwrap();
    let fifty = Restrictions::compile(&header_lines(50)).unwrap();
    let req1 = view("GET", "/rest/api/2/issue/P1-123");
    let req50 = view("GET", "/rest/api/2/issue/P50-123");
    assert_eq!(one.evaluate_head(&req1), HeadVerdict::Allow(Some(1)));
    assert_eq!(fifty.evaluate_head(&req50), HeadVerdict::Allow(Some(50)));
    run(
        opts,
        rows,
        "restriction: 1 header-only line",
        "evaluate_head, allowed",
        || one.evaluate_head(black_box(&req1)),
    );
    run(
        opts,
        rows,
        "restriction: 50 header-only lines",
        "evaluate_head, allowed by line 50 (all tried)",
        || fifty.evaluate_head(black_box(&req50)),
    );
    let denied = view("GET", "/rest/api/2/issue/OTHER-1");
    run(
        opts,
        rows,
        "restriction: 50 header-only lines, denied",
        "evaluate_head, no line matches",
        || fifty.evaluate_head(black_box(&denied)),
    );

    let json = Restrictions::compile(&[JSON_LINE.to_owned()]).unwrap();
    let post = view("POST", "/rest/api/2/issue");
    assert_eq!(json.evaluate_head(&post), HeadVerdict::NeedBody);
    for (label, size) in [("1 KiB", 1024), ("1 MiB", 1 << 20)] {
        let body = issue_body(size);
        assert_eq!(json.evaluate_body(&post, &body), Ok(BodyVerdict::Allow(1)));
        let per_byte = size as f64;
        let name = format!("restriction: JsonData line, {label} body");
        if !opts.wants(&name) {
            continue;
        }
        let (median, min, max, iters) = time(opts, || {
            json.evaluate_body(black_box(&post), black_box(&body))
        });
        rows.push(Row {
            name,
            median,
            min,
            max,
            iters,
            note: format!(
                "evaluate_body (strict parse + lookup), {:.0} MB/s",
                per_byte / median * 1e3
            ),
        });
    }
}

fn lookup_cases(opts: &Opts, rows: &mut Vec<Row>) {
    // Headline comparison: the same 10 tokens (present in both sets) looked up in a set of 10
    // and in a set of 100,000, so only the set's size differs. A second row per size rotates
    // over up to 1,024 tokens spread through the set: what a large set costs once its entries
    // no longer sit in L1 (the 10-token set always does).
    let mut same = Vec::new();
    for n in [10usize, 100_000] {
        let cfg = load_value(&token_set(n, Vec::new()));
        let hot: Vec<String> = (0..10).map(token_of).collect();
        let spread: Vec<String> = (0..n.min(1024))
            .map(|i| token_of(i * (n / n.min(1024))))
            .collect();
        for p in hot.iter().chain(&spread) {
            assert!(cfg.find(p).is_some());
        }
        let digests: Vec<digest::Digest> =
            hot.iter().map(|p| digest::sha256(p.as_bytes())).collect();
        let mut i = 0usize;
        let name = format!("lookup: {n} tokens (sha256 + index)");
        run(
            opts,
            rows,
            &name,
            "Config::find, the same 10 present tokens",
            || {
                i = (i + 1) % hot.len();
                cfg.find(black_box(&hot[i])).map(|(k, _)| k)
            },
        );
        if let Some(r) = rows.last().filter(|r| r.name == name) {
            same.push((r.median, r.min));
        }
        let mut j = 0usize;
        run(
            opts,
            rows,
            &format!("lookup: {n} tokens (index only)"),
            "Config::find_digest, the same 10 digests precomputed",
            || {
                j = (j + 1) % digests.len();
                cfg.find_digest(black_box(&digests[j])).map(|(k, _)| k)
            },
        );
        if n > 10 {
            let mut k = 0usize;
            run(
                opts,
                rows,
                &format!("lookup: {n} tokens, 1,024 spread probes"),
                "Config::find, entries out of L1 (cache residency, not the index)",
                || {
                    k = (k + 1) % spread.len();
                    cfg.find(black_box(&spread[k])).map(|(t, _)| t)
                },
            );
        }
        let missing = "tg_not_a_configured_token_at_all_0000";
        run(
            opts,
            rows,
            &format!("lookup: {n} tokens, unknown token"),
            "Config::find, absent token",
            || cfg.find(black_box(missing)).map(|(k, _)| k),
        );
    }
    if let [(small, small_min), (large, large_min)] = same[..] {
        // Medians move with a busy machine; the minimum is the steadier figure for this
        // comparison, so both are shown.
        println!(
            "lookup at 100,000 tokens vs 10 tokens (same 10 tokens looked up): median {:+.1}%, min {:+.1}% (target within 5%)",
            (large / small - 1.0) * 100.0,
            (large_min / small_min - 1.0) * 100.0
        );
    }
}

/// The request shapes `scripts/bench.py` sends, through the whole core pipeline.
fn pipeline_cases(opts: &Opts, rows: &mut Vec<Row>) {
    let bearer_tok = "tg_benchbearer000000000000000000000";
    let basic_tok = "tg_benchbasic0000000000000000000000";
    let json_tok = "tg_benchjson00000000000000000000000";
    let extra = vec![
        json!({"id": "bearer", "user": "bench", "sha256": digest::to_hex(&digest::sha256(bearer_tok.as_bytes()))}),
        json!({"id": "basic", "user": "bench", "sha256": digest::to_hex(&digest::sha256(basic_tok.as_bytes())),
               "limit_to": header_lines(10)}),
        json!({"id": "json", "user": "bench", "sha256": digest::to_hex(&digest::sha256(json_tok.as_bytes())),
               "limit_to": [JSON_LINE]}),
    ];
    let cfg = load_value(&token_set(7, extra));
    let bearer = format!("Bearer {bearer_tok}").into_bytes();
    let basic = format!(
        "Basic {}",
        tokengate_core::credential::encode_base64(format!("bench:{basic_tok}").as_bytes())
    )
    .into_bytes();
    let json_auth = format!("Bearer {json_tok}").into_bytes();
    let body = issue_body(1024);

    let hb = Headers(vec![("authorization", bearer)]);
    assert!(matches!(
        policy::decide_headers(&cfg, "GET", "/rest/api/2/myself", &hb, NOW_MS, true),
        Decision::Allow(_)
    ));
    run(
        opts,
        rows,
        "pipeline: Bearer, no lines",
        "decide_headers GET /rest/api/2/myself",
        || {
            policy::decide_headers(
                &cfg,
                "GET",
                black_box("/rest/api/2/myself"),
                &hb,
                NOW_MS,
                true,
            )
        },
    );
    let hs = Headers(vec![("authorization", basic)]);
    assert!(matches!(
        policy::decide_headers(&cfg, "GET", "/rest/api/2/issue/P10-1", &hs, NOW_MS, true),
        Decision::Allow(_)
    ));
    run(
        opts,
        rows,
        "pipeline: Basic, 10 header-only lines",
        "decide_headers, allowed by line 10",
        || {
            policy::decide_headers(
                &cfg,
                "GET",
                black_box("/rest/api/2/issue/P10-1"),
                &hs,
                NOW_MS,
                true,
            )
        },
    );
    let hj = Headers(vec![
        ("authorization", json_auth),
        ("content-type", b"application/json".to_vec()),
        ("content-length", b"1024".to_vec()),
    ]);
    let Decision::Buffer(pending) =
        policy::decide_headers(&cfg, "POST", "/rest/api/2/issue", &hj, NOW_MS, false)
    else {
        panic!("JsonData request should buffer");
    };
    assert!(policy::decide_body(&cfg, &pending, &body).is_ok());
    run(
        opts,
        rows,
        "pipeline: JsonData line, 1 KiB body",
        "decide_headers + decide_body",
        || match policy::decide_headers(
            &cfg,
            "POST",
            black_box("/rest/api/2/issue"),
            &hj,
            NOW_MS,
            false,
        ) {
            Decision::Buffer(p) => policy::decide_body(&cfg, &p, black_box(&body)).is_ok(),
            _ => false,
        },
    );
}

fn mib(bytes: usize) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

fn load_cases(opts: &Opts, rows: &mut Vec<Row>) {
    // The last case: every token with the same restriction line (compiled once, shared).
    for (n, lined) in [(10usize, false), (100_000, false), (100_000, true)] {
        let mut v = token_set(n, Vec::new());
        if lined {
            if let Some(Value::Array(ts)) = v.get_mut("tokens") {
                for t in ts {
                    t["limit_to"] = json!([r"[GET]/rest/api/2/issue/JRA-\d+"]);
                }
            }
        }
        let text = v.to_string().into_bytes();
        let pb = pb_struct(&v);
        let forms: &[(&str, &Vec<u8>)] = if lined {
            &[("JSON, one line each", &text)]
        } else {
            &[("JSON", &text), ("protobuf Struct", &pb)]
        };
        for &(form, bytes) in forms {
            let name = format!("config load: {n} tokens, {form}");
            if !opts.wants(&name) {
                continue;
            }
            // Memory: bytes the loaded config holds, and the peak while loading.
            let before = CURRENT.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let cfg = config::load(bytes).unwrap_or_else(|e| panic!("{e}"));
            let held = CURRENT.load(Ordering::Relaxed).saturating_sub(before);
            let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
            assert_eq!(cfg.tokens.len(), n);
            drop(cfg);
            let opts_load = Opts {
                quick: opts.quick || n > 1000,
                filters: Vec::new(),
            };
            let (median, min, max, iters) =
                time(&opts_load, || config::load(black_box(bytes)).is_ok());
            rows.push(Row {
                name,
                median,
                min,
                max,
                iters,
                note: format!(
                    "input {}, config holds {}, peak while loading {}",
                    mib(bytes.len()),
                    mib(held),
                    mib(peak)
                ),
            });
        }
    }
}

fn main() {
    let opts = Opts::from_args();
    let mut rows = Vec::new();
    restriction_cases(&opts, &mut rows);
    lookup_cases(&opts, &mut rows);
    pipeline_cases(&opts, &mut rows);
    load_cases(&opts, &mut rows);

    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(10).max(4);
    println!();
    println!(
        "| {:w$} | {:>11} | {:>11} | {:>11} | {:>10} | notes",
        "case", "median/op", "min", "max", "iters/round"
    );
    println!(
        "|{}|-------------|-------------|-------------|------------|------",
        "-".repeat(w + 2)
    );
    for r in &rows {
        println!(
            "| {:w$} | {:>11} | {:>11} | {:>11} | {:>10} | {}",
            r.name,
            fmt_ns(r.median),
            fmt_ns(r.min),
            fmt_ns(r.max),
            r.iters,
            r.note
        );
    }
}
