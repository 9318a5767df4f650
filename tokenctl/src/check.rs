//! `tokenctl check`: load a config with the filter's code, then lint what loads but is likely
//! wrong.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use serde_json::Value;
use tokengate_core::config::{AuthMethods, Config};
use tokengate_core::restriction::Restrictions;
use tokengate_core::{javare, time};

use crate::source::{self, Body, Source};
use crate::yaml::{Node, Pos};
use tokengate_core::token::{self, Shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Note,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

pub struct Finding {
    pub severity: Severity,
    pub pos: Pos,
    /// Extra location text (inside a JSON string value).
    pub note: Option<String>,
    pub message: String,
}

/// Checks every configuration in a file; prints findings; returns the exit status.
pub fn run(path: &str, now_ms: i64, quiet: bool) -> i32 {
    let sources = match source::read(path) {
        Ok(s) => s,
        Err(e) => {
            match e.pos {
                Some(p) => eprintln!("{path}:{}:{}: error: {}", p.line, p.column, e.message),
                None => eprintln!("{path}: error: {}", e.message),
            }
            return 2;
        }
    };
    let mut findings_total = 0;
    for src in &sources {
        let (findings, summary) = check_source(src, now_ms);
        for f in &findings {
            let extra = f
                .note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            println!(
                "{path}:{}:{}: {}: {}{extra}",
                f.pos.line,
                f.pos.column,
                f.severity.as_str(),
                f.message
            );
        }
        let errors = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let warnings = findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        findings_total += errors + warnings;
        if !quiet {
            let what = format!("{} (line {})", src.label, src.pos.line);
            if errors > 0 {
                println!("{path}: {what}: REJECTED — Envoy would refuse this configuration");
            } else if warnings > 0 {
                println!("{path}: {what}: loads, {warnings} warning(s); {summary}");
            } else {
                println!("{path}: {what}: OK; {summary}");
            }
        }
    }
    i32::from(findings_total > 0)
}

/// Load errors and lints of one configuration, and a one-line summary.
pub fn check_source(src: &Source, now_ms: i64) -> (Vec<Finding>, String) {
    let loaded = source::load(src);
    let tree = loaded.tree.as_ref();
    let mut out = Vec::new();
    let config = match loaded.result {
        Ok(c) => c,
        Err(e) => {
            let (pos, note) = source::error_position(src, tree, &e);
            let mut message = e.to_string();
            if let Some(hint) = yaml_hint(&e.message, tree, &e.field, src) {
                message.push_str("; ");
                message.push_str(&hint);
            }
            out.push(Finding {
                severity: Severity::Error,
                pos,
                note,
                message,
            });
            return (out, String::new());
        }
    };
    let at = |field: &str| source::position(src, tree, field);
    if let Some(t) = tree {
        let mut dups = Vec::new();
        t.duplicate_keys(&mut dups);
        for (pos, key) in dups {
            let note = match &src.body {
                Body::Json { at: Some(_), .. } => Some("in the JSON string".to_owned()),
                _ => None,
            };
            out.push(Finding {
                severity: Severity::Warning,
                pos,
                note,
                message: format!("key `{key}` appears twice in one map; only the last one counts"),
            });
        }
    }
    let mut push = |severity, field: &str, message: String| {
        let (pos, note) = at(field);
        out.push(Finding {
            severity,
            pos,
            note,
            message,
        });
    };
    for (i, p) in config.protected_paths.iter().enumerate() {
        if !p.ends_with('/') {
            push(
                Severity::Note,
                &format!("protected_paths[{i}]"),
                format!("`{p}` has no trailing `/`: it also protects paths such as `{p}ore` (harmless, but maybe not meant)"),
            );
        }
    }
    let raw_tokens = loaded
        .value
        .as_ref()
        .and_then(|v| v.get("tokens"))
        .and_then(Value::as_array);
    for (i, t) in config.tokens.iter().enumerate() {
        let base = format!("tokens[{i}]");
        let raw = raw_tokens.and_then(|a| a.get(i));
        if t.revoked {
            push(
                Severity::Note,
                &format!("{base}.revoked"),
                format!(
                    "token `{}` is revoked: it answers 401 \"token revoked\"",
                    t.id
                ),
            );
        } else if let Some(exp) = t.expires_ms.filter(|&e| e <= now_ms) {
            push(
                Severity::Warning,
                &format!("{base}.expires"),
                format!(
                    "token `{}` expired on {}: it answers 401 \"token expired\"; remove it or give it a new `expires`",
                    t.id,
                    short_time(exp)
                ),
            );
        }
        if t.user.is_none() && (t.run_as.anyone || !t.run_as.users.is_empty()) {
            push(
                Severity::Warning,
                &format!("{base}.run_as"),
                format!(
                    "token `{}` sets run_as but has no `user`: anyone holding it may act as {} under any Basic username; bind it to a user with `user:`",
                    t.id,
                    if t.run_as.anyone { "anyone".to_owned() } else { t.run_as.users.join(", ") }
                ),
            );
        }
        if t.user.is_none() && config.auth_methods == AuthMethods::Bearer {
            push(
                Severity::Warning,
                &base,
                format!(
                    "token `{}` has no `user` and auth_methods is bearer: it can never be used (a token without user works with Basic only); add `user:` or set auth_methods: both",
                    t.id
                ),
            );
        }
        if let Some(plain) = raw.and_then(|r| r.get("token")).and_then(Value::as_str) {
            push(
                Severity::Warning,
                &format!("{base}.token"),
                format!(
                    "token `{}` is stored in plaintext: store `sha256: {}` instead (what `tokenctl hash` prints) and consider secure_mode: true",
                    t.id,
                    tokengate_core::digest::to_hex(&t.digest)
                ),
            );
            match token::shape(plain) {
                Shape::BadChecksum => push(
                    Severity::Warning,
                    &format!("{base}.token"),
                    format!(
                        "token `{}` looks like a tokenctl token but its checksum is wrong: a typo?",
                        t.id
                    ),
                ),
                Shape::Malformed => push(
                    Severity::Note,
                    &format!("{base}.token"),
                    format!(
                        "token `{}` starts with `tg_` but is not in tokenctl's format",
                        t.id
                    ),
                ),
                Shape::Valid | Shape::Foreign => {}
            }
        }
        for (field, line) in limit_lines(raw, &base) {
            if let Some(why) = never_matches(&line, &config.protected_paths) {
                push(
                    Severity::Warning,
                    &field,
                    format!(
                        "token `{}`: restriction line `{line}` can never match: {why}",
                        t.id
                    ),
                );
            }
        }
    }
    (out, summary(&config))
}

fn summary(c: &Config) -> String {
    let methods = match c.auth_methods {
        AuthMethods::Basic => "basic",
        AuthMethods::Bearer => "bearer",
        AuthMethods::Both => "both",
    };
    format!(
        "{} token(s), auth_methods {methods}, secure_mode {}",
        c.tokens.len(),
        if c.secure_mode { "on" } else { "off" }
    )
}

fn short_time(ms: i64) -> String {
    time::format_rfc3339_ms(ms).replace(".000Z", "Z")
}

/// A hint for a type error caused by YAML reading an unquoted word as a boolean or number.
fn yaml_hint(message: &str, tree: Option<&Node>, field: &str, src: &Source) -> Option<String> {
    if !matches!(src.body, Body::Tree(_)) || !message.contains("must be a string") {
        return None;
    }
    let (node, exact) = tree?.locate(field);
    let text = node.as_str()?;
    (exact && !node.is_quoted() && crate::yaml::plain_is_not_string(text)).then(|| {
        format!(
            "YAML reads the unquoted `{text}` as a boolean, number or null: quote it (\"{text}\")"
        )
    })
}

/// The restriction lines of a raw token entry, with the field each one is reported at.
fn limit_lines(raw: Option<&Value>, base: &str) -> Vec<(String, String)> {
    match raw.and_then(|r| r.get("limit_to")) {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(j, v)| Some((format!("{base}.limit_to[{j}]"), v.as_str()?.to_owned())))
            .filter(|(_, l)| !l.trim().is_empty())
            .collect(),
        Some(Value::String(s)) => s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| (format!("{base}.limit_to"), l.to_owned()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Why a restriction line can never allow a request, if it provably cannot.
/// The line is read by the filter's own parser; one that does not compile is the loader's
/// business, not a lint's.
pub fn never_matches(line: &str, protected: &[String]) -> Option<String> {
    let compiled = Restrictions::compile(&[line.to_owned()]).ok()?;
    let info = compiled.line_infos().next()?;
    if info.has_json_conditions {
        if let Some(m) = &info.methods {
            if !m.is_empty() && m.iter().all(|m| *m == "GET" || *m == "HEAD") {
                return Some(format!(
                    "it needs a JSON body (JsonData) but only admits {}, which carry none",
                    m.join(",")
                ));
            }
        }
    }
    let translated = javare::translate_pattern(info.url_pattern).ok()?;
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(&translated)
        .ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() {
        return Some("its URL pattern matches no path at all".into());
    }
    let fits = lits.iter().any(|lit| {
        let l = lit.as_bytes();
        protected.iter().any(|p| {
            let p = p.as_bytes();
            l.starts_with(p) || (!lit.is_exact() && p.starts_with(l))
        })
    });
    if fits {
        return None;
    }
    let shown: Vec<String> = lits
        .iter()
        .take(3)
        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
        .collect();
    let mut why = format!(
        "its URL pattern only matches paths starting with `{}`, which are not under protected_paths ({}); the pattern must match the whole path, e.g. `.*/rest/api/2/issue/.*`",
        shown.join("` or `"),
        protected.join(", ")
    );
    if shown.iter().any(|s| !s.starts_with('/')) {
        why.push_str(" (every path starts with `/`)");
    }
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prot() -> Vec<String> {
        vec!["/rest/".to_owned()]
    }

    #[test]
    fn never_matching_lines() {
        assert!(never_matches("rest/api/.*", &prot()).is_some());
        assert!(never_matches("/api/2/issue/.*", &prot()).is_some());
        assert!(never_matches("[get].*/rest/api/2/filter[JsonData::a==b]", &prot()).is_some());
        assert!(never_matches(".*/rest/api/2/issue/JRA.*", &prot()).is_none());
        assert!(never_matches("/rest/api/.*", &prot()).is_none());
        assert!(never_matches("/re.*", &prot()).is_none());
        assert!(never_matches("[post].*/rest/api/2/filter[JsonData::a==b]", &prot()).is_none());
        assert!(never_matches("(/rest|/jira/rest)/api/.*", &prot()).is_none());
        assert!(never_matches("/jira/rest/api/.*", &prot()).is_some());
    }
}
