//! Arbitrary requests against a fixed set of lines: canonicalization, query parsing and both
//! evaluation stages must never panic, and must agree with each other.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tokengate_core::canonical::{decode_path, protection_path, split_target, Query};
use tokengate_core::restriction::{BodyVerdict, HeadVerdict, RequestView, Restrictions};

const LINES: &[&str] = &[
    "/rest/api/2/issue/JRA-7[JsonData::a==1]",
    ".*/rest/api/2/issue/JRA.*",
    "[post].*/rest/api/2/issue/KANBAN-100/comment.*",
    ".*/rest/extender/1.0/filter/user/.*[QueryParam::permissions==true]",
    ".*rest/extender/1.0/worklog/user/.*[QueryParam::dateFrom==2018-01-01][QueryParam::dateTo==2018-12-01]",
    ".*/rest/api/2/filter[JsonData::editable==false]",
    ".*/rest/api/2/filter[JsonData::editable==false][JsonData::favourite==false]",
    "[GET|put]/rest/[a-z]+/\\d+[QueryParam::q==[^]]*][JsonData::fields.project.key==[A-Z]+]",
];

fn rules() -> &'static Restrictions {
    static R: OnceLock<Restrictions> = OnceLock::new();
    R.get_or_init(|| {
        let v: Vec<String> = LINES.iter().map(|s| s.to_string()).collect();
        Restrictions::compile(&v).unwrap_or_default()
    })
}

fuzz_target!(|data: &[u8]| {
    // Layout: method \0 target \0 body
    let mut parts = data.splitn(3, |b| *b == 0);
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target))
    else {
        return;
    };
    let (raw_path, raw_query) = split_target(target);
    let _ = protection_path(raw_path);
    let _ = tokengate_core::json::validate(body);
    let Ok(path) = decode_path(raw_path) else {
        return;
    };
    let Ok(query) = Query::parse(raw_query) else {
        return;
    };
    let _ = query.names();
    let rs = rules();
    let req = RequestView {
        method,
        path: &path,
        query,
    };
    let head = rs.evaluate_head(&req);
    let explained = rs.explain(&req, Some(body));
    match head {
        HeadVerdict::Allow(line) => assert_eq!(line, explained.allowed_by),
        HeadVerdict::NeedBody => match rs.evaluate_body(&req, body) {
            Ok(BodyVerdict::Allow(n)) => assert_eq!(Some(n), explained.allowed_by),
            Ok(BodyVerdict::Deny) => assert_eq!(None, explained.allowed_by),
            Err(_) => assert_eq!(None, explained.allowed_by),
        },
        HeadVerdict::Deny => assert_eq!(None, explained.allowed_by),
    }
});
