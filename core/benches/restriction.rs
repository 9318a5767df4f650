//! Rough per-request cost of the restriction path, without a bench framework (no extra
//! dependency): `cargo bench --bench restriction`. Needs in Cargo.toml:
//! `[[bench]] name = "restriction" harness = false`.

use std::hint::black_box;
use std::time::Instant;

use tokengate_core::canonical::{decode_path, split_target, Query};
use tokengate_core::json;
use tokengate_core::restriction::{RequestView, Restrictions};

fn time(name: &str, iters: u32, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let per = start.elapsed() / iters;
    println!("{name:<40} {per:>10.2?} / iter");
}

fn main() {
    let lines: Vec<String> = [
        ".*/rest/api/2/issue/JRA.*",
        "[post].*/rest/api/2/issue/KANBAN-100/comment.*",
        ".*/rest/extender/1.0/filter/user/.*[QueryParam::permissions==true]",
        ".*rest/extender/1.0/worklog/user/.*[QueryParam::dateFrom==2018-01-01][QueryParam::dateTo==2018-12-01]",
        ".*/rest/api/2/filter[JsonData::editable==false]",
        ".*/rest/api/2/filter[JsonData::editable==false][JsonData::favourite==false]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rs = Restrictions::compile(&lines).unwrap_or_default();

    time("compile 6 lines", 200, || {
        black_box(Restrictions::compile(black_box(&lines)).is_ok());
    });

    let target = "/rest/extender/1.0/worklog/user/bob?dateFrom=2018-01-01&dateTo=2018-12-01&x=a+b";
    time("canonicalize + evaluate_head (query)", 100_000, || {
        let (p, q) = split_target(black_box(target));
        if let (Ok(path), Ok(query)) = (decode_path(p), Query::parse(q)) {
            let req = RequestView {
                method: "GET",
                path: &path,
                query,
                form_body: false,
            };
            black_box(rs.evaluate_head(&req));
        }
    });

    let deny = "/rest/api/2/user?username=admin";
    time("evaluate_head (deny, all lines)", 100_000, || {
        let (p, q) = split_target(black_box(deny));
        if let (Ok(path), Ok(query)) = (decode_path(p), Query::parse(q)) {
            let req = RequestView {
                method: "DELETE",
                path: &path,
                query,
                form_body: false,
            };
            black_box(rs.evaluate_head(&req));
        }
    });

    let small = br#"{"name":"f","jql":"project = JRA","editable":false,"favourite":false}"#;
    time("evaluate_body (small filter body)", 100_000, || {
        if let Ok(query) = Query::parse("") {
            let req = RequestView {
                method: "POST",
                path: "/rest/api/2/filter",
                query,
                form_body: false,
            };
            black_box(rs.evaluate_body(&req, black_box(small)).ok());
        }
    });

    let mut big = String::from("{\"editable\":false,\"favourite\":false,\"items\":[");
    while big.len() < 1_000_000 {
        big.push_str("{\"id\":12345,\"key\":\"JRA-1\",\"summary\":\"caf\\u00e9 \\\"quoted\\\"\",\"ok\":true},");
    }
    big.push_str("null]}");
    time("json::validate 1 MB", 50, || {
        black_box(json::validate(black_box(big.as_bytes())).is_ok());
    });
    time("evaluate_body 1 MB", 50, || {
        if let Ok(query) = Query::parse("") {
            let req = RequestView {
                method: "POST",
                path: "/rest/api/2/filter",
                query,
                form_body: false,
            };
            black_box(rs.evaluate_body(&req, black_box(big.as_bytes())).ok());
        }
    });
}
