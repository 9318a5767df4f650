//! The YAML config entry `tokenctl new` prints.

use serde_json::Value;

use crate::yaml;

fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A YAML scalar for a config value: plain when that reads back as the same string in every
/// YAML reader (Envoy's, Kubernetes', PyYAML), double-quoted otherwise.
pub fn yaml_scalar(s: &str) -> String {
    // A leading digit is fine only with a letter that no number spelling uses (a hex
    // digest such as `5e88…da28` stays plain; `2027-01-01`, `1e5`, `0x1f` get quotes).
    let starts_ok = match s.bytes().next() {
        Some(c) if c.is_ascii_alphabetic() => true,
        Some(c) if c.is_ascii_digit() => s
            .bytes()
            .any(|c| c.is_ascii_alphabetic() && !b"eExXoObB".contains(&c)),
        _ => false,
    };
    let plain = starts_ok
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.@-".contains(&c))
        && !yaml::plain_is_not_string(s);
    if plain {
        s.to_owned()
    } else {
        js_string(s)
    }
}

/// A restriction line: single-quoted (regex backslashes stay as written).
pub fn yaml_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        js_string(s)
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The token entry as a YAML list item, indented by `indent` spaces.
pub fn yaml_entry(entry: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    let mut first = true;
    let keys = [
        "id", "name", "user", "sha256", "expires", "ips", "run_as", "limit_to",
    ];
    for key in keys {
        let Some(v) = entry.get(key) else { continue };
        let lead = if first { "- " } else { "  " };
        first = false;
        match v {
            Value::String(s) => out.push_str(&format!("{pad}{lead}{key}: {}\n", yaml_scalar(s))),
            Value::Array(items) if key == "limit_to" => {
                out.push_str(&format!("{pad}{lead}{key}:\n"));
                for item in items.iter().filter_map(Value::as_str) {
                    out.push_str(&format!("{pad}    - {}\n", yaml_line(item)));
                }
            }
            Value::Array(items) => {
                let list: Vec<String> = items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(js_string)
                    .collect();
                out.push_str(&format!("{pad}{lead}{key}: [{}]\n", list.join(", ")));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(yaml_scalar("ci-bot"), "ci-bot");
        assert_eq!(yaml_scalar("yes"), "\"yes\"");
        assert_eq!(
            yaml_scalar("2027-01-01T00:00:00Z"),
            "\"2027-01-01T00:00:00Z\""
        );
        assert_eq!(yaml_scalar("CI bot"), "\"CI bot\"");
        assert_eq!(yaml_scalar("5e88da"), "5e88da");
        assert_eq!(yaml_scalar("5e88"), "\"5e88\"");
        assert_eq!(yaml_scalar("0x1f"), "\"0x1f\"");
        assert_eq!(yaml_line(r"[get]/rest/a\d+'x"), r"'[get]/rest/a\d+''x'");
    }

    #[test]
    fn entry_round_trips() {
        let entry = serde_json::json!({
            "id": "ci", "name": "CI: bot", "user": "no", "sha256": "ab",
            "expires": "2027-01-01T00:00:00Z", "ips": ["10.0.0.0/8"], "run_as": ["*"],
            "limit_to": ["[post].*/rest/api/2/issue/KANBAN-100/comment.*", "a'b\\d"],
        });
        let text = yaml_entry(&entry, 4);
        let docs = yaml::parse(&text).unwrap();
        assert_eq!(docs[0].to_json(), serde_json::json!([entry]));
    }
}
