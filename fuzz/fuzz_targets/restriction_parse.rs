//! Restriction lines from arbitrary text: compiling must never panic, and a line that
//! compiles must evaluate without panicking. The first line also serves as a URL pattern and
//! the second as a path: the literal prefix lines are screened with must never turn down a
//! path the pattern matches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate_core::canonical::Query;
use tokengate_core::restriction::{RequestView, Restrictions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    if let ([pattern, path, ..], Ok(re)) = (
        lines.as_slice(),
        tokengate_core::javare::compile(lines.first().map_or("", String::as_str)),
    ) {
        if re.is_match(path) {
            let prefix = tokengate_core::javare::required_prefix(pattern);
            assert!(path.as_bytes().starts_with(&prefix), "{pattern:?} {path:?}");
        }
    }
    let Ok(rs) = Restrictions::compile(&lines) else {
        return;
    };
    if let Ok(query) = Query::parse("a=1&b=%C3%A9&a=x+y") {
        let req = RequestView {
            method: "POST",
            path: "/rest/api/2/issue/JRA-1",
            query,
        };
        let _ = rs.evaluate_head(&req);
        let _ = rs.evaluate_body(&req, br#"{"a":{"b":1},"c":"x"}"#);
        let _ = rs.explain(&req, Some(b"{}"));
    }
});
