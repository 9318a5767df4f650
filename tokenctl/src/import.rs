//! `tokenctl import FILE`: moving tokens over from the original app without handing out new
//! secrets. FILE is the JSON list its token API returns: `label`, `user`, `token` (plaintext),
//! `limitTo` (lines joined by `<br>`), `ip` (one string, addresses separated by commas,
//! spaces or `<br>`; or a list), `validUntil` (Unix ms; 0 or absent: no expiry).
//!
//! Each entry becomes a token-service import (`POST /api/v1/tokens` with `token`, so the
//! service keeps only its digest) or, without `--server`, a plugin-configuration entry with
//! the digest. The plaintext is never printed.

use serde_json::{json, Map, Value};
use tokengate_core::{digest, time};

/// One entry, converted; `secret` is the plaintext to import.
#[derive(Debug)]
pub struct Entry {
    pub request: Value,
    pub secret: String,
}

fn lines_of(v: Option<&Value>) -> Vec<String> {
    let text = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    tokengate_core::restriction::split_text(&text)
}

fn ips_of(v: Option<&Value>) -> Vec<String> {
    let text = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    text.replace("<br>", ",")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An id from a label (the core's rule, as the service uses).
fn slug(label: &str, n: usize) -> String {
    let s = tokengate_core::token::id_from_name(label);
    if s.is_empty() {
        format!("imported-{}", n + 1)
    } else {
        s
    }
}

/// Converts the list; errors name the entry (0-based) and the field.
pub fn convert(doc: &Value) -> Result<Vec<Entry>, String> {
    let items = match doc {
        Value::Array(items) => items,
        Value::Object(m) => match m.get("tokens") {
            Some(Value::Array(items)) => items,
            _ => return Err("expected a JSON list of tokens (or {\"tokens\": [...]})".into()),
        },
        _ => return Err("expected a JSON list of tokens".into()),
    };
    let mut out = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("entry {i}: `{f}`");
        let obj = item
            .as_object()
            .ok_or_else(|| format!("entry {i}: not an object"))?;
        let secret = obj
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("{} is missing (the plaintext token to import)", at("token")))?
            .to_owned();
        let label = obj
            .get("label")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned();
        let mut id = slug(&label, i);
        let base = id.clone();
        let mut k = 2;
        while ids.contains(&id) {
            id = format!("{base}-{k}");
            k += 1;
        }
        ids.push(id.clone());
        let mut req = Map::new();
        req.insert("id".into(), json!(id));
        req.insert(
            "name".into(),
            json!(if label.is_empty() { id.clone() } else { label }),
        );
        match obj.get("user") {
            Some(Value::String(u)) if !u.trim().is_empty() => {
                req.insert("user".into(), json!(u.trim()));
            }
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => return Err(format!("{} must be a string", at("user"))),
        }
        let limit = lines_of(obj.get("limitTo"));
        if !limit.is_empty() {
            req.insert("limit_to".into(), json!(limit));
        }
        let ips = ips_of(obj.get("ip"));
        if !ips.is_empty() {
            req.insert("ips".into(), json!(ips));
        }
        match obj.get("validUntil") {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_i64() {
                Some(0) => {}
                Some(ms) if ms > 0 => {
                    req.insert(
                        "expires".into(),
                        json!(time::format_rfc3339_ms(ms).replace(".000Z", "Z")),
                    );
                }
                _ => return Err(format!("{} must be Unix milliseconds", at("validUntil"))),
            },
        }
        req.insert("token".into(), json!(secret));
        out.push(Entry {
            request: Value::Object(req),
            secret,
        });
    }
    Ok(out)
}

/// The plugin-configuration entry: the digest instead of the plaintext.
pub fn config_entry(e: &Entry) -> Value {
    let mut m = e.request.as_object().cloned().unwrap_or_default();
    m.remove("token");
    m.insert(
        "sha256".into(),
        json!(digest::to_hex(&digest::sha256(e.secret.as_bytes()))),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_apps_list_converts() {
        let doc = json!([
            {"label": "Ansible bot", "user": "ansible@jira.pl", "token": "token0987654321",
             "limitTo": "[get].*/rest/api/2/issue/JRA.*<br>[post].*/comment", "ip": "10.0.0.0/8, 127.0.0.1",
             "validUntil": 1_800_000_000_000_i64},
            {"label": "Ansible bot", "token": "qt3sumg4gd8r47n98tcnmuarnfufviog", "validUntil": 0},
        ]);
        let out = convert(&doc).unwrap();
        let a = &out[0].request;
        assert_eq!(a["id"], "ansible-bot");
        assert_eq!(
            a["limit_to"],
            json!(["[get].*/rest/api/2/issue/JRA.*", "[post].*/comment"])
        );
        assert_eq!(a["ips"], json!(["10.0.0.0/8", "127.0.0.1"]));
        assert_eq!(a["expires"], "2027-01-15T08:00:00Z");
        assert_eq!(out[1].request["id"], "ansible-bot-2");
        assert!(out[1].request.get("expires").is_none());
        let entry = config_entry(&out[0]);
        assert!(entry.get("token").is_none());
        assert_eq!(entry["sha256"].as_str().unwrap().len(), 64);
        assert!(convert(&json!([{"label": "x"}]))
            .unwrap_err()
            .contains("entry 0: `token`"));
        assert!(convert(&json!([{"token": "t", "validUntil": "soon"}])).is_err());
    }
}
