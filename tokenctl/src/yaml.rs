//! YAML (and JSON, which YAML reads too) with source positions.
//!
//! The tree keeps where every node starts, so that a config error naming a field such as
//! `tokens[2].limit_to[1]` can be reported at a file line and column. Scalars are resolved the
//! way Envoy's YAML loader (yaml-cpp) resolves them before handing a `google.protobuf.Struct`
//! to the filter: unquoted `yes`/`no`/`on`/`off`/`y`/`n` are booleans, numbers are numbers,
//! `~`/`null`/empty are null, and anything quoted is a string.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(m: Marker) -> Pos {
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Kind {
    Scalar {
        text: String,
        style: TScalarStyle,
        tag: Option<Tag>,
    },
    Seq(Vec<Node>),
    /// Entries in document order (duplicates kept, so they can be reported).
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

/// A YAML syntax error.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    /// The text of a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for a quoted or block scalar (its text starts one character after `pos`).
    pub fn is_quoted(&self) -> bool {
        matches!(
            &self.kind,
            Kind::Scalar {
                style: TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted,
                ..
            }
        )
    }

    /// The value under `key` in a mapping (the last one, as Envoy keeps it).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The JSON value Envoy would hand the filter for this YAML.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    let key = match &k.kind {
                        Kind::Scalar { text, .. } => text.clone(),
                        _ => String::new(),
                    };
                    map.insert(key, v.to_json());
                }
                Value::Object(map)
            }
            Kind::Scalar { text, style, tag } => resolve_scalar(text, *style, tag.as_ref()),
        }
    }

    /// Mapping keys that appear more than once (Envoy silently keeps the last).
    pub fn duplicate_keys(&self, out: &mut Vec<(Pos, String)>) {
        match &self.kind {
            Kind::Map(entries) => {
                let mut seen: Vec<&str> = Vec::new();
                for (k, v) in entries {
                    if let Some(name) = k.as_str() {
                        if seen.contains(&name) {
                            out.push((k.pos, name.to_owned()));
                        } else {
                            seen.push(name);
                        }
                    }
                    v.duplicate_keys(out);
                }
            }
            Kind::Seq(items) => items.iter().for_each(|i| i.duplicate_keys(out)),
            Kind::Scalar { .. } => {}
        }
    }

    /// Where the field named by a config error path (`tokens[2].limit_to[1]`,
    /// `identity.upstream_authorization.Alice.Smith`) sits. Returns the deepest node reached
    /// and whether the whole path was found.
    pub fn locate(&self, path: &str) -> (&Node, bool) {
        let rest = path.strip_prefix('.').unwrap_or(path);
        if rest.is_empty() || rest == "(document)" {
            return (self, true);
        }
        match &self.kind {
            Kind::Seq(items) => {
                let Some(after) = rest.strip_prefix('[') else {
                    return (self, false);
                };
                let Some((num, tail)) = after.split_once(']') else {
                    return (self, false);
                };
                match num.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    Some(item) => item.locate(tail),
                    None => (self, false),
                }
            }
            Kind::Map(entries) => {
                // Keys may contain dots (user names): take the longest key that fits.
                let mut best: Option<(&Node, usize)> = None;
                for (k, v) in entries {
                    let Some(name) = k.as_str() else { continue };
                    let fits = rest.strip_prefix(name).is_some_and(|after| {
                        after.is_empty() || after.starts_with('.') || after.starts_with('[')
                    });
                    if fits && best.is_none_or(|(_, len)| name.len() >= len) {
                        best = Some((v, name.len()));
                    }
                }
                match best {
                    Some((v, len)) => v.locate(rest.get(len..).unwrap_or("")),
                    None => (self, false),
                }
            }
            Kind::Scalar { .. } => (self, false),
        }
    }

    /// Every node in the tree, depth first, with the node itself first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Node)) {
        f(self);
        match &self.kind {
            Kind::Seq(items) => items.iter().for_each(|i| i.walk(f)),
            Kind::Map(entries) => entries.iter().for_each(|(_, v)| v.walk(f)),
            Kind::Scalar { .. } => {}
        }
    }
}

/// yaml-cpp's spellings of booleans (what Envoy's YAML loader accepts as `bool`).
const TRUE_WORDS: &[&str] = &[
    "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y",
];
const FALSE_WORDS: &[&str] = &[
    "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N",
];

/// True when an unquoted scalar with this text would not stay a string.
pub fn plain_is_not_string(text: &str) -> bool {
    !matches!(
        resolve_scalar(text, TScalarStyle::Plain, None),
        Value::String(_)
    )
}

fn resolve_scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    if let Some(tag) = tag {
        // `!!str`, or the non-specific `!`: a string whatever it looks like.
        if tag.suffix == "str" || (tag.handle == "!" && tag.suffix.is_empty()) {
            return Value::String(text.to_owned());
        }
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if TRUE_WORDS.contains(&text) {
        return Value::Bool(true);
    }
    if FALSE_WORDS.contains(&text) {
        return Value::Bool(false);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Number(i.into());
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Number(i.into());
        }
    }
    let float_like = digits
        .bytes()
        .all(|c| c.is_ascii_digit() || b".eE+-".contains(&c))
        && digits.bytes().any(|c| c.is_ascii_digit());
    if float_like {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(text.to_owned())
}

/// Builds trees from parser events.
#[derive(Default)]
struct Builder {
    docs: Vec<Node>,
    /// Open collections: the node being filled and, for maps, a key waiting for its value.
    stack: Vec<(Node, Option<Node>, usize)>,
    anchors: HashMap<usize, Node>,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some((parent, pending_key, _)) => match &mut parent.kind {
                Kind::Seq(items) => items.push(node),
                Kind::Map(entries) => match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(key) => entries.push((key, node)),
                },
                Kind::Scalar { .. } => {}
            },
        }
    }

    fn close(&mut self) {
        if let Some((node, _, anchor)) = self.stack.pop() {
            self.push_value(node, anchor);
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::of(mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.push_value(
                    Node {
                        kind: Kind::Scalar { text, style, tag },
                        pos,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push((
                Node {
                    kind: Kind::Seq(Vec::new()),
                    pos,
                },
                None,
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push((
                Node {
                    kind: Kind::Map(Vec::new()),
                    pos,
                },
                None,
                anchor,
            )),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    kind: Kind::Scalar {
                        text: String::new(),
                        style: TScalarStyle::Plain,
                        tag: None,
                    },
                    pos,
                });
                self.push_value(Node { pos, ..node }, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Parses every document of a YAML stream.
pub fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        pos: Pos::of(*e.marker()),
        message: e.info().to_owned(),
    })?;
    Ok(builder.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_paths() {
        let docs =
            parse("a: 1\ntokens:\n  - id: x\n    limit_to:\n      - '[get]/rest/.*'\n").unwrap();
        let root = &docs[0];
        let (n, exact) = root.locate("tokens[0].limit_to[0]");
        assert!(exact);
        assert_eq!(n.pos, Pos { line: 5, column: 9 });
        assert!(n.is_quoted());
        let (n, exact) = root.locate("tokens[0].nope");
        assert!(!exact);
        assert_eq!(n.pos.line, 3);
    }

    #[test]
    fn dotted_keys() {
        let docs = parse("identity:\n  upstream_authorization:\n    Alice.Smith: x\n").unwrap();
        let (n, exact) = docs[0].locate("identity.upstream_authorization.Alice.Smith");
        assert!(exact);
        assert_eq!(n.pos.line, 3);
    }

    #[test]
    fn envoy_scalars() {
        let docs = parse("a: yes\nb: 'yes'\nc: 12\nd: 1.5\ne: ~\nf: x\ng:\n").unwrap();
        let v = docs[0].to_json();
        assert_eq!(
            v,
            serde_json::json!({"a":true,"b":"yes","c":12,"d":1.5,"e":null,"f":"x","g":null})
        );
    }

    #[test]
    fn json_is_yaml() {
        let docs = parse("{\n  \"tokens\": [\n    {\"id\": \"a\"}\n  ]\n}").unwrap();
        let (n, exact) = docs[0].locate("tokens[0].id");
        assert!(exact);
        assert_eq!(n.pos.line, 3);
    }

    #[test]
    fn syntax_error_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
    }
}
