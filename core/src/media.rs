//! Content-Type and Content-Encoding rules for JSON bodies (SPEC §8).
//!
//! The filter reads a body that the app will parse too; both must agree on what it is. So only
//! the one spelling Jira's JSON binding reads as plain UTF-8 JSON is accepted, and nothing
//! compressed (the filter would see compressed bytes the app inflates).

/// Optional whitespace around `;` (RFC 9110 OWS).
fn ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// `Ok` when the request's Content-Type is `application/json` (optionally `charset=utf-8`).
/// `value` is the raw header value as Envoy hands it over (repeated headers comma-joined, so
/// a comma means two Content-Types and is refused).
pub fn check_content_type(value: Option<&[u8]>) -> Result<(), &'static str> {
    const WANT: &str = "content type must be application/json";
    let Some(raw) = value else {
        return Err(WANT);
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err(WANT);
    };
    if text.contains(',') {
        return Err("exactly one content type is allowed");
    }
    let mut parts = text.split(';');
    let media = ows(parts.next().unwrap_or(""));
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(WANT);
    }
    if let Some(param) = parts.next() {
        let param = ows(param);
        let Some((name, value)) = param.split_once('=') else {
            return Err("the only content type parameter allowed is charset=utf-8");
        };
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !name.eq_ignore_ascii_case("charset") || !value.eq_ignore_ascii_case("utf-8") {
            return Err("the only content type parameter allowed is charset=utf-8");
        }
    }
    if parts.next().is_some() {
        return Err("the only content type parameter allowed is charset=utf-8");
    }
    Ok(())
}

/// True when `value` (a Content-Type as Envoy hands it over) names a form body, whose
/// parameters an app server merges with the query's: Tomcat's `getParameterValues` reads an
/// `application/x-www-form-urlencoded` body (and `multipart/form-data` parts where the app
/// enables it). Compared case-insensitively, every comma-joined value, and a value that is not
/// UTF-8 counts as a form: the filter cannot tell what the app will make of it.
pub fn is_form(value: Option<&[u8]>) -> bool {
    let Some(raw) = value else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return true;
    };
    text.split(',').any(|v| {
        let media = ows(v.split(';').next().unwrap_or(""));
        media.eq_ignore_ascii_case("application/x-www-form-urlencoded")
            || media.eq_ignore_ascii_case("multipart/form-data")
    })
}

/// `Ok` when there is no Content-Encoding or it is `identity`.
pub fn check_content_encoding(value: Option<&[u8]>) -> Result<(), &'static str> {
    match value {
        None => Ok(()),
        Some(raw) => match std::str::from_utf8(raw) {
            Ok(v) if ows(v).eq_ignore_ascii_case("identity") => Ok(()),
            _ => Err("content encoding is not supported (only identity)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> bool {
        check_content_type(Some(v.as_bytes())).is_ok()
    }

    #[test]
    fn content_type_accepted() {
        for v in [
            "application/json",
            "Application/JSON",
            " application/json ",
            "application/json;charset=utf-8",
            "application/json; charset=UTF-8",
            "application/json ;charset=utf-8",
            "application/json ; CHARSET=Utf-8 ",
            "application/json;charset=\"utf-8\"",
            "application/json;\tcharset=utf-8",
        ] {
            assert!(ct(v), "{v:?}");
        }
    }

    #[test]
    fn content_type_refused() {
        assert!(check_content_type(None).is_err());
        assert!(check_content_type(Some(b"application/json\xff")).is_err());
        for v in [
            "",
            "text/plain",
            "application/json-patch+json",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json;charset=latin1",
            "application/json;charset=utf-16",
            "application/json;charset=utf8",
            "application/json;charset=utf-8;x=1",
            "application/json;boundary=x",
            "application/json;",
            "application/json;charset",
            "application/json;charset = utf-8",
            "application/json;charset=\"utf-8",
            "application/json,text/plain",
            "application/json, application/json",
            "application / json",
        ] {
            assert!(!ct(v), "{v:?}");
        }
    }

    #[test]
    fn content_encoding() {
        assert!(check_content_encoding(None).is_ok());
        assert!(check_content_encoding(Some(b"identity")).is_ok());
        assert!(check_content_encoding(Some(b" IDENTITY ")).is_ok());
        for v in [
            "gzip",
            "deflate",
            "br",
            "identity, gzip",
            "gzip,identity",
            "",
            "x",
        ] {
            assert!(check_content_encoding(Some(v.as_bytes())).is_err(), "{v:?}");
        }
    }

    #[test]
    fn form_bodies() {
        assert!(!is_form(None));
        assert!(is_form(Some(b"\xff")));
        for v in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded;charset=UTF-8",
            " application/x-www-form-urlencoded ; charset=utf-8",
            "multipart/form-data; boundary=x",
            "application/json, application/x-www-form-urlencoded",
        ] {
            assert!(is_form(Some(v.as_bytes())), "{v:?}");
        }
        for v in [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencodedx",
            "",
        ] {
            assert!(!is_form(Some(v.as_bytes())), "{v:?}");
        }
    }
}
