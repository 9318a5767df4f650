//! Java-flavoured regular expressions compiled with the `regex` crate (SPEC §6).
//!
//! Restriction lines come from the Jira app, where they were Java regexes applied with
//! `String.matches`. We keep that meaning: the pattern must match the WHOLE text, and the
//! constructs whose meaning differs between Java and Rust are translated to Java's meaning:
//!
//! * `\d \w \s` and `\D \W \S` are ASCII classes (Java's default), also inside classes;
//!   `\b \B` are ASCII word boundaries.
//! * `.` does not match line terminators (`\n \r \u0085 \u2028 \u2029`) unless `(?s)`.
//! * POSIX properties `\p{Alpha}`, `\p{Digit}`… are ASCII as in Java; `\p{IsX}` is `\p{X}`.
//! * `[[:alpha:]]` is a nested class of the characters `:alpha` in Java, not an ASCII class.
//! * `\Q…\E` is translated by escaping; `\xhh`, `\uhhhh` (surrogate pairs combined), `\0ooo`,
//!   `\cX`, `\e`, `\h`, `\v`, `\R` are translated.
//!
//! Constructs the `regex` crate cannot run (look-around, back-references, possessive
//! quantifiers, atomic groups, `\G`, `\Z`, Unicode blocks) are refused with a message naming
//! the construct and its offset, so an admin learns at load time instead of silently getting a
//! different match.
//!
//! Known residual differences (documented, harmless for URL paths): Java's `$` also matches
//! before a final line terminator; Java's `(?i)` is ASCII-only without `(?u)` (Rust folds
//! Unicode case, which only widens a case-insensitive pattern to non-ASCII letters).

use std::sync::Arc;

use regex::{Regex, RegexBuilder};

/// Upper bound on one compiled regex (program size and lazy-DFA cache). Configs are written by
/// admins, but a typo like `(a{1000}){1000}` must fail at load rather than eat the worker.
pub const SIZE_LIMIT: usize = 1 << 20;

/// A pattern that cannot be used. `offset` is the 0-based char index in the Java pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexError {
    pub offset: usize,
    pub message: String,
}

impl std::fmt::Display for RegexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at offset {})", self.message, self.offset)
    }
}

impl std::error::Error for RegexError {}

thread_local! {
    /// Patterns compiled during one configuration load ([`shared_compiles`]): tokens whose
    /// lines are written alike share one compiled regex (its search-cache pool too; it is
    /// `Sync`). Measured (`cargo bench --bench core`, 100,000 tokens with one equal line):
    /// about 1.2 GB held without sharing, more than a wasm VM may grow to. `None` outside a
    /// load, so nothing outlives the configuration that compiled it.
    static SHARED: std::cell::RefCell<Option<std::collections::HashMap<String, Arc<Regex>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a configuration load) with compiled patterns shared between equal lines.
pub fn shared_compiles<T>(f: impl FnOnce() -> T) -> T {
    let outer = SHARED.with(|s| {
        s.try_borrow_mut()
            .map(|mut s| {
                let fresh = s.is_none();
                if fresh {
                    *s = Some(std::collections::HashMap::new());
                }
                fresh
            })
            .unwrap_or(false)
    });
    let out = f();
    if outer {
        SHARED.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = None;
            }
        });
    }
    out
}

/// Compiles `pattern` so that `is_match` means Java's `String.matches` (whole text).
pub fn compile(pattern: &str) -> Result<Arc<Regex>, RegexError> {
    let cached = SHARED.with(|s| {
        s.try_borrow()
            .ok()
            .and_then(|s| s.as_ref().and_then(|m| m.get(pattern).cloned()))
    });
    if let Some(r) = cached {
        return Ok(r);
    }
    let r = Arc::new(compile_new(pattern)?);
    SHARED.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if let Some(m) = s.as_mut() {
                m.insert(pattern.to_owned(), r.clone());
            }
        }
    });
    Ok(r)
}

fn compile_new(pattern: &str) -> Result<Regex, RegexError> {
    let t = translate(pattern)?;
    let full = format!("{PREFIX}{})\\z", t.text);
    RegexBuilder::new(&full)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| map_build_error(&e, &t))
}

/// Bytes every text that `compile(pattern)` matches starts with (possibly none).
///
/// A line whose URL pattern starts with a literal (`/rest/api/2/issue/P1-\d+`) can turn a
/// request down with one `starts_with` instead of a regex search: on a token with ten lines,
/// nine are usually rejected this way. Taken from `regex-syntax`'s own literal extraction on
/// the same anchored pattern the regex is built from, so it holds under every construct the
/// translation emits (alternation, case-insensitive groups, classes); anything it cannot
/// vouch for yields an empty prefix, which rejects nothing.
pub fn required_prefix(pattern: &str) -> Vec<u8> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let Ok(t) = translate(pattern) else {
        return Vec::new();
    };
    let full = format!("{PREFIX}{})\\z", t.text);
    let Ok(hir) = regex_syntax::ParserBuilder::new().build().parse(&full) else {
        return Vec::new();
    };
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    seq.longest_common_prefix()
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// Prefix of the anchored pattern; its char length is subtracted when mapping error offsets.
const PREFIX: &str = "\\A(?:";
const PREFIX_CHARS: usize = 5;

/// Translates a Java pattern to `regex` syntax without anchors. Public for tests and tooling.
pub fn translate_pattern(pattern: &str) -> Result<String, RegexError> {
    translate(pattern).map(|t| t.text)
}

/// The translated text plus a map from output char positions to source char positions, so
/// errors reported by the `regex` crate point at the admin's text.
struct Translated {
    text: String,
    /// (output char index, source char index), increasing in both.
    map: Vec<(usize, usize)>,
}

fn map_build_error(e: &regex::Error, t: &Translated) -> RegexError {
    match e {
        regex::Error::CompiledTooBig(limit) => RegexError {
            offset: 0,
            message: format!("regex is too large once compiled (limit {limit} bytes)"),
        },
        regex::Error::Syntax(msg) => {
            // The message is "regex parse error:\n    PATTERN\n    ^^^\nerror: TEXT".
            let mut lines = msg.lines();
            let mut offset = 0;
            let mut text = String::new();
            let _ = lines.next();
            let _ = lines.next();
            if let Some(carets) = lines.next() {
                if let Some(col) = carets.chars().position(|c| c == '^') {
                    let out_pos = col.saturating_sub(4).saturating_sub(PREFIX_CHARS);
                    offset = t
                        .map
                        .iter()
                        .take_while(|(o, _)| *o <= out_pos)
                        .last()
                        .map(|(_, s)| *s)
                        .unwrap_or(0);
                }
            }
            for l in msg.lines() {
                if let Some(rest) = l.strip_prefix("error: ") {
                    text = rest.to_string();
                }
            }
            if text.is_empty() {
                text = msg.lines().last().unwrap_or("invalid regex").to_string();
            }
            RegexError {
                offset,
                message: format!("invalid regex: {text}"),
            }
        }
        other => RegexError {
            offset: 0,
            message: format!("invalid regex: {other}"),
        },
    }
}

/// ASCII class bodies (without brackets) for Java's default `\d \w \s`.
const DIGIT: &str = "0-9";
const WORD: &str = "0-9A-Za-z_";
const SPACE: &str = "\\t\\n\\x0B\\x0C\\r\\x20";
const HSPACE: &str =
    "\\t\\x20\\xA0\\x{1680}\\x{180E}\\x{2000}-\\x{200A}\\x{202F}\\x{205F}\\x{3000}";
const VSPACE: &str = "\\n\\x0B\\x0C\\r\\x{85}\\x{2028}\\x{2029}";
/// `.` without `(?s)`: Java excludes all its line terminators, Rust only `\n`.
const DOT: &str = "[^\\n\\r\\x{85}\\x{2028}\\x{2029}]";

struct Translator {
    src: Vec<char>,
    pos: usize,
    out: String,
    out_chars: usize,
    map: Vec<(usize, usize)>,
    /// Nesting depth of character classes (0 = outside).
    class_depth: usize,
    /// Just after `[` or `[^`: a `]` here is a literal (Java and Rust agree).
    class_start: bool,
    /// The previous class item was an unescaped `-` (to keep `--` from meaning set difference).
    prev_dash: bool,
    /// The last token was a quantifier (for possessive `+` / lazy `?` detection).
    after_quant: bool,
    /// `(?s)` in force in the current group.
    dotall: bool,
    /// Saved `dotall` and source offset of each open group.
    groups: Vec<(bool, usize)>,
}

fn err(offset: usize, message: impl Into<String>) -> RegexError {
    RegexError {
        offset,
        message: message.into(),
    }
}

fn translate(pattern: &str) -> Result<Translated, RegexError> {
    let mut t = Translator {
        src: pattern.chars().collect(),
        pos: 0,
        out: String::with_capacity(pattern.len() + 16),
        out_chars: 0,
        map: Vec::new(),
        class_depth: 0,
        class_start: false,
        prev_dash: false,
        after_quant: false,
        dotall: false,
        groups: Vec::new(),
    };
    t.run()?;
    Ok(Translated {
        text: t.out,
        map: t.map,
    })
}

/// Characters `regex` treats as meta somewhere (escaping them is always allowed).
fn is_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

impl Translator {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.src.get(self.pos + ahead).copied()
    }

    fn starts_with(&self, s: &str) -> bool {
        (self.pos..)
            .zip(s.chars())
            .all(|(i, c)| self.src.get(i) == Some(&c))
    }

    /// Emits output attributed to source position `src`.
    fn emit(&mut self, src: usize, s: &str) {
        self.map.push((self.out_chars, src));
        self.out.push_str(s);
        self.out_chars += s.chars().count();
    }

    /// Emits one literal character, escaped so it cannot be read as syntax in either context.
    fn emit_literal(&mut self, src: usize, c: char) {
        let in_class = self.class_depth > 0;
        if is_meta(c) || (in_class && c == ':') {
            let mut b = [0u8; 4];
            let s = format!("\\{}", c.encode_utf8(&mut b));
            self.emit(src, &s);
        } else if c.is_control() || c.is_whitespace() {
            self.emit(src, &format!("\\x{{{:X}}}", c as u32));
        } else {
            let mut b = [0u8; 4];
            let s: &str = c.encode_utf8(&mut b);
            self.emit(src, s);
        }
    }

    fn run(&mut self) -> Result<(), RegexError> {
        while let Some(c) = self.peek(0) {
            if self.class_depth > 0 {
                self.class_char(c)?;
            } else {
                self.outer_char(c)?;
            }
        }
        if self.class_depth > 0 {
            return Err(err(self.src.len(), "unclosed character class `[`"));
        }
        if let Some((_, at)) = self.groups.last() {
            return Err(err(*at, "unclosed group `(`"));
        }
        Ok(())
    }

    fn outer_char(&mut self, c: char) -> Result<(), RegexError> {
        let at = self.pos;
        match c {
            '\\' => {
                self.escape()?;
                self.after_quant = false;
            }
            '[' => {
                self.pos += 1;
                self.open_class(at);
                self.after_quant = false;
            }
            '(' => {
                self.group(at)?;
                self.after_quant = false;
            }
            ')' => {
                self.pos += 1;
                // An unmatched `)` would close our anchoring group and let the rest of the
                // pattern match unanchored: refuse it here, whatever the engine would say.
                let Some((saved, _)) = self.groups.pop() else {
                    return Err(err(at, "unmatched `)`"));
                };
                self.dotall = saved;
                self.emit(at, ")");
                self.after_quant = false;
            }
            '.' => {
                self.pos += 1;
                if self.dotall {
                    self.emit(at, ".");
                } else {
                    self.emit(at, DOT);
                }
                self.after_quant = false;
            }
            '*' | '+' | '?' => {
                self.pos += 1;
                if self.after_quant && c == '+' {
                    return Err(err(
                        at,
                        "possessive quantifier (`*+`, `++`, `?+`, `{n}+`) is not supported by the regex engine",
                    ));
                }
                if self.after_quant && c == '?' {
                    // Lazy quantifier: fine in Rust; what follows is not a quantifier.
                    self.emit(at, "?");
                    self.after_quant = false;
                } else {
                    let mut b = [0u8; 4];
                    let s: &str = c.encode_utf8(&mut b);
                    self.emit(at, s);
                    self.after_quant = true;
                }
            }
            '{' => {
                let mut j = self.pos + 1;
                let mut text = String::from("{");
                let mut digits = 0;
                while let Some(d) = self.src.get(j).filter(|d| d.is_ascii_digit()) {
                    text.push(*d);
                    digits += 1;
                    j += 1;
                }
                let mut ok = digits > 0;
                if ok && self.src.get(j) == Some(&',') {
                    text.push(',');
                    j += 1;
                    while let Some(d) = self.src.get(j).filter(|d| d.is_ascii_digit()) {
                        text.push(*d);
                        j += 1;
                    }
                }
                ok = ok && self.src.get(j) == Some(&'}');
                if !ok {
                    return Err(err(
                        at,
                        "`{` must start a repetition `{n}`, `{n,}` or `{n,m}` (write `\\{` for a literal brace)",
                    ));
                }
                text.push('}');
                self.pos = j + 1;
                if self.after_quant {
                    return Err(err(at, "a repetition cannot follow another quantifier"));
                }
                self.emit(at, &text);
                self.after_quant = true;
            }
            '}' | ']' => {
                self.pos += 1;
                self.emit_literal(at, c);
                self.after_quant = false;
            }
            _ => {
                self.pos += 1;
                let mut b = [0u8; 4];
                let s: &str = c.encode_utf8(&mut b);
                if c.is_control() || (c.is_whitespace() && c != ' ') {
                    self.emit_literal(at, c);
                } else {
                    self.emit(at, s);
                }
                self.after_quant = false;
            }
        }
        Ok(())
    }

    fn open_class(&mut self, at: usize) {
        self.class_depth += 1;
        self.emit(at, "[");
        if self.peek(0) == Some('^') {
            let p = self.pos;
            self.pos += 1;
            self.emit(p, "^");
        }
        self.class_start = true;
        self.prev_dash = false;
    }

    fn class_char(&mut self, c: char) -> Result<(), RegexError> {
        let at = self.pos;
        let start = self.class_start;
        self.class_start = false;
        let was_dash = self.prev_dash;
        self.prev_dash = false;
        match c {
            ']' if start => {
                self.pos += 1;
                self.emit_literal(at, ']');
            }
            ']' => {
                self.pos += 1;
                self.class_depth -= 1;
                self.emit(at, "]");
            }
            '[' => {
                self.pos += 1;
                self.open_class(at);
            }
            '\\' => self.escape()?,
            '&' if self.peek(1) == Some('&') => {
                self.pos += 2;
                self.emit(at, "&&");
            }
            '-' => {
                self.pos += 1;
                if was_dash {
                    // Java reads `x--y` as a range ending at `-`; Rust would read set difference.
                    self.emit(at, "\\-");
                } else {
                    self.emit(at, "-");
                    self.prev_dash = true;
                }
            }
            _ => {
                self.pos += 1;
                self.emit_literal(at, c);
            }
        }
        Ok(())
    }

    fn group(&mut self, at: usize) -> Result<(), RegexError> {
        // self.pos at '('.
        if self.peek(1) != Some('?') {
            self.pos += 1;
            self.groups.push((self.dotall, at));
            self.emit(at, "(");
            return Ok(());
        }
        if self.starts_with("(?=") {
            return Err(err(
                at,
                "look-ahead `(?=` is not supported by the regex engine",
            ));
        }
        if self.starts_with("(?!") {
            return Err(err(
                at,
                "negative look-ahead `(?!` is not supported by the regex engine",
            ));
        }
        if self.starts_with("(?<=") {
            return Err(err(
                at,
                "look-behind `(?<=` is not supported by the regex engine",
            ));
        }
        if self.starts_with("(?<!") {
            return Err(err(
                at,
                "negative look-behind `(?<!` is not supported by the regex engine",
            ));
        }
        if self.starts_with("(?>") {
            return Err(err(
                at,
                "atomic group `(?>` is not supported by the regex engine",
            ));
        }
        if self.starts_with("(?<") {
            // Java named group: letters then letters/digits.
            let mut j = self.pos + 3;
            let mut name = String::new();
            while let Some(c) = self.src.get(j).filter(|c| c.is_ascii_alphanumeric()) {
                name.push(*c);
                j += 1;
            }
            let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
            if !first_ok || self.src.get(j) != Some(&'>') {
                return Err(err(at, "invalid group name in `(?<name>`"));
            }
            self.pos = j + 1;
            self.groups.push((self.dotall, at));
            self.emit(at, &format!("(?P<{name}>"));
            return Ok(());
        }
        if self.starts_with("(?:") {
            self.pos += 3;
            self.groups.push((self.dotall, at));
            self.emit(at, "(?:");
            return Ok(());
        }
        // Inline flags: (?flags) or (?flags:...)
        let mut j = self.pos + 2;
        let mut kept = String::new();
        let mut negative = false;
        let mut dotall = self.dotall;
        let mut any = false;
        loop {
            match self.src.get(j).copied() {
                Some('-') if !negative => {
                    negative = true;
                    kept.push('-');
                }
                Some(f @ ('i' | 'm' | 's')) => {
                    kept.push(f);
                    any = true;
                    if f == 's' {
                        dotall = !negative;
                    }
                }
                // Java's UNICODE_CASE: Rust's case folding is already Unicode.
                Some('u') => any = true,
                Some(f @ ('d' | 'x' | 'U' | 'c')) => {
                    return Err(err(j, format!("inline flag `{f}` is not supported")));
                }
                Some(')') | Some(':') => break,
                Some(_) | None => {
                    return Err(err(at, "unknown group construct `(?`"));
                }
            }
            j += 1;
        }
        if !any {
            return Err(err(at, "empty inline flag group"));
        }
        let kept = kept.trim_end_matches('-').to_string();
        let colon = self.src.get(j) == Some(&':');
        self.pos = j + 1;
        if colon {
            self.groups.push((self.dotall, at));
            self.dotall = dotall;
            if kept.is_empty() {
                self.emit(at, "(?:");
            } else {
                self.emit(at, &format!("(?{kept}:"));
            }
        } else {
            self.dotall = dotall;
            if !kept.is_empty() {
                self.emit(at, &format!("(?{kept})"));
            }
        }
        Ok(())
    }

    /// Emits a class such as `0-9` in a form valid both outside and inside a class.
    fn emit_class(&mut self, at: usize, body: &str, negated: bool) {
        let s = if negated {
            format!("[^{body}]")
        } else {
            format!("[{body}]")
        };
        self.emit(at, &s);
    }

    fn hex_digits(&self, from: usize, n: usize) -> Option<u32> {
        let mut v: u32 = 0;
        for k in 0..n {
            let d = self.src.get(from + k)?.to_digit(16)?;
            v = v * 16 + d;
        }
        Some(v)
    }

    fn escape(&mut self) -> Result<(), RegexError> {
        let at = self.pos;
        let in_class = self.class_depth > 0;
        let Some(n) = self.peek(1) else {
            return Err(err(at, "trailing backslash"));
        };
        self.pos += 2;
        match n {
            'd' => self.emit_class(at, DIGIT, false),
            'D' => self.emit_class(at, DIGIT, true),
            'w' => self.emit_class(at, WORD, false),
            'W' => self.emit_class(at, WORD, true),
            's' => self.emit_class(at, SPACE, false),
            'S' => self.emit_class(at, SPACE, true),
            'h' => self.emit_class(at, HSPACE, false),
            'H' => self.emit_class(at, HSPACE, true),
            'v' => self.emit_class(at, VSPACE, false),
            'V' => self.emit_class(at, VSPACE, true),
            'b' | 'B' | 'A' | 'z' | 'R' if in_class => {
                return Err(err(
                    at,
                    format!("`\\{n}` is not allowed inside a character class"),
                ));
            }
            'b' => self.emit(at, "(?-u:\\b)"),
            'B' => self.emit(at, "(?-u:\\B)"),
            'A' => self.emit(at, "\\A"),
            'z' => self.emit(at, "\\z"),
            'R' => self.emit(at, "(?:\\r\\n|[\\n\\x0B\\x0C\\r\\x{85}\\x{2028}\\x{2029}])"),
            'Z' => {
                return Err(err(
                    at,
                    "`\\Z` is not supported by the regex engine (use `\\z` or `$`)",
                ));
            }
            'G' => return Err(err(at, "`\\G` is not supported by the regex engine")),
            'X' => {
                return Err(err(
                    at,
                    "`\\X` (grapheme cluster) is not supported by the regex engine",
                ))
            }
            'N' => return Err(err(at, "`\\N{name}` is not supported by the regex engine")),
            'k' => {
                return Err(err(
                    at,
                    "back-reference `\\k<name>` is not supported by the regex engine",
                ));
            }
            '1'..='9' => {
                return Err(err(
                    at,
                    format!("back-reference `\\{n}` is not supported by the regex engine"),
                ));
            }
            'E' => return Err(err(at, "`\\E` without a preceding `\\Q`")),
            'Q' => {
                // Quote until \E or end of pattern, as Java does.
                while let Some(c) = self.peek(0) {
                    if c == '\\' && self.peek(1) == Some('E') {
                        self.pos += 2;
                        break;
                    }
                    let p = self.pos;
                    self.pos += 1;
                    self.emit_literal(p, c);
                }
            }
            't' => self.emit_literal(at, '\t'),
            'n' => self.emit_literal(at, '\n'),
            'r' => self.emit_literal(at, '\r'),
            'f' => self.emit_literal(at, '\u{0C}'),
            'a' => self.emit_literal(at, '\u{07}'),
            'e' => self.emit_literal(at, '\u{1B}'),
            'c' => {
                let Some(x) = self.peek(0) else {
                    return Err(err(at, "`\\c` must be followed by a character"));
                };
                self.pos += 1;
                let code = (x as u32) ^ 64;
                match char::from_u32(code) {
                    Some(ch) => self.emit_literal(at, ch),
                    None => return Err(err(at, "invalid control escape `\\c`")),
                }
            }
            '0' => {
                // Java octal: \0n, \0nn, \0mnn (m <= 3).
                let d = |k: usize| self.peek(k).and_then(|c| c.to_digit(8));
                let (v, count) = match (d(0), d(1), d(2)) {
                    (Some(a), Some(b), Some(c)) if a <= 3 => (a * 64 + b * 8 + c, 3),
                    (Some(a), Some(b), _) => (a * 8 + b, 2),
                    (Some(a), _, _) => (a, 1),
                    _ => (0, 0),
                };
                self.pos += count;
                if count == 0 {
                    return Err(err(at, "illegal octal escape `\\0`"));
                }
                match char::from_u32(v) {
                    Some(ch) => self.emit_literal(at, ch),
                    None => return Err(err(at, "illegal octal escape")),
                }
            }
            'x' => {
                let code = if self.peek(0) == Some('{') {
                    let mut j = self.pos + 1;
                    let mut v: u32 = 0;
                    let mut digits = 0;
                    while let Some(d) = self.src.get(j).and_then(|c| c.to_digit(16)) {
                        v = v.saturating_mul(16).saturating_add(d);
                        digits += 1;
                        j += 1;
                    }
                    if digits == 0 || self.src.get(j) != Some(&'}') {
                        return Err(err(at, "illegal hexadecimal escape `\\x{...}`"));
                    }
                    self.pos = j + 1;
                    v
                } else {
                    let Some(v) = self.hex_digits(self.pos, 2) else {
                        return Err(err(at, "illegal hexadecimal escape `\\xhh`"));
                    };
                    self.pos += 2;
                    v
                };
                match char::from_u32(code) {
                    Some(ch) => self.emit_literal(at, ch),
                    None => {
                        return Err(err(at, "hexadecimal escape is not a Unicode scalar value"))
                    }
                }
            }
            'u' => {
                let Some(hi) = self.hex_digits(self.pos, 4) else {
                    return Err(err(at, "illegal Unicode escape `\\uhhhh`"));
                };
                self.pos += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    let lo = if self.peek(0) == Some('\\') && self.peek(1) == Some('u') {
                        self.hex_digits(self.pos + 2, 4)
                            .filter(|lo| (0xDC00..0xE000).contains(lo))
                    } else {
                        None
                    };
                    let Some(lo) = lo else {
                        return Err(err(at, "lone surrogate in `\\u` escape"));
                    };
                    self.pos += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                match char::from_u32(code) {
                    Some(ch) => self.emit_literal(at, ch),
                    None => return Err(err(at, "lone surrogate in `\\u` escape")),
                }
            }
            'p' | 'P' => self.property(at, n == 'P')?,
            c if c.is_ascii_alphabetic() => {
                return Err(err(at, format!("unknown escape `\\{c}`")));
            }
            c => self.emit_literal(at, c),
        }
        Ok(())
    }

    fn property(&mut self, at: usize, negated: bool) -> Result<(), RegexError> {
        let name: String = if self.peek(0) == Some('{') {
            let mut j = self.pos + 1;
            let mut name = String::new();
            while let Some(c) = self.src.get(j).copied() {
                if c == '}' {
                    break;
                }
                name.push(c);
                j += 1;
            }
            if self.src.get(j) != Some(&'}') || name.is_empty() {
                return Err(err(at, "unclosed `\\p{...}`"));
            }
            self.pos = j + 1;
            name
        } else {
            let Some(c) = self.peek(0).filter(|c| c.is_ascii_alphabetic()) else {
                return Err(err(at, "`\\p` must be followed by a property name"));
            };
            self.pos += 1;
            c.to_string()
        };
        let posix = match name.as_str() {
            "Lower" => Some("a-z"),
            "Upper" => Some("A-Z"),
            "ASCII" => Some("\\x00-\\x7F"),
            "Alpha" => Some("A-Za-z"),
            "Digit" => Some("0-9"),
            "Alnum" => Some("0-9A-Za-z"),
            "Punct" => Some("[:punct:]"),
            "Graph" => Some("[:graph:]"),
            "Print" => Some("[:print:]"),
            "Blank" => Some("\\x20\\t"),
            "Cntrl" => Some("\\x00-\\x1F\\x7F"),
            "XDigit" => Some("0-9A-Fa-f"),
            "Space" => Some(SPACE),
            _ => None,
        };
        if let Some(body) = posix {
            self.emit_class(at, body, negated);
            return Ok(());
        }
        let lower = name.to_ascii_lowercase();
        if name.starts_with("In") || lower.starts_with("block=") || lower.starts_with("blk=") {
            return Err(err(
                at,
                format!("Unicode block `\\p{{{name}}}` is not supported by the regex engine"),
            ));
        }
        if name.starts_with("java") {
            return Err(err(
                at,
                format!("`\\p{{{name}}}` is not supported by the regex engine"),
            ));
        }
        let rust_name = name.strip_prefix("Is").unwrap_or(&name);
        if rust_name.is_empty() || rust_name.contains(['{', '}', '\\']) {
            return Err(err(at, format!("invalid property `\\p{{{name}}}`")));
        }
        let s = format!("\\{}{{{}}}", if negated { 'P' } else { 'p' }, rust_name);
        self.emit(at, &s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        compile(p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .is_match(s)
    }

    fn e(p: &str) -> RegexError {
        compile(p).expect_err(p)
    }

    #[test]
    fn whole_match_like_string_matches() {
        assert!(m("abc", "abc"));
        assert!(!m("abc", "xabc"));
        assert!(!m("abc", "abcx"));
        assert!(m("a|b", "b"));
        assert!(!m("a|bc", "ab"));
        assert!(m(
            ".*/rest/api/2/issue/JRA.*",
            "/jira/rest/api/2/issue/JRA-1"
        ));
        assert!(!m(".*/rest/api/2/issue/JRA.*", "/rest/api/2/issue/KAN-1"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn ascii_shorthands() {
        assert!(m(r"\d+", "123"));
        assert!(!m(r"\d", "٣")); // Arabic-Indic digit: Unicode \d, not Java's
        assert!(!m(r"\w", "é"));
        assert!(m(r"\w+", "a_Z9"));
        assert!(m(r"\W", "é"));
        assert!(m(r"\D", "٣"));
        assert!(!m(r"\s", "\u{00A0}"));
        assert!(m(r"\s", "\u{0B}"));
        assert!(m(r"\S", "\u{00A0}"));
        assert!(m(r"[\d-]+", "12-3"));
        assert!(m(r"[\d-z]+", "1-z"));
        assert!(!m(r"[\w]", "é"));
        assert!(m(r"[^\d]", "a"));
        assert!(!m(r"[^\d]", "5"));
        assert!(m(r"[^\D]", "5"));
        assert!(m(r"[a\W]", "é"));
        assert!(m(r"a\b b", "a b"));
        assert!(m(r"a\bé", "aé")); // ASCII boundary: `é` is not a word character
        assert!(!m(r"a\Bé", "aé"));
    }

    #[test]
    fn dot_excludes_java_line_terminators() {
        assert!(!m(".", "\n"));
        assert!(!m(".", "\r"));
        assert!(!m(".", "\u{2028}"));
        assert!(!m(".", "\u{85}"));
        assert!(m("(?s).", "\r"));
        assert!(m("(?s:.)x", "\nx"));
        assert!(!m("(?s:.)(.)", "\n\n"));
        assert!(m("[.]", "."));
        assert!(!m("[.]", "a"));
    }

    #[test]
    fn unicode_elsewhere() {
        assert!(m(r"\p{L}+", "éa"));
        assert!(m(r"\p{IsLatin}+", "éa"));
        assert!(m(r"\p{Lu}", "É"));
        assert!(!m(r"\p{Alpha}", "é"));
        assert!(m(r"\p{Alpha}", "a"));
        assert!(m(r"\P{Alpha}", "é"));
        assert!(m(r"[\p{Digit}x]+", "1x"));
        assert!(m("(?i)é", "É"));
        assert!(m("é+", "éé"));
    }

    #[test]
    fn java_class_syntax() {
        assert!(m("[]a]+", "]a"));
        assert!(m("[^]a]", "b"));
        assert!(m("[a-z&&[^aeiou]]", "b"));
        assert!(!m("[a-z&&[^aeiou]]", "a"));
        // Java: nested class of ':', 'a', 'l', 'p', 'h' — not a POSIX class.
        assert!(m("[[:alpha:]]", ":"));
        assert!(!m("[[:alpha:]]", "b"));
        assert!(m("[~]", "~"));
        assert!(m("[+--]", ","));
        assert!(m("[&]", "&"));
        assert!(m("[A-Z]+", "ABC"));
    }

    #[test]
    fn escapes_translated() {
        assert!(m(r"\Qa.b\E", "a.b"));
        assert!(!m(r"\Qa.b\E", "axb"));
        assert!(m(r"\Q[(\E", "[("));
        assert!(m(r"\Qa.b", "a.b"));
        assert!(m(r"[\Q]-\E]+", "]-"));
        assert!(m(r"[\Q:alpha:\E]", ":"));
        assert!(m(r"\x41\u0042\x{43}", "ABC"));
        assert!(m(r"\uD83D\uDE00", "😀"));
        assert!(m(r"\011", "\t"));
        assert!(m(r"\0101", "A"));
        assert!(m(r"\e\cA", "\u{1B}\u{1}"));
        assert!(m(r"\/\-\.", "/-."));
        assert!(m(r"\t\n", "\t\n"));
        assert!(m(r"a\{1}", "a{1}"));
        assert!(m(r"a}", "a}"));
        assert!(m(r"a]", "a]"));
        assert!(m(r"(?<year>\d{4})-(?<m>\d\d)", "2018-01"));
        assert!(m(r"\h\v", " \n"));
        assert!(m(r"a\Rb", "a\r\nb"));
        assert!(m(r"a{2,}b{1,2}c{3}", "aaabbccc"));
        assert!(m(r"a*?b+?c??", "ab"));
    }

    #[test]
    fn unsupported_constructs_are_named_with_offsets() {
        let cases = [
            ("ab(?=c)", 2, "look-ahead `(?=`"),
            ("(?!c)", 0, "negative look-ahead `(?!`"),
            ("x(?<=c)", 1, "look-behind `(?<=`"),
            ("x(?<!c)", 1, "negative look-behind `(?<!`"),
            ("(a)\\1", 3, "back-reference `\\1`"),
            ("(?<n>a)\\k<n>", 7, "back-reference `\\k<name>`"),
            ("a*+", 2, "possessive"),
            ("a++", 2, "possessive"),
            ("a?+", 2, "possessive"),
            ("a{2}+", 4, "possessive"),
            ("(?>a)", 0, "atomic group"),
            ("a\\G", 1, "`\\G`"),
            ("a\\Z", 1, "`\\Z`"),
            ("\\p{InGreek}", 0, "Unicode block"),
            ("ab\\E", 2, "`\\E`"),
            ("(?x)a", 2, "inline flag `x`"),
            ("a{", 1, "repetition"),
            ("\\y", 0, "unknown escape"),
            ("\\uD800", 0, "lone surrogate"),
            ("[a", 2, "unclosed character class"),
            ("\\", 0, "trailing backslash"),
            ("a)|(.*", 1, "unmatched `)`"),
            ("(a", 0, "unclosed group"),
        ];
        for (p, off, msg) in cases {
            let er = e(p);
            assert_eq!(er.offset, off, "{p}: {er:?}");
            assert!(er.message.contains(msg), "{p}: {er:?}");
        }
    }

    #[test]
    fn engine_errors_map_back_to_source_offset() {
        // `\d` expands to 5 chars; the engine's error must still point at source offset 3.
        let er = e(r"\d+[z-a]");
        assert_eq!(er.offset, 4, "{er:?}");
        assert!(er.message.contains("invalid regex"), "{er:?}");
        assert_eq!(e("x(ab").offset, 1);
        let er = e(r"\w[z-a]");
        assert_eq!(er.offset, 3, "{er:?}");
    }

    #[test]
    fn too_large_is_an_error() {
        let er = e(r"(\w{100}){100}(\w{100}){100}");
        assert!(
            er.message.contains("too large") || er.message.contains("exceeds"),
            "{er:?}"
        );
    }

    #[test]
    fn required_prefix_is_the_literal_start() {
        for (pattern, want) in [
            (r"/rest/api/2/issue/P1-\d+", "/rest/api/2/issue/P1-"),
            (r"/rest/api/2/search", "/rest/api/2/search"),
            (r"/rest/.*", "/rest/"),
            (r"/rest/ab*c", "/rest/a"),
            (r"/rest/a{2}x", "/rest/aax"),
            (r"\Q/rest/a.b\E.*", "/rest/a.b"),
            (r"/rest/(api|agile)/.*", "/rest/a"),
            (r"/a|/b", "/"),
            (r"a|b", ""),
            (r".*", ""),
            (r"[/]rest", "/rest"),
            (r"(?i)/rest/x", "/"),
            (r"/rest/(?i)Issue", "/rest/"),
        ] {
            assert_eq!(
                String::from_utf8(required_prefix(pattern)).unwrap(),
                want,
                "{pattern}"
            );
        }
        assert!(required_prefix("(unclosed").is_empty());
    }

    /// The shortcut may only turn down what the regex turns down.
    #[test]
    fn required_prefix_never_rejects_a_match() {
        let patterns = [
            r"/rest/api/2/issue/P1-\d+",
            r"/rest/api/(2|latest)/issue/[A-Z]+-\d+",
            r"(?i)/REST/api/.*",
            r"/rest/(?i)api/x",
            r"/rest/a?b",
            r"/rest/\w*/x",
            r"/rest/api/2/issue/(?:P1|P2)-1",
            r"/rest/é.*",
            r"/rest/[ab]c",
            r"/rest/api/2/issue/P1-\d+|/rest/other",
        ];
        let paths = [
            "/rest/api/2/issue/P1-1",
            "/rest/api/latest/issue/ABC-12",
            "/REST/API/x",
            "/rest/API/X",
            "/rest/b",
            "/rest/ab",
            "/rest//x",
            "/rest/abc_1/x",
            "/rest/api/2/issue/P2-1",
            "/rest/éa",
            "/rest/bc",
            "/rest/other",
            "/rest/api/2/issue/P1-",
            "/rest",
            "",
        ];
        let mut matched = 0;
        for pattern in patterns {
            let re = compile(pattern).unwrap();
            let prefix = required_prefix(pattern);
            for path in paths {
                if re.is_match(path) {
                    matched += 1;
                    assert!(
                        path.as_bytes().starts_with(&prefix),
                        "{pattern} matches {path} but the prefix is {:?}",
                        String::from_utf8_lossy(&prefix)
                    );
                }
            }
        }
        assert!(matched >= 12, "the table must exercise matches: {matched}");
    }

    #[test]
    fn a_load_shares_equal_patterns_and_forgets_them_after() {
        let (a, b) =
            shared_compiles(|| (compile("/rest/.*").unwrap(), compile("/rest/.*").unwrap()));
        assert!(Arc::ptr_eq(&a, &b), "one compiled regex for equal patterns");
        assert!(a.is_match("/rest/x") && b.is_match("/rest/y") && !b.is_match("/other"));
        assert!(
            SHARED.with(|s| s.borrow().is_none()),
            "nothing outlives the load"
        );
        // Outside a load nothing is kept either.
        let _ = compile("/x");
        assert!(SHARED.with(|s| s.borrow().is_none()));
    }
}
