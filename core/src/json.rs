//! Strict JSON (SPEC §8), parsed by hand in one pass.
//!
//! Why strict: the filter and the app must read the same document. Anything parsers disagree
//! on (duplicate names, lone surrogates, BOM, trailing garbage, deep nesting) is refused with
//! 400 rather than guessed at.
//!
//! Why no tree: a restriction only needs a few dotted paths. The parser validates the whole
//! body and, while it passes, records the nodes at the wanted paths (a bitmask per level says
//! which wanted paths are still on track), so memory stays proportional to nesting depth and
//! the number of member names of the objects being checked for duplicates, not to the body.

use std::borrow::Cow;

/// Deepest nesting of arrays/objects accepted; the top-level container is level 1.
pub const MAX_DEPTH: usize = 64;

/// Why a body is not strict JSON, with the byte offset where that was noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    pub offset: usize,
    pub reason: &'static str,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at byte {})", self.reason, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// What a dotted path designates in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    /// No such member (or an intermediate node is not an object).
    Missing,
    /// An array: never matches a restriction.
    Array,
    /// An object: never matches a restriction.
    Object,
    /// A string (decoded, without quotes), a number as written, `true`, `false` or `null`.
    Scalar(Cow<'a, str>),
}

/// Validates `body` as strict JSON.
pub fn validate(body: &[u8]) -> Result<(), JsonError> {
    find::<String>(body, &[]).map(|_| ())
}

/// Validates `body` and returns, for each path (member names from the top), what it
/// designates. Paths of zero segments are always `Missing`.
pub fn find<'a, S: AsRef<str>>(
    body: &'a [u8],
    paths: &[Vec<S>],
) -> Result<Vec<Node<'a>>, JsonError> {
    let text = precheck(body)?;
    let mut found: Vec<Node<'a>> = vec![Node::Missing; paths.len()];
    let mut first = true;
    // Up to 64 paths per pass (one bit each); more paths mean more passes, which is rare.
    for (chunk_no, chunk) in paths.chunks(64).enumerate() {
        let mut p = Parser {
            s: text,
            b: body,
            pos: 0,
            paths: chunk,
            found: found.get_mut(chunk_no * 64..).unwrap_or_default(),
            keys: Vec::new(),
        };
        p.document()?;
        first = false;
    }
    if first {
        let mut p = Parser::<S> {
            s: text,
            b: body,
            pos: 0,
            paths: &[],
            found: &mut [],
            keys: Vec::new(),
        };
        p.document()?;
    }
    Ok(found)
}

/// Validates `body` and returns the node at a dotted path such as `fields.project.key`.
pub fn lookup<'a>(body: &'a [u8], dotted: &str) -> Result<Node<'a>, JsonError> {
    let path: Vec<&str> = dotted.split('.').collect();
    let mut v = find(body, &[path])?;
    Ok(v.pop().unwrap_or(Node::Missing))
}

fn precheck(body: &[u8]) -> Result<&str, JsonError> {
    if body.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(JsonError {
            offset: 0,
            reason: "body is not JSON: byte order mark is not allowed",
        });
    }
    std::str::from_utf8(body).map_err(|e| JsonError {
        offset: e.valid_up_to(),
        reason: "body is not JSON: not UTF-8",
    })
}

struct Parser<'a, 'p, S> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    paths: &'p [Vec<S>],
    found: &'p mut [Node<'a>],
    /// Member names of the objects being parsed, innermost last (duplicate detection).
    keys: Vec<Cow<'a, str>>,
}

fn e(offset: usize, reason: &'static str) -> JsonError {
    JsonError { offset, reason }
}

impl<'a, S: AsRef<str>> Parser<'a, '_, S> {
    fn document(&mut self) -> Result<(), JsonError> {
        self.ws();
        if self.pos >= self.b.len() {
            return Err(e(self.pos, "body is not JSON: empty"));
        }
        let mut mask: u64 = 0;
        for (i, p) in self.paths.iter().enumerate() {
            if !p.is_empty() {
                mask |= 1 << i;
            }
        }
        self.value(0, mask, 0)?;
        self.ws();
        if self.pos < self.b.len() {
            return Err(e(self.pos, "body is not JSON: data after the value"));
        }
        Ok(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Records `node` for the paths in `mask` that end at this level (`level` names deep).
    fn record(&mut self, mask: u64, level: usize, node: impl Fn() -> Node<'a>) {
        if mask == 0 {
            return;
        }
        for (i, p) in self.paths.iter().enumerate() {
            if mask & (1 << i) != 0 && p.len() == level {
                if let Some(slot) = self.found.get_mut(i) {
                    *slot = node();
                }
            }
        }
    }

    /// One value. `nest`: containers around it; `mask`: wanted paths whose first `level`
    /// names lead here.
    fn value(&mut self, nest: usize, mask: u64, level: usize) -> Result<(), JsonError> {
        let start = self.pos;
        match self.b.get(self.pos) {
            Some(b'{') => {
                if nest >= MAX_DEPTH {
                    return Err(e(start, "body is not JSON: nested deeper than 64 levels"));
                }
                self.record(mask, level, || Node::Object);
                self.object(nest + 1, mask, level)
            }
            Some(b'[') => {
                if nest >= MAX_DEPTH {
                    return Err(e(start, "body is not JSON: nested deeper than 64 levels"));
                }
                self.record(mask, level, || Node::Array);
                self.array(nest + 1)
            }
            Some(b'"') => {
                let wanted = self.wants_here(mask, level);
                let s = self.string(wanted)?;
                if let Some(s) = s {
                    self.record(mask, level, || Node::Scalar(s.clone()));
                }
                Ok(())
            }
            Some(b't') => self.literal("true", mask, level),
            Some(b'f') => self.literal("false", mask, level),
            Some(b'n') => self.literal("null", mask, level),
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                let text = self.s.get(start..self.pos).unwrap_or("");
                self.record(mask, level, || Node::Scalar(Cow::Borrowed(text)));
                Ok(())
            }
            Some(_) => Err(e(start, "body is not JSON: unexpected character")),
            None => Err(e(start, "body is not JSON: unexpected end")),
        }
    }

    fn wants_here(&self, mask: u64, level: usize) -> bool {
        mask != 0
            && self
                .paths
                .iter()
                .enumerate()
                .any(|(i, p)| mask & (1 << i) != 0 && p.len() == level)
    }

    fn literal(&mut self, word: &'static str, mask: u64, level: usize) -> Result<(), JsonError> {
        let end = self.pos + word.len();
        if self.b.get(self.pos..end) != Some(word.as_bytes()) {
            return Err(e(self.pos, "body is not JSON: invalid literal"));
        }
        self.pos = end;
        self.record(mask, level, || Node::Scalar(Cow::Borrowed(word)));
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.b.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.pos;
        if self.b.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.b.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.b.get(self.pos) {
                    return Err(e(start, "body is not JSON: number with a leading zero"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(e(start, "body is not JSON: invalid number")),
        }
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(e(start, "body is not JSON: invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.b.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(e(start, "body is not JSON: invalid number"));
            }
        }
        Ok(())
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let mut v = 0u32;
        for k in 0..4 {
            let d = (*self.b.get(at + k)? as char).to_digit(16)?;
            v = v * 16 + d;
        }
        Some(v)
    }

    /// A string starting at `"`. Returns its decoded text when `decode`, else `None`
    /// (validated only, nothing allocated).
    fn string(&mut self, decode: bool) -> Result<Option<Cow<'a, str>>, JsonError> {
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        let mut owned: Option<String> = None;
        let mut run = start; // start of the pending unescaped run
        loop {
            let Some(&b) = self.b.get(self.pos) else {
                return Err(e(open, "body is not JSON: unterminated string"));
            };
            match b {
                b'"' => {
                    let tail = self.s.get(run..self.pos).unwrap_or("");
                    self.pos += 1;
                    if !decode {
                        return Ok(None);
                    }
                    return Ok(Some(match owned {
                        Some(mut o) => {
                            o.push_str(tail);
                            Cow::Owned(o)
                        }
                        None => Cow::Borrowed(tail),
                    }));
                }
                b'\\' => {
                    let esc_at = self.pos;
                    if decode {
                        let o = owned.get_or_insert_with(String::new);
                        o.push_str(self.s.get(run..self.pos).unwrap_or(""));
                    }
                    let c = match self.b.get(self.pos + 1) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let Some(hi) = self.hex4(self.pos + 2) else {
                                return Err(e(esc_at, "body is not JSON: invalid \\u escape"));
                            };
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                let lo = if self.b.get(self.pos + 6) == Some(&b'\\')
                                    && self.b.get(self.pos + 7) == Some(&b'u')
                                {
                                    self.hex4(self.pos + 8)
                                        .filter(|lo| (0xDC00..0xE000).contains(lo))
                                } else {
                                    None
                                };
                                let Some(lo) = lo else {
                                    return Err(e(
                                        esc_at,
                                        "body is not JSON: lone surrogate escape",
                                    ));
                                };
                                self.pos += 6;
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(e(esc_at, "body is not JSON: lone surrogate escape"));
                            } else {
                                hi
                            };
                            self.pos += 4;
                            char::from_u32(code)
                                .ok_or(e(esc_at, "body is not JSON: invalid \\u escape"))?
                        }
                        _ => return Err(e(esc_at, "body is not JSON: invalid escape")),
                    };
                    self.pos += 2;
                    run = self.pos;
                    if decode {
                        if let Some(o) = owned.as_mut() {
                            o.push(c);
                        }
                    }
                }
                0..=0x1f => {
                    return Err(e(
                        self.pos,
                        "body is not JSON: control character in a string",
                    ));
                }
                _ => self.pos += 1 + plain_run(self.b.get(self.pos + 1..).unwrap_or_default()),
            }
        }
    }

    fn array(&mut self, nest: usize) -> Result<(), JsonError> {
        self.pos += 1; // [
        self.ws();
        if self.b.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.value(nest, 0, 0)?;
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => {
                    return Err(e(self.pos, "body is not JSON: expected , or ] in an array"))
                }
                None => return Err(e(self.pos, "body is not JSON: unexpected end")),
            }
        }
    }

    fn object(&mut self, nest: usize, mask: u64, level: usize) -> Result<(), JsonError> {
        let open = self.pos;
        self.pos += 1; // {
        let base = self.keys.len();
        self.ws();
        if self.b.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.b.get(self.pos) != Some(&b'"') {
                return Err(e(self.pos, "body is not JSON: expected a member name"));
            }
            let key = self.string(true)?.unwrap_or_default();
            let mut child: u64 = 0;
            if mask != 0 {
                for (i, p) in self.paths.iter().enumerate() {
                    if mask & (1 << i) != 0 && p.get(level).is_some_and(|seg| seg.as_ref() == key) {
                        child |= 1 << i;
                    }
                }
            }
            self.keys.push(key);
            self.ws();
            if self.b.get(self.pos) != Some(&b':') {
                return Err(e(self.pos, "body is not JSON: expected :"));
            }
            self.pos += 1;
            self.ws();
            self.value(nest, child, level + 1)?;
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => {
                    return Err(e(
                        self.pos,
                        "body is not JSON: expected , or } in an object",
                    ))
                }
                None => return Err(e(self.pos, "body is not JSON: unexpected end")),
            }
        }
        let dup = match self.keys.get_mut(base..) {
            Some(names) if names.len() <= 8 => {
                let mut d = false;
                for (i, a) in names.iter().enumerate() {
                    if names.iter().skip(i + 1).any(|b| a == b) {
                        d = true;
                        break;
                    }
                }
                d
            }
            Some(names) => {
                names.sort_unstable();
                names.windows(2).any(|w| w.first() == w.get(1))
            }
            None => false,
        };
        self.keys.truncate(base);
        if dup {
            return Err(e(open, "body is not JSON: duplicate member name"));
        }
        Ok(())
    }
}

/// Length of the leading run of `bytes` that a JSON string copies as it is (no `"`, `\\` or
/// control character), eight bytes at a time: string values are most of a request body, and a
/// byte-at-a-time loop was the parser's largest cost in wasm.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit set in each byte of `v` that is zero (exact for the first such byte, which is
    // all this needs: the tail is finished byte by byte).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut n = 0;
    for chunk in bytes.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let v = u64::from_le_bytes(word);
        // Below 0x20: the byte minus 0x20 borrows into its high bit and its own high bit is 0.
        let control = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        if zero(v ^ (ONES * u64::from(b'"'))) | zero(v ^ (ONES * u64::from(b'\\'))) | control != 0 {
            break;
        }
        n += 8;
    }
    n + bytes
        .get(n..)
        .unwrap_or_default()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_run_agrees_with_a_byte_loop() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), b"x".to_vec(), "é漢😀 ~\x7f\u{80}".into()];
        for len in 0..40 {
            for special in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                for at in 0..=len {
                    let mut v: Vec<u8> = (0..len).map(|i| b' ' + (i % 90) as u8).collect();
                    if at < len {
                        v[at] = special;
                    }
                    cases.push(v);
                }
            }
            // Bytes just above the specials and high bytes must not stop the run.
            cases.push(
                (0..len)
                    .map(|i| [0x20u8, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xff][i % 7])
                    .collect(),
            );
        }
        for c in &cases {
            assert_eq!(plain_run(c), naive(c), "{c:?}");
        }
    }

    fn ok(s: &str) -> bool {
        validate(s.as_bytes()).is_ok()
    }

    fn reason(s: &[u8]) -> &'static str {
        validate(s).unwrap_err().reason
    }

    fn get(body: &str, path: &str) -> Node<'static> {
        match lookup(body.as_bytes(), path).unwrap() {
            Node::Scalar(c) => Node::Scalar(Cow::Owned(c.into_owned())),
            Node::Missing => Node::Missing,
            Node::Array => Node::Array,
            Node::Object => Node::Object,
        }
    }

    fn sc(s: &str) -> Node<'static> {
        Node::Scalar(Cow::Owned(s.to_string()))
    }

    #[test]
    fn accepts_valid_documents() {
        for s in [
            "{}",
            "[]",
            "0",
            "-0",
            "1.5e10",
            "-1.0E-2",
            "1e+2",
            "\"x\"",
            "true",
            "false",
            "null",
            " \t\r\n{ \"a\" : [ 1 , { } , [ ] , \"\\u00e9\\ud83d\\ude00\" ] } \n",
            "{\"a\":{\"a\":{\"a\":1}}}",
            "{\"a\":1,\"b\":{\"a\":2}}",
            "[{\"a\":1},{\"a\":1}]",
            "\"\\u0000\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
            "\"é😀\"",
        ] {
            assert!(ok(s), "{s:?}: {:?}", validate(s.as_bytes()));
        }
    }

    #[test]
    fn refuses_invalid_documents() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"  \n", "empty"),
            (b"\xEF\xBB\xBF{}", "byte order mark"),
            (b"{\"a\":\"\xff\"}", "not UTF-8"),
            (b"{\"a\":1,\"a\":2}", "duplicate"),
            (b"{\"a\":1,\"\\u0061\":2}", "duplicate"),
            (b"{\"x\":{\"a\":1,\"b\":2,\"a\":3}}", "duplicate"),
            (b"[{\"k\":1,\"k\":1}]", "duplicate"),
            (b"{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"e\":0}", "duplicate"),
            (b"\"\\ud800\"", "lone surrogate"),
            (b"\"\\udc00\"", "lone surrogate"),
            (b"\"\\ud800\\u0041\"", "lone surrogate"),
            (b"\"\\ud800x\"", "lone surrogate"),
            (b"\"\\u12\"", "\\u escape"),
            (b"\"\\x\"", "invalid escape"),
            (b"\"a\nb\"", "control character"),
            (b"\"abc", "unterminated"),
            (b"01", "leading zero"),
            (b"-01", "leading zero"),
            (b"+1", "unexpected character"),
            (b"1.", "invalid number"),
            (b".5", "unexpected character"),
            (b"1e", "invalid number"),
            (b"-", "invalid number"),
            (b"NaN", "unexpected character"),
            (b"Infinity", "unexpected character"),
            (b"tru", "invalid literal"),
            (b"True", "unexpected character"),
            (b"{} {}", "data after"),
            (b"1 2", "data after"),
            (b"{}x", "data after"),
            (b"{\"a\":1,}", "member name"),
            (b"[1,]", "unexpected character"),
            (b"[1 2]", "expected , or ]"),
            (b"{\"a\" 1}", "expected :"),
            (b"{'a':1}", "member name"),
            (b"{\"a\":1", "unexpected end"),
            (b"[", "unexpected end"),
            (b"\x00", "unexpected character"),
            (b"{\"a\":1}\x00", "data after"),
        ];
        for (s, want) in cases {
            let r = reason(s);
            assert!(
                r.contains(want),
                "{:?}: got {r:?}, want {want:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn depth_limit_is_64() {
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(ok(&deep(64)));
        assert!(reason(deep(65).as_bytes()).contains("deeper than 64"));
        let objs = |n: usize| "{\"a\":".repeat(n) + "1" + &"}".repeat(n);
        assert!(ok(&objs(64)));
        assert!(!ok(&objs(65)));
        // Never a stack overflow, however deep.
        assert!(!ok(&deep(100_000)));
    }

    #[test]
    fn lookup_scalars_as_text() {
        let body = r#"{"editable":false,"favourite":"false","n":1.0,"m":1,"e":-2E+3,"z":null,
            "s":"a\"b\u00e9","arr":[1],"obj":{"k":"v","deep":{"x":true}},"dot.ted":1}"#;
        assert_eq!(get(body, "editable"), sc("false"));
        assert_eq!(get(body, "favourite"), sc("false"));
        assert_eq!(get(body, "n"), sc("1.0"));
        assert_eq!(get(body, "m"), sc("1"));
        assert_eq!(get(body, "e"), sc("-2E+3"));
        assert_eq!(get(body, "z"), sc("null"));
        assert_eq!(get(body, "s"), sc("a\"bé"));
        assert_eq!(get(body, "arr"), Node::Array);
        assert_eq!(get(body, "obj"), Node::Object);
        assert_eq!(get(body, "obj.k"), sc("v"));
        assert_eq!(get(body, "obj.deep.x"), sc("true"));
        assert_eq!(get(body, "obj.deep"), Node::Object);
        assert_eq!(get(body, "obj.missing"), Node::Missing);
        assert_eq!(get(body, "n.x"), Node::Missing);
        assert_eq!(get(body, "arr.0"), Node::Missing);
        assert_eq!(get(body, "dot.ted"), Node::Missing);
        assert_eq!(get(body, "nope"), Node::Missing);
        assert_eq!(get("[{\"a\":1}]", "a"), Node::Missing);
        assert_eq!(get("\"a\"", "a"), Node::Missing);
        // A nested member with the same name is not the top-level one.
        assert_eq!(
            get("{\"x\":{\"editable\":true}}", "editable"),
            Node::Missing
        );
    }

    #[test]
    fn find_many_paths_and_borrowing() {
        let body = br#"{"a":"plain","b":"esc\n"}"#;
        let paths = vec![vec!["a"], vec!["b"], vec!["c"]];
        let got = find(body, &paths).unwrap();
        assert!(matches!(got[0], Node::Scalar(Cow::Borrowed("plain"))));
        assert!(matches!(&got[1], Node::Scalar(Cow::Owned(s)) if s == "esc\n"));
        assert_eq!(got[2], Node::Missing);
        // More than 64 paths: several passes, same answers.
        let mut many: Vec<Vec<String>> = (0..150).map(|i| vec![format!("k{i}")]).collect();
        many.push(vec!["a".into()]);
        let got = find(body, &many).unwrap();
        assert_eq!(got.len(), 151);
        assert_eq!(got[150], Node::Scalar(Cow::Borrowed("plain")));
        assert!(got[..150].iter().all(|n| *n == Node::Missing));
        assert!(find(br#"{"a":1,"a":1}"#, &many).is_err());
        assert!(find::<String>(b"", &[]).is_err());
    }

    #[test]
    fn big_object_duplicate_check_is_fast() {
        let mut s = String::from("{");
        for i in 0..60_000 {
            s.push_str(&format!("\"k{i}\":{i},"));
        }
        s.push_str("\"k0\":1}");
        assert!(reason(s.as_bytes()).contains("duplicate"));
    }
}
