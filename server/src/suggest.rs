//! Suggested restriction lines from real use (SPEC §19): the narrowest lines that cover every
//! call a token made, so an admin can go from "a token for everything" to "exactly what it
//! does".
//!
//! Each path is split into segments; a segment that is an issue key (`JRA-123`), a date or a
//! numeric id becomes a pattern (`JRA-[0-9]+`, `[0-9]{4}-[0-9]{2}-[0-9]{2}`, `[0-9]+`; a short
//! number that never varies, such as the `2` of `/rest/api/2`, stays literal), every other
//! segment stays literal (escaped). So a suggested line admits no path the token never called
//! except through such a generalized segment. Calls whose paths generalize alike become one
//! line with the methods seen, in a fixed order. Every line is checked by the core's grammar.

use std::collections::{BTreeMap, BTreeSet};

use tokengate_core::restriction::Restrictions;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub line: String,
    pub methods: Vec<String>,
    pub calls: i64,
    /// A few of the paths it covers, for the admin to review.
    pub examples: Vec<String>,
}

fn is_issue_key(s: &str) -> Option<&str> {
    let (project, number) = s.split_once('-')?;
    let mut p = project.bytes();
    let first_ok = p.next().is_some_and(|c| c.is_ascii_uppercase());
    (first_ok
        && p.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
        && !number.is_empty()
        && number.bytes().all(|c| c.is_ascii_digit()))
    .then_some(project)
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Escapes a literal for the line grammar (Java regex; the core translates it).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()[]{}|^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    /// Already a pattern (issue key, date) or an escaped literal.
    Fixed(String),
    /// A number: an id when it varies or is long, else (an API version) literal.
    Num(String),
}

fn segments(path: &str) -> Vec<Seg> {
    path.split('/')
        .map(|seg| {
            if let Some(project) = is_issue_key(seg) {
                Seg::Fixed(format!("{}-[0-9]+", escape(project)))
            } else if !seg.is_empty() && seg.bytes().all(|c| c.is_ascii_digit()) {
                Seg::Num(seg.to_owned())
            } else if is_date(seg) {
                Seg::Fixed("[0-9]{4}-[0-9]{2}-[0-9]{2}".to_owned())
            } else {
                Seg::Fixed(escape(seg))
            }
        })
        .collect()
}

/// Numbers of three digits or more are ids; shorter ones (`/rest/api/2`) only when the calls
/// show more than one value in that place.
const ID_DIGITS: usize = 3;

/// The patterns for a set of paths: paths of one shape (same segments once numbers are set
/// aside) share a pattern; each number position becomes `[0-9]+` or stays literal.
fn patterns<'a>(paths: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    // Shape (fixed segments; None where a number stands) -> the paths of that shape.
    type Shape = Vec<Option<String>>;
    let mut shapes: BTreeMap<Shape, Vec<(String, Vec<Seg>)>> = BTreeMap::new();
    for p in paths {
        let segs = segments(p);
        let shape = segs
            .iter()
            .map(|s| match s {
                Seg::Fixed(f) => Some(f.clone()),
                Seg::Num(_) => None,
            })
            .collect();
        shapes.entry(shape).or_default().push((p.to_owned(), segs));
    }
    let mut out = BTreeMap::new();
    for (shape, members) in shapes {
        let parts: Vec<String> = shape
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Some(f) => f.clone(),
                None => {
                    let values: BTreeSet<&str> = members
                        .iter()
                        .filter_map(|(_, segs)| match segs.get(i) {
                            Some(Seg::Num(v)) => Some(v.as_str()),
                            _ => None,
                        })
                        .collect();
                    let id = values.len() > 1 || values.iter().any(|v| v.len() >= ID_DIGITS);
                    match (id, values.iter().next()) {
                        (false, Some(v)) => (*v).to_owned(),
                        _ => "[0-9]+".to_owned(),
                    }
                }
            })
            .collect();
        let pattern = parts.join("/");
        for (p, _) in members {
            out.insert(p, pattern.clone());
        }
    }
    out
}

const METHOD_ORDER: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn method_rank(m: &str) -> usize {
    METHOD_ORDER
        .iter()
        .position(|x| *x == m)
        .unwrap_or(METHOD_ORDER.len())
}

/// `calls`: (method, path, count) of the allowed calls in the window.
pub fn suggest(calls: &[(String, String, i64)]) -> Vec<Suggestion> {
    struct Acc {
        methods: BTreeSet<String>,
        calls: i64,
        examples: BTreeSet<String>,
    }
    let pattern_of = patterns(calls.iter().map(|c| c.1.as_str()));
    let mut by_pattern: BTreeMap<String, Acc> = BTreeMap::new();
    for (method, path, n) in calls {
        let pattern = pattern_of
            .get(path)
            .cloned()
            .unwrap_or_else(|| escape(path));
        let acc = by_pattern.entry(pattern).or_insert_with(|| Acc {
            methods: BTreeSet::new(),
            calls: 0,
            examples: BTreeSet::new(),
        });
        acc.methods.insert(method.to_ascii_uppercase());
        acc.calls += n;
        if acc.examples.len() < 3 {
            acc.examples.insert(path.clone());
        }
    }
    let mut out: Vec<Suggestion> = by_pattern
        .into_iter()
        .filter_map(|(pattern, acc)| {
            let mut methods: Vec<String> = acc.methods.into_iter().collect();
            methods.sort_by_key(|m| (method_rank(m), m.clone()));
            let line = format!("[{}]{pattern}", methods.join(","));
            // Only lines the filter accepts are offered.
            Restrictions::compile(std::slice::from_ref(&line)).ok()?;
            Some(Suggestion {
                line,
                methods,
                calls: acc.calls,
                examples: acc.examples.into_iter().collect(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.line.cmp(&b.line)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern for one path on its own.
    fn generalize(path: &str) -> String {
        patterns(std::iter::once(path))
            .into_values()
            .next()
            .unwrap_or_default()
    }

    fn c(m: &str, p: &str, n: i64) -> (String, String, i64) {
        (m.into(), p.into(), n)
    }

    #[test]
    fn keys_numbers_and_dates_generalize_and_the_rest_stays_literal() {
        assert_eq!(
            generalize("/rest/api/2/issue/JRA-123/comment"),
            "/rest/api/2/issue/JRA-[0-9]+/comment"
        );
        assert_eq!(
            generalize("/rest/api/2/filter/10042"),
            "/rest/api/2/filter/[0-9]+"
        );
        assert_eq!(
            generalize("/rest/tempo/1.0/worklog/2027-01-04"),
            "/rest/tempo/1\\.0/worklog/[0-9]{4}-[0-9]{2}-[0-9]{2}"
        );
        assert_eq!(generalize("/rest/api/2/myself"), "/rest/api/2/myself");
        assert_eq!(
            generalize("/rest/api/2/issue/jra-1"),
            "/rest/api/2/issue/jra-1"
        );
        // Short numbers become ids only when they vary.
        let p = patterns(["/rest/agile/1.0/board/12", "/rest/agile/1.0/board/13"].into_iter());
        assert_eq!(
            p["/rest/agile/1.0/board/12"],
            "/rest/agile/1\\.0/board/[0-9]+"
        );
    }

    #[test]
    fn calls_become_lines_with_their_methods() {
        let s = suggest(&[
            c("GET", "/rest/api/2/issue/JRA-1", 5),
            c("GET", "/rest/api/2/issue/JRA-22", 3),
            c("PUT", "/rest/api/2/issue/JRA-22", 1),
            c("POST", "/rest/api/2/issue/JRA-7/comment", 2),
            c("GET", "/rest/api/2/myself", 1),
        ]);
        let lines: Vec<(&str, i64)> = s.iter().map(|x| (x.line.as_str(), x.calls)).collect();
        assert_eq!(
            lines,
            vec![
                ("[GET,PUT]/rest/api/2/issue/JRA-[0-9]+", 9),
                ("[POST]/rest/api/2/issue/JRA-[0-9]+/comment", 2),
                ("[GET]/rest/api/2/myself", 1),
            ]
        );
        let r = Restrictions::compile(&s.iter().map(|x| x.line.clone()).collect::<Vec<_>>());
        assert!(r.is_ok());
    }
}
