//! HTML output for the console: one escaping function and the page frame.
//!
//! Pages are written with `format!` around [`esc`]: every value that comes from the database,
//! the request or the core goes through it (text and attribute values alike, quotes
//! included), and nothing else is interpolated. This keeps the console free of a template
//! dependency and its compile time; `tests` below and the browser tests (a token named with
//! markup) check it.

use std::fmt::Write;

use tokengate_core::time;

/// Escapes text for HTML text and double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string or path component.
pub fn url_enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A time for tables: `2026-12-02 06:23 UTC`.
pub fn when(ms: Option<i64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) => {
            let s = time::format_rfc3339_ms(ms);
            // 2026-12-02T06:23:41.000Z
            match (s.get(0..10), s.get(11..16)) {
                (Some(d), Some(t)) => format!("{d} {t}"),
                _ => s,
            }
        }
    }
}

/// `<time>` with the full RFC 3339 value as its machine-readable form.
pub fn time_el(ms: Option<i64>) -> String {
    match ms {
        None => "<span class=\"muted\">—</span>".into(),
        Some(m) => format!(
            "<time datetime=\"{}\">{}</time>",
            esc(&time::format_rfc3339_ms(m)),
            esc(&when(Some(m)))
        ),
    }
}

pub struct Frame<'a> {
    pub title: &'a str,
    /// The signed-in admin (None: the sign-in page).
    pub admin: Option<&'a str>,
    pub csrf: Option<&'a str>,
    /// Which nav entry is current.
    pub nav: &'a str,
}

const NAV: [(&str, &str, &str); 5] = [
    ("tokens", "/tokens", "Tokens"),
    ("audit", "/audit-log", "Audit log"),
    ("fleet", "/fleet", "Fleet"),
    ("settings", "/settings", "Settings"),
    ("admin-log", "/admin-log", "Admin log"),
];

pub const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The whole page around `body` (already HTML).
pub fn page(f: &Frame<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · tokengate</title>\
         <link rel=\"stylesheet\" href=\"/static/console.css?v={ASSET_VERSION}\">",
        esc(f.title)
    );
    if let Some(c) = f.csrf {
        let _ = write!(out, "<meta name=\"csrf-token\" content=\"{}\">", esc(c));
    }
    let _ = write!(
        out,
        "<script type=\"module\" src=\"/static/console.js?v={ASSET_VERSION}\"></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><a class=\"brand\" href=\"/tokens\">tokengate</a>"
    );
    if let (Some(admin), Some(csrf)) = (f.admin, f.csrf) {
        out.push_str("<nav aria-label=\"Main\"><ul>");
        for (key, href, label) in NAV {
            let cur = if key == f.nav {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<li><a href=\"{href}\"{cur}>{label}</a></li>");
        }
        let _ = write!(
            out,
            "</ul></nav><form class=\"signout\" method=\"post\" action=\"/signout\">\
             <span class=\"who\">Signed in as <strong>{}</strong></span>\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" class=\"link\">Sign out</button></form>",
            esc(admin),
            esc(csrf)
        );
    }
    let _ = writeln!(
        out,
        "</header><main id=\"main\" tabindex=\"-1\">{body}</main></body></html>"
    );
    out
}

/// A hidden CSRF field for a form.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A status lozenge.
pub fn lozenge(kind: &str, text: &str) -> String {
    format!(
        "<span class=\"lozenge lozenge-{}\">{}</span>",
        esc(kind),
        esc(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<b a=\"1\" b='2'>&</b>"),
            "&lt;b a=&quot;1&quot; b=&#39;2&#39;&gt;&amp;&lt;/b&gt;"
        );
        assert_eq!(url_enc("a b/é?&"), "a%20b%2F%C3%A9%3F%26");
    }

    #[test]
    fn frame_has_no_inline_script() {
        let p = page(
            &Frame {
                title: "<x>",
                admin: Some("a\"b"),
                csrf: Some("c"),
                nav: "tokens",
            },
            "",
        );
        assert!(p.contains("&lt;x&gt;") && p.contains("a&quot;b"));
        assert!(!p.contains("<script>"));
    }
}
