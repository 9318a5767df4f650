//! Reading audit lines back (SPEC §11): the token service's receiver takes each NDJSON line
//! the filter wrote and checks it field by field. Exactly the §11 fields, plus the optional
//! §19 ones (`shadow_rule`, `secret`); anything else, or a missing field, refuses the line.

use serde_json::{Map, Value};

use crate::time;

/// The SPEC §11 fields, in the order the filter writes them.
pub const FIELDS: [&str; 15] = [
    "ts",
    "request_id",
    "token_id",
    "token_name",
    "user",
    "acting_as",
    "client_ip",
    "method",
    "path",
    "query",
    "decision",
    "reason",
    "rule",
    "status",
    "duration_ms",
];
const OPTIONAL: [&str; 2] = ["shadow_rule", "secret"];

/// One audit line, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub ts_ms: i64,
    pub request_id: String,
    pub token_id: Option<String>,
    pub token_name: Option<String>,
    pub user: Option<String>,
    pub acting_as: Option<String>,
    pub client_ip: Option<String>,
    pub method: String,
    pub path: String,
    pub query: Vec<String>,
    pub allowed: bool,
    pub reason: String,
    pub rule: Option<i64>,
    pub status: Option<i64>,
    pub duration_ms: i64,
    /// The §19 fields, kept as written (a JSON object text), when present.
    pub extra: Option<String>,
}

fn text(m: &Map<String, Value>, k: &str) -> Result<String, String> {
    match m.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("`{k}` must be a string")),
    }
}

fn opt_text(m: &Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match m.get(k) {
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        _ => Err(format!("`{k}` must be a string or null")),
    }
}

fn opt_int(m: &Map<String, Value>, k: &str) -> Result<Option<i64>, String> {
    match m.get(k) {
        Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("`{k}` must be an integer or null")),
        None => Err(format!("`{k}` is missing")),
    }
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str) -> Result<Record, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(m) = v else {
        return Err("not a JSON object".into());
    };
    if let Some(k) = m
        .keys()
        .find(|k| !FIELDS.contains(&k.as_str()) && !OPTIONAL.contains(&k.as_str()))
    {
        return Err(format!("unknown field `{k}`"));
    }
    if let Some(k) = FIELDS.iter().find(|k| !m.contains_key(**k)) {
        return Err(format!("`{k}` is missing"));
    }
    let ts = text(&m, "ts")?;
    let ts_ms = time::parse_rfc3339(&ts).ok_or_else(|| format!("`ts` `{ts}` is not RFC 3339"))?;
    let decision = text(&m, "decision")?;
    let allowed = match decision.as_str() {
        "allow" => true,
        "deny" => false,
        d => return Err(format!("`decision` `{d}` is neither allow nor deny")),
    };
    let reason = text(&m, "reason")?;
    if !crate::policy::Reason::is_audit_reason(&reason) {
        return Err(format!("`reason` `{reason}` is not one of SPEC §11's"));
    }
    let query = match m.get("query") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("`query` must be a list of strings")?,
        _ => return Err("`query` must be a list of strings".into()),
    };
    let duration_ms = opt_int(&m, "duration_ms")?.ok_or("`duration_ms` must be an integer")?;
    let mut extra = Map::new();
    for k in OPTIONAL {
        if let Some(v) = m.get(k) {
            extra.insert(k.to_owned(), v.clone());
        }
    }
    Ok(Record {
        ts_ms,
        request_id: text(&m, "request_id")?,
        token_id: opt_text(&m, "token_id")?,
        token_name: opt_text(&m, "token_name")?,
        user: opt_text(&m, "user")?,
        acting_as: opt_text(&m, "acting_as")?,
        client_ip: opt_text(&m, "client_ip")?,
        method: text(&m, "method")?,
        path: text(&m, "path")?,
        query,
        allowed,
        reason,
        rule: opt_int(&m, "rule")?,
        status: opt_int(&m, "status")?,
        duration_ms,
        extra: (!extra.is_empty()).then(|| Value::Object(extra).to_string()),
    })
}

/// The line as the filter wrote it: §11 fields in their order, then the §19 ones.
#[derive(serde::Serialize)]
struct Line<'a> {
    ts: String,
    request_id: &'a str,
    token_id: Option<&'a str>,
    token_name: Option<&'a str>,
    user: Option<&'a str>,
    acting_as: Option<&'a str>,
    client_ip: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    query: &'a [String],
    decision: &'a str,
    reason: &'a str,
    rule: Option<i64>,
    status: Option<i64>,
    duration_ms: i64,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl Record {
    /// The line again, as JSON text with the §11 fields in their order.
    pub fn to_line(&self) -> String {
        let extra = match self.extra.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(m))) => m,
            _ => Map::new(),
        };
        let line = Line {
            ts: time::format_rfc3339_ms(self.ts_ms),
            request_id: &self.request_id,
            token_id: self.token_id.as_deref(),
            token_name: self.token_name.as_deref(),
            user: self.user.as_deref(),
            acting_as: self.acting_as.as_deref(),
            client_ip: self.client_ip.as_deref(),
            method: &self.method,
            path: &self.path,
            query: &self.query,
            decision: if self.allowed { "allow" } else { "deny" },
            reason: &self.reason,
            rule: self.rule,
            status: self.status,
            duration_ms: self.duration_ms,
            extra,
        };
        serde_json::to_string(&line).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Entry;

    fn line() -> String {
        let e = Entry {
            ts_ms: 1_764_000_000_123,
            request_id: Some("r-1"),
            token_id: Some("ci"),
            token_name: Some("CI"),
            user: Some("bob"),
            acting_as: Some("bob"),
            client_ip: Some(std::net::IpAddr::from([10, 0, 0, 1])),
            method: "GET",
            target: "/rest/api/2/issue/X-1?expand=a",
            allowed: true,
            reason: "ok",
            rule: Some(2),
            secret: None,
            shadow_rule: None,
        };
        e.begin().finish(Some(200), 3)
    }

    #[test]
    fn the_filters_own_lines_read_back_exactly() {
        let l = line();
        let r = parse_line(l.trim_end()).unwrap();
        assert_eq!(r.token_id.as_deref(), Some("ci"));
        assert_eq!(r.query, vec!["expand".to_string()]);
        assert_eq!((r.allowed, r.rule, r.status), (true, Some(2), Some(200)));
        assert_eq!(
            r.to_line(),
            l.trim_end(),
            "the same bytes, field order included"
        );
    }

    #[test]
    fn unknown_missing_and_mistyped_fields_are_refused() {
        let l = line();
        let mut v: Value = serde_json::from_str(l.trim_end()).unwrap();
        v["token"] = Value::String("tg_secret".into());
        assert!(parse_line(&v.to_string())
            .unwrap_err()
            .contains("unknown field `token`"));
        let mut v: Value = serde_json::from_str(l.trim_end()).unwrap();
        v.as_object_mut().unwrap().remove("reason");
        assert!(parse_line(&v.to_string())
            .unwrap_err()
            .contains("`reason` is missing"));
        let mut v: Value = serde_json::from_str(l.trim_end()).unwrap();
        v["decision"] = Value::String("maybe".into());
        assert!(parse_line(&v.to_string()).is_err());
        let mut v: Value = serde_json::from_str(l.trim_end()).unwrap();
        v["rule"] = Value::String("1".into());
        assert!(parse_line(&v.to_string()).is_err());
        assert!(parse_line("[1]").is_err());
        assert!(parse_line("{").is_err());
    }
}
