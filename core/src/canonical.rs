//! The canonical request target (SPEC §7): the filter decides on the bytes the app will act
//! on, or refuses.
//!
//! Two views of a path exist on purpose:
//! * [`protection_path`] is lenient and never fails: it only decides whether a request falls
//!   under `protected_paths`, so it normalizes every spelling a server might resolve (repeated
//!   percent-decoding, `\`, `;params`, `//`, dot segments) and errs towards "protected".
//! * [`decode_path`] is strict: on a protected path the restriction regexes see exactly the
//!   path Tomcat will serve, so anything Tomcat would normalize or interpret (and so could make
//!   a regex see one path while the app serves another) is refused with 400.

use std::borrow::Cow;

/// Why a request target was refused (400). The text goes into the error body.
pub type CanonError = &'static str;

/// Splits a `:path` into the path and the raw query (without `?`; empty when absent).
pub fn split_target(target: &str) -> (&str, &str) {
    match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte encoded by `%XY` at `bytes[i]` (which must be `%`), if well-formed.
fn pct_at(bytes: &[u8], i: usize) -> Option<u8> {
    let hi = hex_val(*bytes.get(i + 1)?)?;
    let lo = hex_val(*bytes.get(i + 2)?)?;
    Some(hi * 16 + lo)
}

/// One round of lenient percent-decoding: valid `%XY` decoded, anything else kept.
fn decode_lenient_once(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let Some(v) = pct_at(bytes, i) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The path used to decide whether a request is protected: decoded leniently and normalized
/// the way Tomcat would resolve it, fully decoded (see [`protection_paths`], which the
/// protection check uses: every resolution, not only this last one).
///
/// Percent-decoding is repeated until nothing changes (Tomcat decodes once, but a front proxy
/// or a servlet filter may decode again: `%252e%252e` must count as `..`). Then `\` is read as
/// `/`, `;params` are dropped from each segment, empty and `.` segments vanish and `..` pops.
pub fn protection_path(raw_path: &str) -> Cow<'_, str> {
    if is_plain(raw_path) {
        return Cow::Borrowed(raw_path);
    }
    let mut bytes = raw_path.as_bytes().to_vec();
    // Each round that changes anything shortens the text, so this terminates; the bound is a
    // belt for the braces.
    for _ in 0..raw_path.len() {
        if !bytes.contains(&b'%') {
            break;
        }
        let next = decode_lenient_once(&bytes);
        if next.len() == bytes.len() {
            break;
        }
        bytes = next;
    }
    Cow::Owned(resolve(&bytes))
}

/// Every path a server might resolve `raw_path` to: after 0, 1, 2, … rounds of lenient
/// percent-decoding (until nothing changes), each normalized as in [`protection_path`], and
/// Tomcat's own order (`;params` dropped from the raw segments, then one decoding, then
/// normalization). A request is protected when any of them is: decoding more is not always
/// "more protected", since a decoded `..` can pop the protected segment itself
/// (`/rest/%25%32%65%25%32%65/api` is `/rest/%2e%2e/api` to Tomcat, which dispatches it to the
/// `/rest/*` servlet, but `/api` once decoded twice; found by the differential tests against
/// Tomcat, tests/tomcat/). One borrowed entry when the path is already plain.
pub fn protection_paths(raw_path: &str) -> Vec<Cow<'_, str>> {
    if is_plain(raw_path) {
        return vec![Cow::Borrowed(raw_path)];
    }
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    let mut bytes = raw_path.as_bytes().to_vec();
    out.push(Cow::Owned(resolve(&bytes)));
    for _ in 0..raw_path.len() {
        if !bytes.contains(&b'%') {
            break;
        }
        let next = decode_lenient_once(&bytes);
        if next.len() == bytes.len() {
            break;
        }
        bytes = next;
        out.push(Cow::Owned(resolve(&bytes)));
    }
    let unparamed: Vec<&str> = raw_path
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect();
    out.push(Cow::Owned(resolve(&decode_lenient_once(
        unparamed.join("/").as_bytes(),
    ))));
    out
}

/// Normalizes decoded path bytes: `\` as `/`, `;params` dropped, empty and `.` segments
/// removed, `..` pops.
fn resolve(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for raw_seg in text.split('/') {
        let seg = raw_seg.split(';').next().unwrap_or("");
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

/// True when `path` is already in normal form: starts with `/`, nothing to decode or drop, no
/// empty, `.` or `..` segment except a final empty one.
fn is_plain(path: &str) -> bool {
    let Some(rest) = path.as_bytes().strip_prefix(b"/") else {
        return false;
    };
    // One pass over the bytes (this runs on every request): per segment, its length and how
    // many of its bytes are dots (all dots and at most two: `.` or `..`).
    let dot_segment = |len: usize, dots: usize| len > 0 && dots == len && len <= 2;
    let (mut len, mut dots) = (0usize, 0usize);
    for &b in rest {
        match b {
            b'%' | b'\\' | b';' => return false,
            b'/' => {
                if len == 0 || dot_segment(len, dots) {
                    return false;
                }
                (len, dots) = (0, 0);
            }
            b'.' => (len, dots) = (len + 1, dots + 1),
            _ => len += 1,
        }
    }
    // The last segment may be empty (a trailing slash).
    !dot_segment(len, dots)
}

/// Decodes a path under the §7 rules; borrowed when there is nothing to decode.
pub fn decode_path(raw_path: &str) -> Result<Cow<'_, str>, CanonError> {
    let bytes = raw_path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err("the path must start with /");
    }
    let mut has_pct = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b';' => return Err("path parameters (;) are not allowed in the path"),
            b'\\' => return Err("backslash is not allowed in the path"),
            b'#' => return Err("# is not allowed in the path"),
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                return Err("empty path segment (//) is not allowed");
            }
            b'%' => {
                let Some(v) = pct_at(bytes, i) else {
                    return Err("malformed percent-encoding in the path");
                };
                match v {
                    b'.' | b'/' | b'\\' | b';' | b'%' => {
                        return Err("percent-encoded . / \\ ; or % is not allowed in the path");
                    }
                    0..=0x1f | 0x7f => {
                        return Err("percent-encoded control character in the path");
                    }
                    _ => {}
                }
                has_pct = true;
                i += 2;
            }
            0..=0x20 | 0x7f => {
                return Err("control character or space in the path");
            }
            0x80..=0xff => return Err("raw non-ASCII byte in the path"),
            _ => {}
        }
        i += 1;
    }
    // `%` cannot encode `.` or `/`, so dot segments can be judged on the raw text.
    if raw_path.split('/').any(|s| s == "." || s == "..") {
        return Err("dot segment (. or ..) in the path");
    }
    if !has_pct {
        return Ok(Cow::Borrowed(raw_path));
    }
    let decoded = decode_lenient_once(bytes);
    let s = String::from_utf8(decoded).map_err(|_| "the path does not decode to UTF-8")?;
    if s.chars().any(char::is_control) {
        return Err("percent-encoded control character in the path");
    }
    Ok(Cow::Owned(s))
}

/// Decodes a query component: `+` is a space, `%XY` a byte. The caller has validated the
/// encoding (and that the result is UTF-8) in [`Query::parse`]; anything that still fails is
/// replaced, never a panic. Borrowed (no allocation) when there is nothing to decode.
pub fn decode_component(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw);
    }
    let out = decode_bytes(raw);
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// A validated raw query. Decoding happens on demand while iterating.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    raw: &'a str,
}

impl<'a> Query<'a> {
    /// Validates percent-encoding of the whole query (§7): every `%` starts a `%XY`, and
    /// every decoded name and value is UTF-8 (the app would otherwise see replacement
    /// characters where the regex saw something else).
    pub fn parse(raw: &'a str) -> Result<Query<'a>, CanonError> {
        let bytes = raw.as_bytes();
        let mut i = 0;
        let mut any_pct = false;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                if pct_at(bytes, i).is_none() {
                    return Err("malformed percent-encoding in the query");
                }
                any_pct = true;
                i += 2;
            }
            i += 1;
        }
        if any_pct {
            for part in raw.split('&') {
                if !part.contains('%') {
                    continue;
                }
                let (n, v) = part.split_once('=').unwrap_or((part, ""));
                for comp in [n, v] {
                    if comp.contains('%') && std::str::from_utf8(&decode_bytes(comp)).is_err() {
                        return Err("the query does not decode to UTF-8");
                    }
                }
            }
        }
        Ok(Query { raw })
    }

    /// The raw query string.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Raw `(name, value)` pairs in order; empty parts and parts with an empty name skipped.
    /// A part without `=` has an empty value.
    pub fn raw_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .filter(|(n, _)| !n.is_empty())
    }

    /// Decoded `(name, value)` pairs in order (`+` is a space). Borrowed unless decoding was
    /// needed.
    pub fn pairs(&self) -> impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)> + 'a {
        self.raw_pairs()
            .map(|(n, v)| (decode_component(n), decode_component(v)))
    }

    /// Decoded values of every occurrence of the parameter `name`, in order.
    pub fn values<'n>(&self, name: &'n str) -> impl Iterator<Item = Cow<'a, str>> + 'n
    where
        'a: 'n,
    {
        self.raw_pairs()
            .filter(move |(n, _)| decode_component(n) == name)
            .map(|(_, v)| decode_component(v))
    }

    /// Decoded parameter names in order of first appearance (for the audit line).
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (n, _) in self.raw_pairs() {
            let n = decode_component(n);
            if !out.iter().any(|o| *o == n) {
                out.push(n.into_owned());
            }
        }
        out
    }
}

/// `+` as a space and every well-formed `%XY` as its byte; anything else kept as it is.
fn decode_bytes(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => match pct_at(bytes, i) {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split() {
        assert_eq!(split_target("/a?b=1?c"), ("/a", "b=1?c"));
        assert_eq!(split_target("/a"), ("/a", ""));
        assert_eq!(split_target("/a?"), ("/a", ""));
    }

    #[test]
    fn decode_accepts_plain_and_utf8() {
        assert!(matches!(
            decode_path("/rest/api/2/issue/JRA-1"),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(decode_path("/rest/caf%C3%A9").unwrap(), "/rest/café");
        assert_eq!(decode_path("/rest/a%20b").unwrap(), "/rest/a b");
        assert_eq!(decode_path("/rest/a%3Fb%23").unwrap(), "/rest/a?b#");
        assert_eq!(decode_path("/rest/").unwrap(), "/rest/");
        assert_eq!(decode_path("/").unwrap(), "/");
        assert_eq!(decode_path("/rest/a+b").unwrap(), "/rest/a+b");
        assert_eq!(
            decode_path("/rest/.well/x..y/...").unwrap(),
            "/rest/.well/x..y/..."
        );
    }

    #[test]
    fn decode_refuses_attacks() {
        for p in [
            "/rest/api;jsessionid=1/x",
            "/rest/api/x;",
            "/rest/..;/admin",
            "/rest\\api",
            "/rest//api",
            "//rest/api",
            "/rest/./api",
            "/rest/../admin",
            "/rest/api/..",
            "/rest/api/.",
            "/rest/%2e%2e/admin",
            "/rest/%2E%2E/admin",
            "/rest/%2e/x",
            "/rest/.%2e/x",
            "/rest%2fapi",
            "/rest%2Fapi",
            "/rest%5capi",
            "/rest%5Capi",
            "/rest%3bx",
            "/rest%3Bx",
            "/rest/%252e%252e/admin",
            "/rest/%25",
            "/rest/%",
            "/rest/%4",
            "/rest/%zz",
            "/rest/%C3",
            "/rest/%C3%28",
            "/rest/%FF",
            "/rest/%00",
            "/rest/%0a",
            "/rest/%7F",
            "/rest/%C2%85",
            "/rest/a b",
            "/rest/a\tb",
            "/rest/\u{7f}",
            "/rest/café",
            "/rest/a#b",
            "rest/api",
            "",
            "*",
        ] {
            assert!(decode_path(p).is_err(), "{p:?} must be refused");
        }
    }

    #[test]
    fn protection_path_normalizes_every_spelling() {
        let cases = [
            ("/rest/api", "/rest/api"),
            ("/rest/", "/rest/"),
            ("/", "/"),
            ("", "/"),
            ("/x/../rest/api", "/rest/api"),
            ("/x/%2e%2e/rest/api", "/rest/api"),
            ("/x/%252e%252e/rest/api", "/rest/api"),
            ("/x/%25252e%25252e/rest/", "/rest/"),
            ("/%72est/api", "/rest/api"),
            ("/%2572est/api", "/rest/api"),
            ("/x\\..\\rest\\api", "/rest/api"),
            ("/x%5c..%5crest/api", "/rest/api"),
            ("//rest//api", "/rest/api"),
            ("/./rest/./api", "/rest/api"),
            ("/rest;jsessionid=1/api", "/rest/api"),
            ("/rest;x", "/rest"),
            ("/;x/rest/", "/rest/"),
            ("/..;/rest/api", "/rest/api"),
            ("/a/b/../../../rest/x", "/rest/x"),
            ("/rest/.", "/rest/"),
            ("/rest/api/..", "/rest/"),
            ("/jira/rest/api", "/jira/rest/api"),
            ("/x/%2", "/x/%2"),
            ("/x/%zz", "/x/%zz"),
            ("/x/%ff", "/x/\u{FFFD}"),
        ];
        for (raw, want) in cases {
            assert_eq!(protection_path(raw), want, "{raw:?}");
        }
        assert!(matches!(protection_path("/rest/api/2"), Cow::Borrowed(_)));
    }

    #[test]
    fn protection_paths_has_every_resolution() {
        let all = |raw: &str| -> Vec<String> {
            protection_paths(raw)
                .into_iter()
                .map(Cow::into_owned)
                .collect()
        };
        // Tomcat decodes once: `%2e%2e` stays a name under /rest/; twice it pops /rest.
        let p = all("/rest/%25%32%65%25%32%65/api/2/issue/ABC-1");
        assert!(
            p.contains(&"/rest/%2e%2e/api/2/issue/ABC-1".to_string()),
            "{p:?}"
        );
        assert!(p.contains(&"/api/2/issue/ABC-1".to_string()), "{p:?}");
        let p = all("/x/%252e%252e/rest/api");
        assert!(p.contains(&"/rest/api".to_string()), "{p:?}");
        // params dropped before decoding (Tomcat's order) and after
        let p = all("/rest%3bx/api");
        assert!(p.contains(&"/rest/api".to_string()), "{p:?}");
        assert!(p.contains(&"/rest%3bx/api".to_string()), "{p:?}");
        assert_eq!(all("/rest/api/2"), vec!["/rest/api/2".to_string()]);
    }

    #[test]
    fn query_validation() {
        assert!(Query::parse("").is_ok());
        assert!(Query::parse("a=1&b=%C3%A9&c").is_ok());
        assert!(Query::parse("a=%").is_err());
        assert!(Query::parse("a=%4").is_err());
        assert!(Query::parse("a=%g0").is_err());
        assert!(Query::parse("%zz=1").is_err());
        assert!(Query::parse("a=%FF").is_err());
        assert!(Query::parse("a%C3=1").is_err());
        assert!(Query::parse("a=%25").is_ok());
    }

    #[test]
    fn query_pairs_decode_plus_and_percent() {
        let q = Query::parse("perm%69ssions=tr%75e&a+b=c+d&e=%2B&&=x&f&a+b=2").unwrap();
        let pairs: Vec<(String, String)> = q
            .pairs()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("permissions".into(), "true".into()),
                ("a b".into(), "c d".into()),
                ("e".into(), "+".into()),
                ("f".into(), "".into()),
                ("a b".into(), "2".into()),
            ]
        );
        assert_eq!(q.names(), vec!["permissions", "a b", "e", "f"]);
        let v: Vec<_> = q.values("a b").collect();
        assert_eq!(v, vec!["c d", "2"]);
        assert!(matches!(
            Query::parse("x=1").unwrap().pairs().next(),
            Some((Cow::Borrowed(_), Cow::Borrowed(_)))
        ));
        assert!(Query::parse("").unwrap().names().is_empty());
    }
}
