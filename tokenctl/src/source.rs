//! Finding tokengate plugin configurations in a file and loading them with the filter's code.
//!
//! A file may be the plugin configuration itself (YAML or JSON), a whole Envoy bootstrap
//! (YAML or JSON: every wasm filter whose name, root_id, vm_id or code path says `tokengate`),
//! or an Istio `WasmPlugin` manifest (`spec.pluginConfig`). Envoy hands a `Struct`
//! configuration to the filter as JSON, and a `StringValue` as its text: the two loading paths
//! below are exactly [`tokengate_core::config::from_value`] and [`tokengate_core::config::load`].

use serde_json::Value;
use tokengate_core::config::{self, Config, ConfigError};

use crate::yaml::{self, Kind, Node, Pos};

const STRUCT: &str = "google.protobuf.Struct";
const STRING_VALUE: &str = "google.protobuf.StringValue";

/// One plugin configuration found in a file.
pub struct Source {
    /// What it is, for messages ("plugin configuration", "wasm filter `tokengate`").
    pub label: String,
    /// Where it starts in the file.
    pub pos: Pos,
    pub body: Body,
}

pub enum Body {
    /// A YAML/JSON structure (a `Struct` value, `pluginConfig`, a plugin config file).
    Tree(Node),
    /// JSON text (a `StringValue`, or a whole JSON plugin config file). `at`: where a
    /// `StringValue` sits in the file; `None` when the text is the file itself.
    Json { text: String, at: Option<Pos> },
    /// A `configuration` the filter cannot read (wrong `@type`, not a string...).
    Unusable { message: String },
}

/// The file could not be used at all (exit status 2).
pub struct Unreadable {
    pub pos: Option<Pos>,
    pub message: String,
}

/// Reads `path` and finds its tokengate configurations.
pub fn read(path: &str) -> Result<Vec<Source>, Unreadable> {
    let bytes = if path == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(path)
    }
    .map_err(|e| Unreadable {
        pos: None,
        message: format!("cannot read {path}: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| Unreadable {
        pos: None,
        message: format!("{path} is not UTF-8 text ({e})"),
    })?;
    discover(&text)
}

/// Finds the configurations in a text.
pub fn discover(text: &str) -> Result<Vec<Source>, Unreadable> {
    let looks_json = text.trim_start().starts_with('{');
    if looks_json {
        // JSON syntax as the filter's JSON reader sees it (YAML would accept more).
        if let Err(e) = serde_json::from_str::<Value>(text) {
            return Err(Unreadable {
                pos: Some(Pos {
                    line: e.line(),
                    column: e.column(),
                }),
                message: format!("not valid JSON: {e}"),
            });
        }
    }
    let docs = match yaml::parse(text) {
        Ok(d) => d,
        // Valid JSON that the YAML reader refuses (rare): treat it as a plugin config.
        Err(_) if looks_json => {
            return Ok(vec![Source {
                label: "plugin configuration".into(),
                pos: Pos { line: 1, column: 1 },
                body: Body::Json {
                    text: text.to_owned(),
                    at: None,
                },
            }])
        }
        Err(e) => {
            return Err(Unreadable {
                pos: Some(e.pos),
                message: format!("not valid YAML: {}", e.message),
            })
        }
    };
    let docs: Vec<Node> = docs
        .into_iter()
        .filter(|d| !matches!(&d.kind, Kind::Scalar { text, .. } if text.is_empty()))
        .collect();
    if docs.is_empty() {
        return Err(Unreadable {
            pos: None,
            message: "the file is empty".into(),
        });
    }
    let mut found = Vec::new();
    let mut envoy_like = false;
    for doc in &docs {
        if doc.get("kind").and_then(Node::as_str) == Some("WasmPlugin") {
            envoy_like = true;
            if let Some(pc) = doc.get("spec").and_then(|s| s.get("pluginConfig")) {
                let name = doc
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Node::as_str)
                    .unwrap_or("?");
                found.push(Source {
                    label: format!("WasmPlugin `{name}` spec.pluginConfig"),
                    pos: pc.pos,
                    body: Body::Tree(pc.clone()),
                });
            }
            continue;
        }
        if ["static_resources", "dynamic_resources", "admin", "node"]
            .iter()
            .any(|k| doc.get(k).is_some())
        {
            envoy_like = true;
        }
        let mut wasm: Vec<&Node> = Vec::new();
        doc.walk(&mut |n| {
            if n.get("configuration").is_some() && n.get("vm_config").is_some() {
                wasm.push(n);
            }
        });
        if !wasm.is_empty() {
            envoy_like = true;
        }
        let named: Vec<&Node> = wasm
            .iter()
            .copied()
            .filter(|n| names_tokengate(n))
            .collect();
        let chosen = if named.is_empty() && wasm.len() == 1 {
            wasm
        } else {
            named
        };
        for plugin in chosen {
            if let Some(conf) = plugin.get("configuration") {
                found.push(from_configuration(plugin, conf));
            }
        }
    }
    if found.is_empty() && envoy_like {
        // ECDS: the filter's config lives in the file a config_discovery source names.
        let mut ecds: Vec<String> = Vec::new();
        for doc in &docs {
            doc.walk(&mut |n| {
                if let Some(p) = n
                    .get("config_discovery")
                    .and_then(|c| c.get("config_source"))
                    .and_then(|c| c.get("path_config_source"))
                    .and_then(|c| c.get("path"))
                    .and_then(Node::as_str)
                {
                    ecds.push(p.to_owned());
                }
            });
        }
        let message = if ecds.is_empty() {
            "no tokengate filter found: expected an envoy.extensions.filters.http.wasm.v3.Wasm \
             filter whose config names tokengate (name, root_id, vm_id or code filename), \
             or a WasmPlugin with spec.pluginConfig"
                .to_owned()
        } else {
            format!(
                "this Envoy config loads its filter configuration through ECDS (config_discovery): check {} instead",
                ecds.join(", ")
            )
        };
        return Err(Unreadable { pos: None, message });
    }
    if found.is_empty() {
        let Some(doc) = docs.into_iter().next() else {
            return Err(Unreadable {
                pos: None,
                message: "the file is empty".into(),
            });
        };
        let pos = doc.pos;
        let body = if looks_json {
            Body::Json {
                text: text.to_owned(),
                at: None,
            }
        } else {
            Body::Tree(doc)
        };
        found.push(Source {
            label: "plugin configuration".into(),
            pos,
            body,
        });
    }
    Ok(found)
}

fn names_tokengate(plugin: &Node) -> bool {
    let texts = [
        plugin.get("name"),
        plugin.get("root_id"),
        plugin.get("vm_config").and_then(|v| v.get("vm_id")),
        plugin
            .get("vm_config")
            .and_then(|v| v.get("code"))
            .and_then(|c| c.get("local"))
            .and_then(|l| l.get("filename")),
    ];
    texts
        .iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .any(|t| t.to_ascii_lowercase().contains("tokengate"))
}

fn from_configuration(plugin: &Node, conf: &Node) -> Source {
    let name = plugin.get("name").and_then(Node::as_str).unwrap_or("?");
    let label = format!("wasm filter `{name}`");
    let at_type = conf.get("@type").and_then(Node::as_str).unwrap_or("");
    let value = conf.get("value");
    let body = match value {
        Some(v) if at_type.ends_with(STRUCT) => Body::Tree(v.clone()),
        Some(v) if at_type.ends_with(STRING_VALUE) => match v.as_str() {
            Some(text) => Body::Json {
                text: text.to_owned(),
                at: Some(v.pos),
            },
            None => Body::Unusable {
                message: "a google.protobuf.StringValue `value` must be a string holding JSON"
                    .into(),
            },
        },
        _ if at_type.is_empty() => Body::Unusable {
            message: "`configuration` needs `@type: type.googleapis.com/google.protobuf.Struct` \
                      (YAML value) or `...StringValue` (JSON string) and a `value`"
                .into(),
        },
        None => Body::Unusable {
            message: "`configuration` has no `value`".into(),
        },
        Some(_) => Body::Unusable {
            message: format!(
                "`configuration` of type `{at_type}` cannot be read by tokengate: use \
                 google.protobuf.Struct or google.protobuf.StringValue"
            ),
        },
    };
    Source {
        label,
        pos: conf.pos,
        body,
    }
}

/// A configuration loaded with the filter's own code.
pub struct Loaded {
    pub result: Result<Config, ConfigError>,
    /// The JSON the filter sees (for lints that read the raw entries).
    pub value: Option<Value>,
    /// Positions: the tree of the config (for a JSON string, of the string's text).
    pub tree: Option<Node>,
}

pub fn load(source: &Source) -> Loaded {
    match &source.body {
        Body::Tree(node) => {
            let value = node.to_json();
            Loaded {
                result: config::from_value(&value),
                value: Some(value),
                tree: Some(node.clone()),
            }
        }
        Body::Json { text, .. } => Loaded {
            result: config::load(text.as_bytes()),
            value: serde_json::from_str(text).ok(),
            tree: yaml::parse(text).ok().and_then(|d| d.into_iter().next()),
        },
        Body::Unusable { message } => Loaded {
            result: Err(ConfigError {
                field: "configuration".into(),
                token: None,
                line: None,
                column: None,
                message: message.clone(),
            }),
            value: None,
            tree: None,
        },
    }
}

/// Where a config field sits in the file: the position, plus a note for positions inside a
/// JSON string value.
pub fn position(source: &Source, tree: Option<&Node>, field: &str) -> (Pos, Option<String>) {
    let inner = tree.map(|t| t.locate(field).0.pos);
    match &source.body {
        Body::Json { at: Some(at), .. } => (
            *at,
            inner.map(|p| format!("at line {}, column {} of the JSON string", p.line, p.column)),
        ),
        _ => (inner.unwrap_or(source.pos), None),
    }
}

/// Where a load error points in the file.
pub fn error_position(
    source: &Source,
    tree: Option<&Node>,
    e: &ConfigError,
) -> (Pos, Option<String>) {
    let json_syntax = e.field == "(document)" && e.line.is_some();
    if json_syntax {
        let p = Pos {
            line: e.line.unwrap_or(1),
            column: e.column.unwrap_or(1),
        };
        return match &source.body {
            Body::Json { at: Some(at), .. } => (
                *at,
                Some(format!(
                    "at line {}, column {} of the JSON string",
                    p.line, p.column
                )),
            ),
            _ => (p, None),
        };
    }
    let (mut pos, note) = position(source, tree, &e.field);
    // A restriction line given as a list item: point at the column within the line.
    if let (Some(col), Some(tree), None) = (e.column, tree, &note) {
        let (node, exact) = tree.locate(&e.field);
        if exact && node.as_str().is_some() && e.field.contains("limit_to[") {
            pos.column = node.pos.column + usize::from(node.is_quoted()) + col.saturating_sub(1);
        }
    }
    (pos, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_struct_and_string_configs() {
        let text = r#"
static_resources:
  listeners:
    - filter_chains:
        - filters:
            - typed_config:
                http_filters:
                  - name: tokengate
                    typed_config:
                      config:
                        name: tokengate
                        vm_config: { vm_id: x }
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.Struct
                          value:
                            tokens: []
                  - name: other
                    typed_config:
                      config:
                        name: tokengate-json
                        vm_config: { vm_id: y }
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: '{"tokens": []}'
"#;
        let found = discover(text).unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(found.len(), 2);
        assert!(matches!(found[0].body, Body::Tree(_)));
        assert!(matches!(found[1].body, Body::Json { at: Some(_), .. }));
        assert!(load(&found[0]).result.is_ok());
        assert!(load(&found[1]).result.is_ok());
    }

    #[test]
    fn envoy_without_tokengate_is_unreadable() {
        let e = discover("static_resources:\n  listeners: []\n")
            .err()
            .unwrap();
        assert!(e.message.contains("no tokengate filter"));
    }
}
