//! Restriction lines (`limit_to`, SPEC §6): grammar, compilation and matching.
//!
//! # Grammar of one line
//!
//! ```text
//! [METHODS] URL-REGEX [QueryParam::NAME==REGEX]… [JsonData::NODE==REGEX]…
//! ```
//!
//! * Leading and trailing whitespace of a line is ignored, and so is whitespace after the
//!   METHODS group, before the first condition and between conditions (write `\x20` for a
//!   literal space at the edge of a URL pattern). Blank lines are skipped but keep their
//!   number, so errors and the audit's `rule` count lines as the admin wrote them.
//! * METHODS: a leading `[...]` whose content is only letters, `,`, `|` and spaces. Each name
//!   must be a known HTTP method (case-insensitive). A URL pattern cannot usefully start with
//!   a class of letters (every decoded path starts with `/`), so this reading loses nothing.
//! * Conditions start at the first `[QueryParam::` or `[JsonData::` not preceded by a
//!   backslash; everything between METHODS and there is the URL regex (which may contain
//!   classes such as `[A-Z]+`). Each condition is `[KIND::NAME==REGEX]`: NAME runs to the
//!   first `==`, REGEX runs to the first `]` that is neither escaped (`\]`, `\Q…\E`) nor
//!   closes a character class opened inside REGEX. So `[JsonData::key==[A-Z]+]` works, and a
//!   literal `]` in a condition regex is written `\]`. After a condition only whitespace or
//!   another condition may follow.
//!
//! # Matching
//! Methods exact (names compared case-insensitively; `GET` does not admit `HEAD`); URL regex
//! against the whole decoded path; every occurrence of a query parameter must match (query
//! pollution defence); JSON nodes must be scalars. Conditions AND, lines OR.
//!
//! Nothing is compiled per request, and decoding allocates only for query components that
//! contain `%` or `+` and for JSON strings with escapes that a condition reads.

use std::borrow::Cow;
use std::fmt;

use std::sync::Arc;

use regex::Regex;

use crate::canonical::{decode_component, Query};
use crate::javare;
use crate::json::{self, Node};

/// A load error in one restriction line: 1-based line and column within that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for LineError {}

/// Restriction lines from one text: lines separated by newlines or by `<br>` (as the original
/// app's API returns them); blank lines are dropped.
pub fn split_text(text: &str) -> Vec<String> {
    text.replace("<br/>", "\n")
        .replace("<br />", "\n")
        .replace("<br>", "\n")
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// What the evaluator sees of a request: method as sent, decoded path, validated query.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Query<'a>,
    /// The request carries a form body (`application/x-www-form-urlencoded` or
    /// `multipart/form-data`, see [`crate::media::is_form`]): the app's parameter API
    /// (Tomcat's `getParameterValues`) reads parameters from it that the query does not show,
    /// so no QueryParam condition can hold.
    pub form_body: bool,
}

/// The verdict from method, path and query alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadVerdict {
    /// Allowed by this 1-based line (or `None` for a token without lines).
    Allow(Option<usize>),
    /// A JsonData line can still match: buffer the body and call `evaluate_body`.
    NeedBody,
    Deny,
}

/// The verdict once the body is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyVerdict {
    Allow(usize),
    Deny,
}

/// HTTP methods a METHODS group may name.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// The bit of a request's method. Exact, unlike names in a METHODS group: Tomcat
/// dispatches `get` and `GET` differently, so a line for `GET` must not admit `get`.
fn request_method_bit(method: &str) -> Option<u16> {
    KNOWN_METHODS
        .iter()
        .position(|m| *m == method)
        .map(|i| 1u16 << i)
}

fn method_bit(name: &str) -> Option<u16> {
    KNOWN_METHODS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(name))
        .map(|i| 1u16 << i)
}

#[derive(Debug)]
struct QueryCond {
    name: String,
    re: Arc<Regex>,
}

#[derive(Debug)]
struct JsonCond {
    /// The node as written (for explanations).
    node: String,
    /// Index into `Restrictions::json_paths`.
    path: usize,
    re: Arc<Regex>,
}

#[derive(Debug)]
struct Line {
    /// 1-based number in the list as configured.
    number: usize,
    source: String,
    /// Bitmask over `KNOWN_METHODS`; `None`: any method.
    methods: Option<u16>,
    url: Arc<Regex>,
    /// What every path `url` matches starts with ([`javare::required_prefix`]): checked
    /// first, so most non-matching lines never run their regex.
    url_prefix: Box<[u8]>,
    /// The URL pattern as written (for lints and explanations).
    url_source: String,
    query: Vec<QueryCond>,
    json: Vec<JsonCond>,
}

/// What a compiled line is made of, for tools that reason about lines (`tokenctl check`)
/// without parsing them a second way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInfo<'a> {
    /// 1-based number in the list as configured.
    pub number: usize,
    /// The line as written (trimmed).
    pub source: &'a str,
    /// The METHODS group, upper-case; `None`: any method.
    pub methods: Option<Vec<&'static str>>,
    /// The URL pattern as written (Java syntax, before translation and anchoring).
    pub url_pattern: &'a str,
    pub has_query_conditions: bool,
    pub has_json_conditions: bool,
}

/// The compiled `limit_to` of one token.
#[derive(Debug, Default)]
pub struct Restrictions {
    lines: Vec<Line>,
    /// Distinct JSON node paths of all lines, looked up in one pass over a body.
    json_paths: Vec<Vec<String>>,
}

/// Why a line's head (method, path, query) did not match; borrowed, so cheap on the hot path.
enum HeadFail<'r> {
    Method,
    Path,
    QueryMissing(usize),
    QueryValue(usize, Cow<'r, str>),
    FormBody,
}

/// True when the percent/plus-decoded form of `raw` equals `want`, without allocating.
fn decoded_eq(raw: &str, want: &str) -> bool {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return raw == want;
    }
    let raw = raw.as_bytes();
    let mut want = want.bytes();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let d = match b {
            b'+' => b' ',
            b'%' => {
                let hex = |k: usize| raw.get(i + k).and_then(|c| (*c as char).to_digit(16));
                match (hex(1), hex(2)) {
                    (Some(h), Some(l)) => {
                        i += 2;
                        (h * 16 + l) as u8
                    }
                    _ => b,
                }
            }
            _ => b,
        };
        if want.next() != Some(d) {
            return false;
        }
        i += 1;
    }
    want.next().is_none()
}

impl Line {
    fn head<'r>(&self, req: &RequestView<'r>) -> Result<(), HeadFail<'r>> {
        if let Some(mask) = self.methods {
            if !matches!(request_method_bit(req.method), Some(b) if mask & b != 0) {
                return Err(HeadFail::Method);
            }
        }
        if !req.path.as_bytes().starts_with(&self.url_prefix) || !self.url.is_match(req.path) {
            return Err(HeadFail::Path);
        }
        if req.form_body && !self.query.is_empty() {
            return Err(HeadFail::FormBody);
        }
        for (ci, cond) in self.query.iter().enumerate() {
            let mut present = false;
            for (n, v) in req.query.raw_pairs() {
                if !decoded_eq(n, &cond.name) {
                    continue;
                }
                present = true;
                let v = decode_component(v);
                if !cond.re.is_match(&v) {
                    return Err(HeadFail::QueryValue(ci, v));
                }
            }
            if !present {
                return Err(HeadFail::QueryMissing(ci));
            }
        }
        Ok(())
    }

    /// The first JsonData condition that fails on `found`, if any.
    fn body_fail<'b>(&self, found: &'b [Node<'b>]) -> Option<(&JsonCond, &'b Node<'b>)> {
        for cond in &self.json {
            let node = found.get(cond.path).unwrap_or(&Node::Missing);
            let ok = matches!(node, Node::Scalar(text) if cond.re.is_match(text));
            if !ok {
                return Some((cond, node));
            }
        }
        None
    }
}

impl Restrictions {
    /// Compiles `limit_to`: one element per line. Blank lines are skipped but counted.
    pub fn compile(lines: &[String]) -> Result<Restrictions, LineError> {
        let mut out = Restrictions::default();
        for (i, text) in lines.iter().enumerate() {
            if let Some(line) = parse_line(i + 1, text, &mut out.json_paths)? {
                out.lines.push(line);
            }
        }
        Ok(out)
    }

    /// Compiles a single text with one line per `\n` (a trailing `\r` is ignored).
    pub fn compile_text(text: &str) -> Result<Restrictions, LineError> {
        let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        Restrictions::compile(&lines)
    }

    /// No lines: the token may call anything under the protected paths.
    pub fn is_unrestricted(&self) -> bool {
        self.lines.is_empty()
    }

    /// Number of (non-blank) lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Same as [`Restrictions::is_unrestricted`].
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The compiled lines, in order.
    pub fn line_infos(&self) -> impl Iterator<Item = LineInfo<'_>> + '_ {
        self.lines.iter().map(|l| LineInfo {
            number: l.number,
            source: &l.source,
            methods: l.methods.map(|mask| {
                KNOWN_METHODS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, m)| *m)
                    .collect()
            }),
            url_pattern: &l.url_source,
            has_query_conditions: !l.query.is_empty(),
            has_json_conditions: !l.json.is_empty(),
        })
    }

    /// True when some line has a QueryParam condition (a form body matters).
    pub fn has_query_lines(&self) -> bool {
        self.lines.iter().any(|l| !l.query.is_empty())
    }

    /// True when some line has a JsonData condition (the filter may need to buffer).
    pub fn has_json_lines(&self) -> bool {
        self.lines.iter().any(|l| !l.json.is_empty())
    }

    /// Decides on method, path and query: the lowest line without JsonData conditions that
    /// matches allows; otherwise a JsonData line whose head matches asks for the body.
    pub fn evaluate_head(&self, req: &RequestView<'_>) -> HeadVerdict {
        if self.lines.is_empty() {
            return HeadVerdict::Allow(None);
        }
        let mut need_body = false;
        for line in &self.lines {
            if line.json.is_empty() {
                if line.head(req).is_ok() {
                    return HeadVerdict::Allow(Some(line.number));
                }
            } else if !need_body && line.head(req).is_ok() {
                need_body = true;
            }
        }
        if need_body {
            HeadVerdict::NeedBody
        } else {
            HeadVerdict::Deny
        }
    }

    /// Decides once the body is known (after [`HeadVerdict::NeedBody`]): the lowest line that
    /// fully matches allows. `Err` when the body is not strict JSON (400), with the reason.
    /// A token without lines is never asked for its body; here it would read as `Deny`.
    pub fn evaluate_body(
        &self,
        req: &RequestView<'_>,
        body: &[u8],
    ) -> Result<BodyVerdict, &'static str> {
        let found = json::find(body, &self.json_paths).map_err(|e| e.reason)?;
        for line in &self.lines {
            if line.head(req).is_ok() && line.body_fail(&found).is_none() {
                return Ok(BodyVerdict::Allow(line.number));
            }
        }
        Ok(BodyVerdict::Deny)
    }

    /// For `tokenctl explain`: per line, whether it matches or the first condition that
    /// fails. `body`: the request body, if any (needed to judge JsonData lines).
    pub fn explain(&self, req: &RequestView<'_>, body: Option<&[u8]>) -> Explanation {
        let parsed = body.map(|b| json::find(b, &self.json_paths));
        let mut lines = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            let outcome = match line.head(req) {
                Err(HeadFail::Method) => Outcome::Failed(Failure::Method {
                    method: req.method.to_string(),
                    allowed: KNOWN_METHODS
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| line.methods.is_some_and(|m| m & (1 << i) != 0))
                        .map(|(_, m)| *m)
                        .collect(),
                }),
                Err(HeadFail::Path) => Outcome::Failed(Failure::Path {
                    path: req.path.to_string(),
                }),
                Err(HeadFail::QueryMissing(ci)) => Outcome::Failed(Failure::QueryMissing {
                    name: line
                        .query
                        .get(ci)
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                }),
                Err(HeadFail::QueryValue(ci, v)) => Outcome::Failed(Failure::QueryValue {
                    name: line
                        .query
                        .get(ci)
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    value: v.into_owned(),
                }),
                Err(HeadFail::FormBody) => Outcome::Failed(Failure::FormBody),
                Ok(()) if line.json.is_empty() => Outcome::Matched,
                Ok(()) => match &parsed {
                    None => Outcome::Failed(Failure::BodyNeeded),
                    Some(Err(e)) => Outcome::Failed(Failure::BodyNotJson {
                        reason: e.reason,
                        offset: e.offset,
                    }),
                    Some(Ok(found)) => match line.body_fail(found) {
                        None => Outcome::Matched,
                        Some((cond, node)) => Outcome::Failed(match node {
                            Node::Missing => Failure::JsonMissing {
                                node: cond.node.clone(),
                            },
                            Node::Array => Failure::JsonNotScalar {
                                node: cond.node.clone(),
                                kind: "an array",
                            },
                            Node::Object => Failure::JsonNotScalar {
                                node: cond.node.clone(),
                                kind: "an object",
                            },
                            Node::Scalar(v) => Failure::JsonValue {
                                node: cond.node.clone(),
                                value: v.to_string(),
                            },
                        }),
                    },
                },
            };
            lines.push(LineReport {
                line: line.number,
                source: line.source.clone(),
                outcome,
            });
        }
        // As the filter decides: a line without JsonData wins without looking at the body;
        // only when none matches does the body stage pick the lowest matching line.
        let matched = |plain_only: bool| {
            self.lines
                .iter()
                .zip(&lines)
                .find(|(l, r)| r.outcome == Outcome::Matched && (!plain_only || l.json.is_empty()))
                .map(|(l, _)| l.number)
        };
        let allowed_by = matched(true).or_else(|| matched(false));
        Explanation {
            unrestricted: self.lines.is_empty(),
            allowed_by,
            lines,
        }
    }
}

/// The result of [`Restrictions::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The token has no lines: everything is allowed.
    pub unrestricted: bool,
    /// The line that allows the request, if any: the lowest matching line without JsonData
    /// conditions, else the lowest matching line (the filter's `rule`).
    pub allowed_by: Option<usize>,
    /// One report per (non-blank) line, in order.
    pub lines: Vec<LineReport>,
}

/// How one line fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineReport {
    /// 1-based line number as configured.
    pub line: usize,
    /// The line as written.
    pub source: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Matched,
    Failed(Failure),
}

/// The first condition of a line that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Method {
        method: String,
        allowed: Vec<&'static str>,
    },
    Path {
        path: String,
    },
    QueryMissing {
        name: String,
    },
    QueryValue {
        name: String,
        value: String,
    },
    /// The line has QueryParam conditions and the request carries a form body.
    FormBody,
    /// The line has JsonData conditions and no body was given.
    BodyNeeded,
    BodyNotJson {
        reason: &'static str,
        offset: usize,
    },
    JsonMissing {
        node: String,
    },
    JsonNotScalar {
        node: String,
        kind: &'static str,
    },
    JsonValue {
        node: String,
        value: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Method { method, allowed } => {
                write!(f, "method {method} is not in [{}]", allowed.join(","))
            }
            Failure::Path { path } => write!(f, "path `{path}` does not match the URL pattern"),
            Failure::QueryMissing { name } => write!(f, "query parameter `{name}` is missing"),
            Failure::QueryValue { name, value } => {
                write!(
                    f,
                    "query parameter `{name}`: value `{value}` does not match"
                )
            }
            Failure::FormBody => write!(
                f,
                "query parameter conditions cannot hold with a form body (the app reads its parameters too)"
            ),
            Failure::BodyNeeded => {
                write!(f, "needs the request body (JsonData) and none was given")
            }
            Failure::BodyNotJson { reason, offset } => write!(f, "{reason} (at byte {offset})"),
            Failure::JsonMissing { node } => write!(f, "JSON node `{node}` is missing"),
            Failure::JsonNotScalar { node, kind } => {
                write!(
                    f,
                    "JSON node `{node}` is {kind}, not a string, number, boolean or null"
                )
            }
            Failure::JsonValue { node, value } => {
                write!(f, "JSON node `{node}`: value `{value}` does not match")
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Matched => write!(f, "matched"),
            Outcome::Failed(why) => write!(f, "{why}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

const QUERY_KIND: &str = "QueryParam";
const JSON_KIND: &str = "JsonData";

struct LineParser {
    number: usize,
    chars: Vec<char>,
}

impl LineParser {
    fn err(&self, idx: usize, message: impl Into<String>) -> LineError {
        LineError {
            line: self.number,
            column: idx + 1,
            message: message.into(),
        }
    }

    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    fn text(&self, from: usize, to: usize) -> String {
        self.chars
            .get(from..to)
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }

    /// `[KIND::` at `i`, compared case-insensitively; returns the kind as written correctly.
    fn condition_kind_at(&self, i: usize) -> Option<(&'static str, bool)> {
        if self.at(i) != Some('[') {
            return None;
        }
        for kind in [QUERY_KIND, JSON_KIND] {
            let word = self.text(i + 1, i + 1 + kind.len());
            if word.eq_ignore_ascii_case(kind)
                && self.at(i + 1 + kind.len()) == Some(':')
                && self.at(i + 2 + kind.len()) == Some(':')
            {
                return Some((kind, word == kind));
            }
        }
        None
    }

    fn escaped(&self, i: usize) -> bool {
        let mut n = 0;
        let mut k = i;
        while k > 0 && self.at(k - 1) == Some('\\') {
            n += 1;
            k -= 1;
        }
        n % 2 == 1
    }

    fn skip_ws(&self, mut i: usize, end: usize) -> usize {
        while i < end && self.at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        i
    }

    fn regex(&self, from: usize, to: usize) -> Result<Arc<Regex>, LineError> {
        javare::compile(&self.text(from, to)).map_err(|e| self.err(from + e.offset, e.message))
    }

    /// End (index of the closing `]`) of a condition regex starting at `from`.
    fn condition_regex_end(&self, from: usize, end: usize) -> Option<usize> {
        let mut i = from;
        let mut depth = 0usize;
        let mut class_start = false;
        while i < end {
            let c = self.at(i)?;
            let was_start = class_start;
            class_start = false;
            match c {
                '\\' if self.at(i + 1) == Some('Q') => {
                    i += 2;
                    while i < end && !(self.at(i) == Some('\\') && self.at(i + 1) == Some('E')) {
                        i += 1;
                    }
                    i += 2;
                    continue;
                }
                '\\' => {
                    i += 2;
                    continue;
                }
                '[' => {
                    depth += 1;
                    i += 1;
                    if self.at(i) == Some('^') {
                        i += 1;
                    }
                    class_start = true;
                    continue;
                }
                ']' if depth > 0 && !was_start => depth -= 1,
                ']' if depth == 0 => return Some(i),
                _ => {}
            }
            i += 1;
        }
        None
    }
}

fn parse_line(
    number: usize,
    text: &str,
    json_paths: &mut Vec<Vec<String>>,
) -> Result<Option<Line>, LineError> {
    let p = LineParser {
        number,
        chars: text.chars().collect(),
    };
    if let Some(i) = p.chars.iter().position(|c| *c == '\n') {
        return Err(p.err(i, "a restriction line cannot contain a line break"));
    }
    let Some(start) = p.chars.iter().position(|c| !c.is_whitespace()) else {
        return Ok(None);
    };
    let end = p
        .chars
        .iter()
        .rposition(|c| !c.is_whitespace())
        .map_or(start, |e| e + 1);
    let mut pos = start;

    // METHODS
    let mut methods = None;
    if p.at(pos) == Some('[') {
        let close = (pos + 1..end).find(|&i| p.at(i) == Some(']'));
        if let Some(close) = close {
            let inner = p.chars.get(pos + 1..close).unwrap_or(&[]);
            let only_names = !inner.is_empty()
                && inner
                    .iter()
                    .all(|c| c.is_ascii_alphabetic() || matches!(c, ',' | '|' | ' ' | '\t'))
                && inner.iter().any(char::is_ascii_alphabetic);
            if only_names {
                let mut mask = 0u16;
                let mut tok_start = pos + 1;
                for i in pos + 1..=close {
                    let c = p.at(i).unwrap_or(']');
                    if matches!(c, ',' | '|' | ']') {
                        let raw = p.text(tok_start, i);
                        let name = raw.trim();
                        if name.is_empty() {
                            return Err(p.err(i, "empty method name in the method list"));
                        }
                        let lead = raw.len() - raw.trim_start().len();
                        let Some(bit) = method_bit(name) else {
                            return Err(p.err(tok_start + lead, format!("unknown method `{name}`")));
                        };
                        mask |= bit;
                        tok_start = i + 1;
                    }
                }
                methods = Some(mask);
                pos = p.skip_ws(close + 1, end);
            }
        }
    }

    // Where the conditions begin.
    let mut cond_start = end;
    for i in pos..end {
        if let Some((kind, exact)) = p.condition_kind_at(i) {
            if p.escaped(i) {
                continue;
            }
            if !exact {
                return Err(p.err(i + 1, format!("condition kind must be spelled `{kind}`")));
            }
            cond_start = i;
            break;
        }
    }

    // URL-REGEX
    let mut url_end = cond_start;
    while url_end > pos && p.at(url_end - 1).is_some_and(char::is_whitespace) {
        url_end -= 1;
    }
    if url_end == pos {
        return Err(p.err(pos, "empty URL pattern"));
    }
    let url = p.regex(pos, url_end)?;
    let url_source = p.text(pos, url_end);
    let url_prefix = javare::required_prefix(&url_source).into_boxed_slice();

    // Conditions
    let mut query = Vec::new();
    let mut json = Vec::new();
    let mut i = cond_start;
    while i < end {
        let Some((kind, exact)) = p.condition_kind_at(i) else {
            return Err(p.err(
                i,
                "expected a condition [QueryParam::NAME==REGEX] or [JsonData::NODE==REGEX] (conditions must come last)",
            ));
        };
        if !exact {
            return Err(p.err(i + 1, format!("condition kind must be spelled `{kind}`")));
        }
        let name_start = i + 1 + kind.len() + 2;
        let Some(eq) =
            (name_start..end).find(|&k| p.at(k) == Some('=') && p.at(k + 1) == Some('='))
        else {
            return Err(p.err(i, format!("condition must be {kind}::NAME==REGEX")));
        };
        let name = p.text(name_start, eq);
        if name.contains(['[', ']']) {
            return Err(p.err(i, format!("condition must be {kind}::NAME==REGEX")));
        }
        if name.is_empty() {
            return Err(p.err(
                name_start,
                if kind == QUERY_KIND {
                    "empty parameter name"
                } else {
                    "empty JSON node"
                },
            ));
        }
        let re_start = eq + 2;
        let Some(close) = p.condition_regex_end(re_start, end) else {
            return Err(p.err(i, "unclosed condition: missing `]`"));
        };
        let re = p.regex(re_start, close)?;
        if kind == QUERY_KIND {
            query.push(QueryCond { name, re });
        } else {
            let segs: Vec<String> = name.split('.').map(str::to_string).collect();
            if let Some(k) = segs.iter().position(String::is_empty) {
                let off: usize = segs.iter().take(k).map(|s| s.chars().count() + 1).sum();
                return Err(p.err(name_start + off, "empty segment in JSON node path"));
            }
            let path = match json_paths.iter().position(|q| *q == segs) {
                Some(idx) => idx,
                None => {
                    json_paths.push(segs);
                    json_paths.len() - 1
                }
            };
            json.push(JsonCond {
                node: name,
                path,
                re,
            });
        }
        i = p.skip_ws(close + 1, end);
    }

    Ok(Some(Line {
        number,
        source: text.trim().to_string(),
        methods,
        url,
        url_prefix,
        url_source,
        query,
        json,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(lines: &[&str]) -> Restrictions {
        let v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        Restrictions::compile(&v).unwrap_or_else(|e| panic!("{lines:?}: {e}"))
    }

    fn err(lines: &[&str]) -> LineError {
        let v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        Restrictions::compile(&v).expect_err("must not compile")
    }

    fn req<'a>(method: &'a str, target: &'a str) -> RequestView<'a> {
        let (path, q) = crate::canonical::split_target(target);
        RequestView {
            method,
            path,
            query: Query::parse(q).unwrap(),
            form_body: false,
        }
    }

    fn head(rs: &Restrictions, method: &str, target: &str) -> HeadVerdict {
        rs.evaluate_head(&req(method, target))
    }

    fn body(
        rs: &Restrictions,
        method: &str,
        target: &str,
        b: &str,
    ) -> Result<BodyVerdict, &'static str> {
        rs.evaluate_body(&req(method, target), b.as_bytes())
    }

    use BodyVerdict as B;
    use HeadVerdict as H;

    #[test]
    fn no_lines_is_unrestricted() {
        let rs = r(&[]);
        assert!(rs.is_unrestricted());
        assert_eq!(head(&rs, "DELETE", "/rest/anything"), H::Allow(None));
        let rs = r(&["", "   "]);
        assert!(rs.is_unrestricted());
    }

    #[test]
    fn seed_url_only() {
        let rs = r(&[".*/rest/api/2/issue/JRA.*"]);
        assert_eq!(
            head(&rs, "GET", "/rest/api/2/issue/JRA-12"),
            H::Allow(Some(1))
        );
        assert_eq!(
            head(&rs, "DELETE", "/jira/rest/api/2/issue/JRA-12/comment"),
            H::Allow(Some(1))
        );
        assert_eq!(head(&rs, "GET", "/rest/api/2/issue/KAN-1"), H::Deny);
        assert_eq!(head(&rs, "GET", "/rest/api/2/issue/jra-1"), H::Deny);
    }

    #[test]
    fn line_infos_describe_the_compiled_lines() {
        let rs = r(&[
            "",
            "[post|PUT] .*/rest/x[A-Z]+[QueryParam::a==b][JsonData::c==d]",
            ".*/rest/api/2/filter",
        ]);
        let infos: Vec<LineInfo> = rs.line_infos().collect();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].number, 2);
        assert_eq!(infos[0].methods, Some(vec!["POST", "PUT"]));
        assert_eq!(infos[0].url_pattern, ".*/rest/x[A-Z]+");
        assert!(infos[0].has_query_conditions && infos[0].has_json_conditions);
        assert_eq!(
            (infos[1].methods.clone(), infos[1].url_pattern),
            (None, ".*/rest/api/2/filter")
        );
        assert!(!infos[1].has_json_conditions);
    }

    #[test]
    fn seed_method() {
        let rs = r(&["[post].*/rest/api/2/issue/KANBAN-100/comment.*"]);
        assert_eq!(
            head(&rs, "POST", "/rest/api/2/issue/KANBAN-100/comment"),
            H::Allow(Some(1))
        );
        // The line's method names are case-insensitive; the request's method is exact.
        assert_eq!(
            head(&rs, "post", "/rest/api/2/issue/KANBAN-100/comment"),
            H::Deny
        );
        assert_eq!(
            head(&rs, "GET", "/rest/api/2/issue/KANBAN-100/comment"),
            H::Deny
        );
        assert_eq!(
            head(&rs, "POST", "/rest/api/2/issue/KANBAN-101/comment"),
            H::Deny
        );
        let rs = r(&["[get]/rest/.*"]);
        assert_eq!(head(&rs, "HEAD", "/rest/x"), H::Deny);
        assert_eq!(head(&rs, "GETX", "/rest/x"), H::Deny);
        let rs = r(&["[ GET , Put|delete ] /rest/.*"]);
        assert_eq!(head(&rs, "PUT", "/rest/x"), H::Allow(Some(1)));
        assert_eq!(head(&rs, "DELETE", "/rest/x"), H::Allow(Some(1)));
        assert_eq!(head(&rs, "POST", "/rest/x"), H::Deny);
        // Any method, even an unknown one, when the line names none.
        let rs = r(&["/rest/.*"]);
        assert_eq!(head(&rs, "PROPFIND", "/rest/x"), H::Allow(Some(1)));
    }

    #[test]
    fn seed_query_params() {
        let rs = r(&[".*/rest/extender/1.0/filter/user/.*[QueryParam::permissions==true]"]);
        let t = |q: &str| {
            head(
                &rs,
                "GET",
                &format!("/rest/extender/1.0/filter/user/bob{q}"),
            )
        };
        assert_eq!(t("?permissions=true"), H::Allow(Some(1)));
        assert_eq!(t("?a=1&permissions=true&b"), H::Allow(Some(1)));
        assert_eq!(t(""), H::Deny);
        assert_eq!(t("?permissions=false"), H::Deny);
        assert_eq!(t("?permissions=truex"), H::Deny);
        // Query pollution: every occurrence must match.
        assert_eq!(t("?permissions=true&permissions=false"), H::Deny);
        assert_eq!(t("?permissions=false&permissions=true"), H::Deny);
        assert_eq!(t("?permissions=true&permissions=true"), H::Allow(Some(1)));
        // Encoded names and values are decoded before comparing.
        assert_eq!(t("?perm%69ssions=tru%65"), H::Allow(Some(1)));
        assert_eq!(t("?permissions=true&perm%69ssions=false"), H::Deny);
        assert_eq!(t("?Permissions=true"), H::Deny);
        assert_eq!(t("?permissions"), H::Deny);

        let rs = r(&[".*rest/extender/1.0/worklog/user/.*[QueryParam::dateFrom==2018-01-01][QueryParam::dateTo==2018-12-01]"]);
        let t = |q: &str| head(&rs, "GET", &format!("/rest/extender/1.0/worklog/user/x{q}"));
        assert_eq!(
            t("?dateFrom=2018-01-01&dateTo=2018-12-01"),
            H::Allow(Some(1))
        );
        assert_eq!(
            t("?dateTo=2018-12-01&dateFrom=2018-01-01"),
            H::Allow(Some(1))
        );
        assert_eq!(t("?dateFrom=2018-01-01"), H::Deny);
        assert_eq!(t("?dateFrom=2018-01-01&dateTo=2019-12-01"), H::Deny);
    }

    #[test]
    fn query_conditions_never_hold_with_a_form_body() {
        // Tomcat's getParameterValues merges a form body's parameters with the query's
        // (tests/tomcat/ found `?permissions=true` + body `permissions=false` allowed).
        let rs = r(&[
            ".*/rest/extender/1.0/filter/user/.*[QueryParam::permissions==true]",
            "[post]/rest/api/2/issue/JRA-1/attachments",
        ]);
        let form = |method, target| {
            let mut v = req(method, target);
            v.form_body = true;
            rs.evaluate_head(&v)
        };
        let q = "/rest/extender/1.0/filter/user/bob?permissions=true";
        assert_eq!(head(&rs, "POST", q), H::Allow(Some(1)));
        assert_eq!(form("POST", q), H::Deny);
        assert_eq!(form("GET", q), H::Deny);
        // a line without QueryParam conditions is not concerned
        assert_eq!(
            form("POST", "/rest/api/2/issue/JRA-1/attachments"),
            H::Allow(Some(2))
        );
        let mut v = req("POST", q);
        v.form_body = true;
        let ex = rs.explain(&v, None);
        assert!(
            matches!(ex.lines[0].outcome, Outcome::Failed(Failure::FormBody)),
            "{ex:?}"
        );
    }

    #[test]
    fn plus_is_space_in_query() {
        let rs = r(&["/rest/search[QueryParam::jql==project = JRA][QueryParam::a b==x]"]);
        assert_eq!(
            head(&rs, "GET", "/rest/search?jql=project+%3D+JRA&a+b=x"),
            H::Allow(Some(1))
        );
        assert_eq!(
            head(&rs, "GET", "/rest/search?jql=project%20=%20JRA&a%20b=x"),
            H::Allow(Some(1))
        );
        assert_eq!(
            head(&rs, "GET", "/rest/search?jql=project%2B%3D%2BJRA&a+b=x"),
            H::Deny
        );
        let rs = r(&["/rest/x[QueryParam::v==a\\+b]"]);
        assert_eq!(head(&rs, "GET", "/rest/x?v=a%2Bb"), H::Allow(Some(1)));
        assert_eq!(head(&rs, "GET", "/rest/x?v=a+b"), H::Deny);
    }

    #[test]
    fn seed_json() {
        let rs = r(&[".*/rest/api/2/filter[JsonData::editable==false]"]);
        assert_eq!(head(&rs, "POST", "/rest/api/2/filter"), H::NeedBody);
        assert_eq!(head(&rs, "POST", "/rest/api/2/filterx"), H::Deny);
        let b = |s: &str| body(&rs, "POST", "/rest/api/2/filter", s);
        assert_eq!(b(r#"{"name":"f","editable":false}"#), Ok(B::Allow(1)));
        assert_eq!(b(r#"{"name":"f","editable":"false"}"#), Ok(B::Allow(1)));
        assert_eq!(b(r#"{"name":"f","editable":true}"#), Ok(B::Deny));
        assert_eq!(b(r#"{"name":"f"}"#), Ok(B::Deny));
        assert_eq!(b(r#"{"editable":[false]}"#), Ok(B::Deny));
        assert_eq!(b(r#"{"editable":{"x":false}}"#), Ok(B::Deny));
        assert_eq!(b(r#"{"x":{"editable":false}}"#), Ok(B::Deny));
        assert!(b(r#"{"editable":false,"editable":true}"#).is_err());
        assert!(b(r#"{"editable":false,"edit\u0061ble":true}"#).is_err());
        assert!(b(r#"{"editable":false,"x":{"a":1,"a":2}}"#).is_err());
        assert!(b("").is_err());
        assert!(b("\u{feff}{\"editable\":false}").is_err());
        assert!(b(r#"{"editable":false}x"#).is_err());

        let rs =
            r(&[".*/rest/api/2/filter[JsonData::editable==false][JsonData::favourite==false]"]);
        let b = |s: &str| body(&rs, "POST", "/rest/api/2/filter", s);
        assert_eq!(
            b(r#"{"editable":false,"favourite":false}"#),
            Ok(B::Allow(1))
        );
        assert_eq!(b(r#"{"editable":false,"favourite":true}"#), Ok(B::Deny));
        assert_eq!(b(r#"{"editable":false}"#), Ok(B::Deny));
    }

    #[test]
    fn json_text_forms() {
        let rs = r(&[
            "/rest/a[JsonData::n==1]",
            "/rest/b[JsonData::n==1\\.0]",
            "/rest/c[JsonData::n==null]",
            "/rest/d[JsonData::fields.project.key==[A-Z]+]",
            "/rest/e[JsonData::s==a\\]b]",
        ]);
        let b = |p: &str, s: &str| body(&rs, "POST", p, s);
        assert_eq!(b("/rest/a", r#"{"n":1}"#), Ok(B::Allow(1)));
        assert_eq!(b("/rest/a", r#"{"n":1.0}"#), Ok(B::Deny));
        assert_eq!(b("/rest/a", r#"{"n":"1"}"#), Ok(B::Allow(1)));
        assert_eq!(b("/rest/b", r#"{"n":1.0}"#), Ok(B::Allow(2)));
        assert_eq!(b("/rest/b", r#"{"n":1}"#), Ok(B::Deny));
        assert_eq!(b("/rest/c", r#"{"n":null}"#), Ok(B::Allow(3)));
        assert_eq!(b("/rest/c", r#"{"n":"null"}"#), Ok(B::Allow(3)));
        assert_eq!(
            b("/rest/d", r#"{"fields":{"project":{"key":"JRA"}}}"#),
            Ok(B::Allow(4))
        );
        assert_eq!(
            b("/rest/d", r#"{"fields":{"project":{"key":"jra"}}}"#),
            Ok(B::Deny)
        );
        assert_eq!(
            b("/rest/d", r#"{"fields":{"project":{"key":["JRA"]}}}"#),
            Ok(B::Deny)
        );
        assert_eq!(b("/rest/d", r#"{"fields.project.key":"JRA"}"#), Ok(B::Deny));
        assert_eq!(b("/rest/e", r#"{"s":"a]b"}"#), Ok(B::Allow(5)));
        assert_eq!(b("/rest/e", r#"{"s":"a\u005db"}"#), Ok(B::Allow(5)));
    }

    #[test]
    fn lines_or_lowest_wins_and_numbers_keep_blank_lines() {
        let rs = r(&[
            "",
            "[get]/rest/a.*",
            "   ",
            "/rest/.*",
            "/rest/b[JsonData::x==1]",
        ]);
        assert_eq!(head(&rs, "GET", "/rest/a1"), H::Allow(Some(2)));
        assert_eq!(head(&rs, "POST", "/rest/a1"), H::Allow(Some(4)));
        let rs = r(&["/rest/b[JsonData::x==1]", "[get]/rest/b"]);
        assert_eq!(head(&rs, "GET", "/rest/b"), H::Allow(Some(2)));
        assert_eq!(head(&rs, "POST", "/rest/b"), H::NeedBody);
        assert_eq!(body(&rs, "POST", "/rest/b", r#"{"x":1}"#), Ok(B::Allow(1)));
        assert_eq!(body(&rs, "POST", "/rest/b", r#"{"x":2}"#), Ok(B::Deny));
        // A JsonData line whose head no longer matches does not count in the body stage.
        assert_eq!(body(&rs, "POST", "/rest/c", r#"{"x":1}"#), Ok(B::Deny));
        let rs = r(&["/rest/b[JsonData::x==1]", "/rest/b[JsonData::y==2]"]);
        assert_eq!(
            body(&rs, "POST", "/rest/b", r#"{"y":2,"x":0}"#),
            Ok(B::Allow(2))
        );
        assert_eq!(
            body(&rs, "POST", "/rest/b", r#"{"y":2,"x":1}"#),
            Ok(B::Allow(1))
        );
        // Query and JSON conditions together.
        let rs = r(&["/rest/b[QueryParam::q==1][JsonData::x==1]"]);
        assert_eq!(head(&rs, "POST", "/rest/b?q=2"), H::Deny);
        assert_eq!(head(&rs, "POST", "/rest/b?q=1"), H::NeedBody);
        assert_eq!(
            body(&rs, "POST", "/rest/b?q=1", r#"{"x":1}"#),
            Ok(B::Allow(1))
        );
        assert_eq!(
            body(&rs, "POST", "/rest/b?q=1&q=2", r#"{"x":1}"#),
            Ok(B::Deny)
        );
    }

    #[test]
    fn url_is_whole_match_and_may_hold_classes() {
        let rs = r(&["/rest/api/2/issue/[A-Z]+-[0-9]+"]);
        assert_eq!(
            head(&rs, "GET", "/rest/api/2/issue/JRA-1"),
            H::Allow(Some(1))
        );
        assert_eq!(head(&rs, "GET", "/rest/api/2/issue/JRA-1/comment"), H::Deny);
        assert_eq!(head(&rs, "GET", "/x/rest/api/2/issue/JRA-1"), H::Deny);
        let rs = r(&["[GET][/]rest/.*"]);
        assert_eq!(head(&rs, "GET", "/rest/x"), H::Allow(Some(1)));
        let rs = r(&["/rest/\\d+"]);
        assert_eq!(head(&rs, "GET", "/rest/12"), H::Allow(Some(1)));
        assert_eq!(head(&rs, "GET", "/rest/١٢"), H::Deny);
        // An escaped bracket is part of the URL regex, not a condition.
        let rs = r(&["/rest/x\\[QueryParam::a==b\\]"]);
        assert_eq!(
            head(&rs, "GET", "/rest/x[QueryParam::a==b]"),
            H::Allow(Some(1))
        );
    }

    #[test]
    fn condition_regex_bracket_rule() {
        let rs = r(&["/rest/x[QueryParam::k==[A-Z]+][QueryParam::j==[]a]+][QueryParam::m==[^]]*]"]);
        assert_eq!(
            head(&rs, "GET", "/rest/x?k=AB&j=]a&m=xyz"),
            H::Allow(Some(1))
        );
        assert_eq!(head(&rs, "GET", "/rest/x?k=AB&j=]a&m=x]"), H::Deny);
        let rs = r(&["/rest/x[QueryParam::k==\\Q]\\E]"]);
        assert_eq!(head(&rs, "GET", "/rest/x?k=%5D"), H::Allow(Some(1)));
        let rs = r(&["/rest/x [QueryParam::a==1]  [QueryParam::b==[a-z&&[^b]]]  "]);
        assert_eq!(head(&rs, "GET", "/rest/x?a=1&b=c"), H::Allow(Some(1)));
        assert_eq!(head(&rs, "GET", "/rest/x?a=1&b=b"), H::Deny);
        let rs = r(&["/rest/x[QueryParam::a==]"]);
        assert_eq!(head(&rs, "GET", "/rest/x?a="), H::Allow(Some(1)));
        assert_eq!(head(&rs, "GET", "/rest/x?a"), H::Allow(Some(1)));
        assert_eq!(head(&rs, "GET", "/rest/x?a=1"), H::Deny);
        let rs = r(&["/rest/x[QueryParam::a==b==c]"]);
        assert_eq!(head(&rs, "GET", "/rest/x?a=b%3D%3Dc"), H::Allow(Some(1)));
    }

    #[test]
    fn parse_errors_with_positions() {
        let cases: &[(&[&str], usize, usize, &str)] = &[
            (&["[GTE]/rest/.*"], 1, 2, "unknown method `GTE`"),
            (
                &["/ok", "[get, pots]/rest/.*"],
                2,
                7,
                "unknown method `pots`",
            ),
            (&["[get,]/rest/.*"], 1, 6, "empty method name"),
            (&["[get]"], 1, 6, "empty URL pattern"),
            (&["[get]  [QueryParam::a==b]"], 1, 8, "empty URL pattern"),
            (&["[QueryParam::a==b]"], 1, 1, "empty URL pattern"),
            (
                &["", "/rest/(?<=x)y"],
                2,
                7,
                "look-behind `(?<=` is not supported",
            ),
            (&["/rest/x(a)\\1"], 1, 11, "back-reference"),
            (&["/rest/a++"], 1, 9, "possessive"),
            (&["/rest/x[QueryParam::a==(?=b)]"], 1, 24, "look-ahead"),
            (
                &["/rest/x[QueryParam::a]"],
                1,
                8,
                "condition must be QueryParam::NAME==REGEX",
            ),
            (
                &["/rest/x[JsonData::a=b]"],
                1,
                8,
                "condition must be JsonData::NAME==REGEX",
            ),
            (&["/rest/x[QueryParam::==b]"], 1, 21, "empty parameter name"),
            (&["/rest/x[JsonData::==b]"], 1, 19, "empty JSON node"),
            (&["/rest/x[JsonData::a..b==1]"], 1, 21, "empty segment"),
            (&["/rest/x[QueryParam::a==b"], 1, 8, "unclosed condition"),
            (&["/rest/x[QueryParam::a==[b]"], 1, 8, "unclosed condition"),
            (
                &["/rest/x[QueryParam::a==b]/more"],
                1,
                26,
                "conditions must come last",
            ),
            (
                &["/rest/x[QueryParam::a==b]]"],
                1,
                26,
                "conditions must come last",
            ),
            (&["/rest/x[queryparam::a==b]"], 1, 9, "spelled `QueryParam`"),
            (
                &["/rest/x[QueryParam::a==b][jsondata::c==d]"],
                1,
                27,
                "spelled `JsonData`",
            ),
            (&["/rest/x[QueryParam::a==b{]"], 1, 25, "repetition"),
            (&["  /rest/[z-a]"], 1, 10, "invalid regex"),
            (&["/ré/(?!x)"], 1, 5, "negative look-ahead"),
            (&["/rest\n/x"], 1, 6, "line break"),
        ];
        for (lines, line, col, msg) in cases {
            let e = err(lines);
            assert_eq!((e.line, e.column), (*line, *col), "{lines:?}: {e}");
            assert!(e.message.contains(msg), "{lines:?}: {e}");
        }
    }

    #[test]
    fn compile_text_splits_lines() {
        let rs = Restrictions::compile_text("[get]/rest/a\r\n\r\n/rest/b\n").unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(head(&rs, "POST", "/rest/b"), H::Allow(Some(3)));
        let e = Restrictions::compile_text("/rest/a\n\n[bad]/x").unwrap_err();
        assert_eq!((e.line, e.column), (3, 2));
    }

    #[test]
    fn explain_reports_first_failure() {
        let rs = r(&[
            "[post]/rest/a",
            "/rest/b.*",
            "/rest/x[QueryParam::p==1]",
            "/rest/x[QueryParam::q==1]",
            "/rest/x[JsonData::a.b==1]",
            "/rest/x",
        ]);
        let x = rs.explain(&req("GET", "/rest/x?p=2&q=1"), Some(br#"{"a":{"b":[1]}}"#));
        assert!(!x.unrestricted);
        assert_eq!(x.allowed_by, Some(4));
        let o: Vec<String> = x.lines.iter().map(|l| l.outcome.to_string()).collect();
        assert_eq!(o[0], "method GET is not in [POST]");
        assert_eq!(o[1], "path `/rest/x` does not match the URL pattern");
        assert_eq!(o[2], "query parameter `p`: value `2` does not match");
        assert_eq!(o[3], "matched");
        assert_eq!(
            o[4],
            "JSON node `a.b` is an array, not a string, number, boolean or null"
        );
        assert_eq!(o[5], "matched");
        assert_eq!(x.lines[2].line, 3);
        assert_eq!(x.lines[4].source, "/rest/x[JsonData::a.b==1]");

        let x = rs.explain(&req("GET", "/rest/x"), None);
        assert_eq!(
            x.lines[2].outcome,
            Outcome::Failed(Failure::QueryMissing { name: "p".into() })
        );
        assert_eq!(x.lines[4].outcome, Outcome::Failed(Failure::BodyNeeded));
        let x = rs.explain(&req("GET", "/rest/x"), Some(b"{"));
        assert!(matches!(
            x.lines[4].outcome,
            Outcome::Failed(Failure::BodyNotJson { .. })
        ));
        let x = rs.explain(&req("GET", "/rest/x"), Some(br#"{"a":{"b":2}}"#));
        assert_eq!(
            x.lines[4].outcome.to_string(),
            "JSON node `a.b`: value `2` does not match"
        );
        let x = rs.explain(&req("GET", "/rest/x"), Some(br#"{"a":{}}"#));
        assert_eq!(x.lines[4].outcome.to_string(), "JSON node `a.b` is missing");
        assert!(r(&[]).explain(&req("GET", "/x"), None).unrestricted);
        // The filter's choice: a plain line wins over a lower JsonData line.
        let rs = r(&["/rest/x[JsonData::a==1]", "/rest/x"]);
        let x = rs.explain(&req("POST", "/rest/x"), Some(br#"{"a":1}"#));
        assert_eq!(x.allowed_by, Some(2));
        assert_eq!(head(&rs, "POST", "/rest/x"), H::Allow(Some(2)));
    }

    #[test]
    fn decoded_name_compare() {
        assert!(decoded_eq("perm%69ssions", "permissions"));
        assert!(decoded_eq("a+b", "a b"));
        assert!(decoded_eq("a%2Bb", "a+b"));
        assert!(!decoded_eq("a+b", "a+b"));
        assert!(!decoded_eq("ab", "abc"));
        assert!(!decoded_eq("abc%41", "abc"));
        assert!(decoded_eq("%C3%A9", "é"));
    }
}
