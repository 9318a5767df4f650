//! The plugin configuration (SPEC §3) the service pushes: settings + every token, digests
//! only, checked by the filter's own core before anything is stored or sent.

use serde_json::{json, Map, Value};
use tokengate_core::config::{self, ConfigError};
use tokengate_core::time;

use crate::store::TokenRow;

/// The cluster Envoy's bootstrap defines for the service's `--listen` address; audit batches
/// go there.
pub const AUDIT_CLUSTER: &str = "tokengate_server";

/// An API error with the filter's own message and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub field: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl Invalid {
    pub fn new(field: &str, message: impl Into<String>) -> Invalid {
        Invalid {
            message: message.into(),
            field: Some(field.to_owned()),
            line: None,
            column: None,
        }
    }

    /// The core's error, with `tokens[0].` taken off the field when one token was checked.
    fn from_core(e: ConfigError, token_prefix: Option<&str>) -> Invalid {
        let field = match token_prefix {
            Some(p) => e.field.strip_prefix(p).unwrap_or(&e.field).to_owned(),
            None => e.field.clone(),
        };
        Invalid {
            message: e.message,
            field: Some(field),
            line: e.line,
            column: e.column,
        }
    }
}

/// A token as the plugin configuration holds it.
pub fn token_entry(t: &TokenRow) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(t.id));
    m.insert("name".into(), json!(t.name));
    if let Some(u) = &t.user {
        m.insert("user".into(), json!(u));
    }
    m.insert("sha256".into(), json!(t.sha256));
    if let Some(e) = t.expires_at {
        m.insert("expires".into(), json!(rfc3339_s(e)));
    }
    if t.revoked_at.is_some() {
        m.insert("revoked".into(), json!(true));
    }
    if !t.ips.is_empty() {
        m.insert("ips".into(), json!(t.ips));
    }
    if !t.run_as.is_empty() {
        m.insert("run_as".into(), json!(t.run_as));
    }
    if !t.limit_to.is_empty() {
        m.insert("limit_to".into(), json!(t.limit_to));
    }
    if !t.shadow_limit_to.is_empty() {
        m.insert("shadow_limit_to".into(), json!(t.shadow_limit_to));
    }
    if let Some(p) = &t.previous {
        m.insert(
            "previous".into(),
            json!({"sha256": p.sha256, "until": rfc3339_s(p.until)}),
        );
    }
    Value::Object(m)
}

/// Expiry in the config: whole seconds are written without milliseconds.
pub fn rfc3339_s(ms: i64) -> String {
    let s = time::format_rfc3339_ms(ms);
    if ms % 1000 == 0 {
        // `2027-01-01T00:00:00.000Z` -> `2027-01-01T00:00:00Z`
        if let Some(stripped) = s.strip_suffix(".000Z") {
            return format!("{stripped}Z");
        }
    }
    s
}

/// The settings the service adds: audit batches to the service itself, with its credential.
pub fn with_service_audit(settings: &Value, audit_authorization: &str) -> Value {
    let mut out = settings.as_object().cloned().unwrap_or_default();
    let mut audit = out
        .get("audit")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    audit
        .entry("cluster")
        .or_insert_with(|| json!(AUDIT_CLUSTER));
    audit.entry("path").or_insert_with(|| json!("/audit"));
    audit.insert("authorization".into(), json!(audit_authorization));
    out.insert("audit".into(), Value::Object(audit));
    Value::Object(out)
}

/// Checks settings alone (`PUT /api/v1/settings`): an object, no `tokens`, no
/// `audit.authorization`, and the core loads it.
pub fn check_settings(settings: &Value) -> Result<(), Invalid> {
    let Some(obj) = settings.as_object() else {
        return Err(Invalid::new("", "settings must be a JSON object"));
    };
    if obj.contains_key("tokens") {
        return Err(Invalid::new(
            "tokens",
            "tokens are managed under /api/v1/tokens, not in the settings",
        ));
    }
    if let Some(a) = obj.get("audit") {
        if a.get("authorization").is_some() {
            return Err(Invalid::new(
                "audit.authorization",
                "the service owns the audit credential; it cannot be set",
            ));
        }
    }
    config::from_value(&with_service_audit(settings, "Bearer x"))
        .map(|_| ())
        .map_err(|e| Invalid::from_core(e, None))
}

/// Checks one token entry against the current settings, exactly as the filter would load it.
pub fn check_token(settings: &Value, entry: &Value) -> Result<(), Invalid> {
    let mut cfg = settings.as_object().cloned().unwrap_or_default();
    cfg.insert("tokens".into(), Value::Array(vec![entry.clone()]));
    config::from_value(&Value::Object(cfg))
        .map(|_| ())
        .map_err(|e| Invalid::from_core(e, Some("tokens[0].")))
}

/// The whole configuration Envoys are sent, checked by the core; also its JSON text.
pub fn build(
    settings: &Value,
    audit_authorization: &str,
    tokens: &[TokenRow],
) -> Result<(Value, String), Invalid> {
    build_compiled(settings, audit_authorization, tokens).map(|(v, t, _)| (v, t))
}

/// [`build`], also handing back the core's compiled form of that very text (loaded once:
/// at 100,000 tokens each load is a noticeable part of a push).
pub fn build_compiled(
    settings: &Value,
    audit_authorization: &str,
    tokens: &[TokenRow],
) -> Result<(Value, String, config::Config), Invalid> {
    let mut cfg = with_service_audit(settings, audit_authorization)
        .as_object()
        .cloned()
        .unwrap_or_default();
    cfg.insert(
        "tokens".into(),
        Value::Array(tokens.iter().map(token_entry).collect()),
    );
    let cfg = Value::Object(cfg);
    let text = cfg.to_string();
    // The text Envoy gets is the text checked.
    let compiled = config::load(text.as_bytes()).map_err(|e| Invalid::from_core(e, None))?;
    Ok((cfg, text, compiled))
}

/// The configuration without the audit credential, for showing (`GET /api/v1/config`).
pub fn redacted(cfg: &Value) -> Value {
    let mut out = cfg.clone();
    if let Some(a) = out.get_mut("audit").and_then(Value::as_object_mut) {
        if a.contains_key("authorization") {
            a.insert(
                "authorization".into(),
                json!("(set by the service; not shown)"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lines: &[&str]) -> TokenRow {
        TokenRow {
            id: "ci".into(),
            name: "CI".into(),
            user: Some("bot".into()),
            sha256: "a".repeat(64),
            created_at: 0,
            created_by: "admin".into(),
            expires_at: Some(1_800_000_000_000),
            revoked_at: None,
            revoked_by: None,
            ips: vec![],
            run_as: vec![],
            limit_to: lines.iter().map(|s| s.to_string()).collect(),
            shadow_limit_to: vec![],
            previous: None,
            usage: Default::default(),
        }
    }

    #[test]
    fn a_bad_line_names_its_field_line_and_column() {
        let e = check_token(
            &json!({}),
            &token_entry(&row(&["/rest/.*", "[get]/rest/(?=x)"])),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limit_to[1]"));
        assert_eq!(e.line, Some(2));
        assert!(e.column.is_some());
        assert!(e.message.contains("look"), "{}", e.message);
    }

    #[test]
    fn settings_may_not_carry_tokens_or_the_audit_credential() {
        assert!(check_settings(&json!({"auth_methods": "both"})).is_ok());
        assert_eq!(
            check_settings(&json!({"tokens": []}))
                .unwrap_err()
                .field
                .as_deref(),
            Some("tokens")
        );
        let e = check_settings(&json!({"audit": {"authorization": "x"}})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("audit.authorization"));
        let e = check_settings(&json!({"auth_methods": "digest"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("auth_methods"));
    }

    #[test]
    fn built_config_loads_and_hides_the_credential_when_shown() {
        let (cfg, text) = build(&json!({}), "Bearer s3cret", &[row(&["/rest/.*"])]).unwrap();
        assert!(text.contains("s3cret"));
        assert_eq!(cfg["audit"]["cluster"], AUDIT_CLUSTER);
        assert_eq!(cfg["tokens"][0]["expires"], "2027-01-15T08:00:00Z");
        assert!(!redacted(&cfg).to_string().contains("s3cret"));
    }
}
