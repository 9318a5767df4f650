//! Restriction lines from arbitrary text: compiling must never panic, and a line that
//! compiles must evaluate without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::canonical::Query;
use tokengate::restriction::{RequestView, Restrictions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
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
