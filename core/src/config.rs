//! The plugin configuration (SPEC §3): parsed, validated and compiled once per root context.
//!
//! Parsing walks `serde_json::Value` by hand rather than deriving, so that every error names
//! the exact field and token id, and unknown fields are refused at every level.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::{Map, Value};

use crate::credential::Scheme;
use crate::digest::{self, Digest};
use crate::ip::Cidr;
use crate::restriction::Restrictions;

/// Which `Authorization` schemes may carry tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethods {
    #[default]
    Basic,
    Bearer,
    Both,
}

impl AuthMethods {
    pub fn allows(self, scheme: Scheme) -> bool {
        matches!(
            (self, scheme),
            (AuthMethods::Both, _)
                | (AuthMethods::Basic, Scheme::Basic)
                | (AuthMethods::Bearer, Scheme::Bearer)
        )
    }
}

/// What to do with a credential that is no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownCredentials {
    /// Hand it to the app's own authentication (passwords, Jira PATs, other schemes).
    #[default]
    Passthrough,
    Deny,
}

/// Identity rewriting (SPEC §9).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Lowercase header name set to the acting user; stripped from every client request.
    pub header: String,
    /// The same name with `-` spelled `_`, also stripped: some app servers map the two alike.
    pub header_underscored: Option<String>,
    /// Lowercase name of the run-as header (`contextUser` by default).
    pub run_as_header: String,
    /// Acting user (lowercase) → `Authorization` value injected upstream.
    pub upstream_authorization: HashMap<String, String>,
}

/// Audit delivery settings (SPEC §11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub flush_interval_ms: u64,
    pub batch_max_lines: usize,
    pub queue_max_lines: usize,
    pub timeout_ms: u64,
    /// Sent as the `authorization` header of every batch POST (the token service's receiver
    /// checks it). Never logged.
    pub authorization: Option<String>,
}

/// Who a token may act for through the run-as header.
#[derive(Debug, Clone, Default)]
pub struct RunAs {
    pub anyone: bool,
    /// Usernames as configured; compared case-insensitively, as Jira compares usernames.
    pub users: Vec<String>,
}

impl RunAs {
    pub fn permits(&self, user: &str) -> bool {
        self.anyone || self.find(user).is_some()
    }

    /// The configured spelling of `user`, if listed.
    pub fn find(&self, user: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.eq_ignore_ascii_case(user))
            .map(String::as_str)
    }
}

/// One compiled token. Holds no plaintext: only its digest.
#[derive(Debug)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub user: Option<String>,
    pub digest: Digest,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
    pub ips: Vec<Cidr>,
    pub run_as: RunAs,
    pub restrictions: Restrictions,
    /// `shadow_limit_to` (SPEC §19): evaluated and reported, never enforced.
    pub shadow: Option<Restrictions>,
    /// `previous` (SPEC §19): an older secret still accepted until `until`.
    pub previous: Option<Previous>,
}

/// An older secret of a token, accepted until `until_ms` (rotation with overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub digest: Digest,
    pub until_ms: i64,
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    pub auth_methods: AuthMethods,
    pub secure_mode: bool,
    pub protected_paths: Vec<String>,
    pub unknown_credentials: UnknownCredentials,
    pub max_body_bytes: u64,
    pub identity: Identity,
    pub audit: Option<AuditConfig>,
    pub tokens: Vec<Token>,
    index: TokenIndex,
    /// `previous` secrets: (digest, token index). Few; searched after the index misses.
    previous: Vec<(Digest, usize)>,
}

/// Lookup by digest. The map is keyed by the digest's first 8 bytes (uniform, so a trivial
/// hasher suffices); the full digest is then compared in constant time. Tokens whose
/// prefixes collide (practically never) go to a short overflow list.
#[derive(Debug, Default)]
struct TokenIndex {
    by_prefix: HashMap<u64, usize, BuildHasherDefault<PrefixHasher>>,
    overflow: Vec<usize>,
}

#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn prefix(d: &Digest) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(p)
}

impl Config {
    /// The token whose digest is `digest`, with its index.
    pub fn find_digest(&self, digest: &Digest) -> Option<(usize, &Token)> {
        let hit = |i: usize| {
            self.tokens
                .get(i)
                .filter(|t| digest::ct_eq(&t.digest, digest))
                .map(|t| (i, t))
        };
        self.index
            .by_prefix
            .get(&prefix(digest))
            .and_then(|&i| hit(i))
            .or_else(|| self.index.overflow.iter().find_map(|&i| hit(i)))
    }

    /// The token a plaintext credential names.
    pub fn find(&self, token: &str) -> Option<(usize, &Token)> {
        self.find_digest(&digest::sha256(token.as_bytes()))
    }

    /// The token a credential names, by its current secret (`false`) or its previous one
    /// (`true`, SPEC §19; the caller checks `until`).
    pub fn find_secret(&self, token: &str) -> Option<(usize, &Token, bool)> {
        let d = digest::sha256(token.as_bytes());
        if let Some((i, t)) = self.find_digest(&d) {
            return Some((i, t, false));
        }
        self.previous
            .iter()
            .find(|(p, _)| digest::ct_eq(p, &d))
            .and_then(|&(_, i)| self.tokens.get(i).map(|t| (i, t, true)))
    }

    /// Whether `decoded_path` falls under `protected_paths`.
    /// A resolved path falls under a protected prefix, or is the prefix without its final
    /// `/` (Tomcat dispatches `/rest` to the `/rest/*` servlet too).
    pub fn is_protected(&self, path: &str) -> bool {
        self.protected_paths.iter().any(|p| {
            path.starts_with(p.as_str()) || (p.len() > 1 && p.strip_suffix('/') == Some(path))
        })
    }
}

/// A configuration that failed to load, naming where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the field, e.g. `tokens[2].limit_to[1]`.
    pub field: String,
    /// Id of the token concerned, when there is one.
    pub token: Option<String>,
    /// For JSON syntax errors: position in the document. For restriction lines: the line
    /// number within `limit_to` and the column within that line.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`", self.field)?;
        if let Some(id) = &self.token {
            write!(f, " (token `{id}`)")?;
        }
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, ", line {l}, column {c}")?,
            (Some(l), None) => write!(f, ", line {l}")?,
            _ => {}
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;

/// Loads a plugin configuration: JSON text (a StringValue, or a Struct that Envoy converted).
/// A serialized `google.protobuf.Struct` (Envoy's hand-over of a YAML Struct) is accepted too.
///
/// Tokens are compiled one at a time as the document is read, so a set of 100,000 tokens
/// never exists as a JSON tree: wasm memory does not shrink, and the peak would stay with the
/// VM for its lifetime.
pub fn load(bytes: &[u8]) -> Result<Config, ConfigError> {
    crate::javare::shared_compiles(|| load_inner(bytes))
}

fn load_inner(bytes: &[u8]) -> Result<Config, ConfigError> {
    let looks_like_json = bytes.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{');
    if !looks_like_json {
        let mut set = TokenSet::default();
        let mut failed = None;
        let root = crate::pbstruct::decode_struct_streaming(bytes, "tokens", &mut |v| {
            set.add(&v).map_err(|e| failed = Some(e))
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if let Ok(root) = root {
            return from_parts(&root, set);
        }
        // Neither form: fall through and report as JSON, the form people write by hand.
    }
    // serde_json keeps the last of two equal keys silently; a config where `revoked: true`
    // can be overridden by a later `revoked: false` is refused first.
    if let Err(e) = crate::json::validate(bytes) {
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return Err(json_syntax_error(&syntax));
        }
        let (line, column) = line_column(bytes, e.offset);
        return Err(ConfigError {
            field: "(document)".into(),
            token: None,
            line: Some(line),
            column: Some(column),
            message: format!(
                "not strict JSON: {}",
                e.reason.trim_start_matches("body is not JSON: ")
            ),
        });
    }
    let mut set = TokenSet::default();
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let root = serde::Deserializer::deserialize_map(
        &mut de,
        stream::RootVisitor {
            set: &mut set,
            failed: &mut failed,
        },
    );
    if let Some(e) = failed {
        return Err(e);
    }
    let root = root.map_err(|e| json_syntax_error(&e))?;
    de.end().map_err(|e| json_syntax_error(&e))?;
    from_parts(&Value::Object(root), set)
}

fn json_syntax_error(e: &serde_json::Error) -> ConfigError {
    ConfigError {
        field: "(document)".into(),
        token: None,
        line: Some(e.line()),
        column: Some(e.column()),
        message: format!("not valid JSON: {e}"),
    }
}

/// Streaming the `tokens` list out of a JSON document with serde.
mod stream {
    use super::{ConfigError, TokenSet};
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};
    use std::fmt;

    /// Reads the root map, handing each element of `tokens` to the set as it is read.
    pub struct RootVisitor<'a> {
        pub set: &'a mut TokenSet,
        pub failed: &'a mut Option<ConfigError>,
    }

    impl<'de> Visitor<'de> for RootVisitor<'_> {
        type Value = Map<String, Value>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut rest = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if key == "tokens" {
                    let seed = Tokens {
                        set: &mut *self.set,
                        failed: &mut *self.failed,
                    };
                    if let Some(not_a_list) = map.next_value_seed(seed)? {
                        rest.insert(key, not_a_list);
                    }
                } else {
                    let v: Value = map.next_value()?;
                    rest.insert(key, v);
                }
            }
            Ok(rest)
        }
    }

    /// The `tokens` value: a list is consumed token by token; anything else is returned so
    /// that the usual "must be a list" error names it.
    struct Tokens<'a> {
        set: &'a mut TokenSet,
        failed: &'a mut Option<ConfigError>,
    }

    impl<'de> DeserializeSeed<'de> for Tokens<'_> {
        type Value = Option<Value>;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Tokens<'_> {
        type Value = Option<Value>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of tokens")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while let Some(v) = seq.next_element::<Value>()? {
                if let Err(e) = self.set.add(&v) {
                    *self.failed = Some(e);
                    return Err(de::Error::custom("invalid token"));
                }
            }
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(Value::Bool(v)))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Value::from(v)))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Value::from(v)))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(Value::from(v)))
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Value::from(v)))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                .is_some()
            {}
            Ok(Some(Value::Object(Map::new())))
        }
    }
}

/// Tokens compiled one at a time, with the checks that span tokens.
#[derive(Default)]
struct TokenSet {
    tokens: Vec<Token>,
    index: TokenIndex,
    /// Digests of `previous` secrets (few): never one of another token's secrets.
    previous: Vec<(Digest, usize)>,
    /// The first token given as plaintext: an error once `secure_mode` is known.
    first_plaintext: Option<usize>,
}

impl TokenSet {
    fn add(&mut self, value: &Value) -> Result<(), ConfigError> {
        let i = self.tokens.len();
        let (token, plaintext) = load_token(i, value)?;
        if plaintext && self.first_plaintext.is_none() {
            self.first_plaintext = Some(i);
        }
        let duplicate = |j: usize| {
            let other = self.tokens.get(j).filter(|t| t.digest == token.digest)?;
            Some(ConfigError {
                field: format!("tokens[{i}]"),
                token: Some(token.id.clone()),
                line: None,
                column: None,
                message: format!("same token digest as token `{}`", other.id),
            })
        };
        let err = |field: String, message: String| ConfigError {
            field,
            token: Some(token.id.clone()),
            line: None,
            column: None,
            message,
        };
        // No secret may be both one token's current secret and any token's previous one.
        if let Some(&(_, j)) = self
            .previous
            .iter()
            .find(|(d, _)| digest::ct_eq(d, &token.digest))
        {
            let other = self.tokens.get(j).map_or("?", |t| t.id.as_str());
            return Err(err(
                format!("tokens[{i}]"),
                format!("same token digest as the previous secret of token `{other}`"),
            ));
        }
        if let Some(p) = &token.previous {
            let other = self
                .find_current(&p.digest)
                .map(str::to_owned)
                .or_else(|| {
                    self.previous
                        .iter()
                        .find(|(d, _)| digest::ct_eq(d, &p.digest))
                        .and_then(|(_, j)| self.tokens.get(*j))
                        .map(|t| t.id.clone())
                })
                .or_else(|| digest::ct_eq(&p.digest, &token.digest).then(|| token.id.clone()));
            if let Some(other) = other {
                return Err(err(
                    format!("tokens[{i}].previous.sha256"),
                    format!("the previous secret is a secret of token `{other}`"),
                ));
            }
            self.previous.push((p.digest, i));
        }
        match self.index.by_prefix.entry(prefix(&token.digest)) {
            std::collections::hash_map::Entry::Occupied(slot) => {
                let first = *slot.get();
                if let Some(e) = std::iter::once(first)
                    .chain(self.index.overflow.iter().copied())
                    .find_map(duplicate)
                {
                    return Err(e);
                }
                self.index.overflow.push(i);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
        self.tokens.push(token);
        Ok(())
    }

    /// The id of the token whose current secret is `d`, while loading.
    fn find_current(&self, d: &Digest) -> Option<&str> {
        let hit = |i: usize| {
            self.tokens
                .get(i)
                .filter(|t| digest::ct_eq(&t.digest, d))
                .map(|t| t.id.as_str())
        };
        self.index
            .by_prefix
            .get(&prefix(d))
            .and_then(|&i| hit(i))
            .or_else(|| self.index.overflow.iter().find_map(|&i| hit(i)))
    }

    /// Checks that need the whole set: unique ids, and no plaintext under `secure_mode`.
    #[allow(clippy::type_complexity)]
    fn finish(
        self,
        secure_mode: bool,
    ) -> Result<(Vec<Token>, TokenIndex, Vec<(Digest, usize)>), ConfigError> {
        if let Some(i) = self.first_plaintext.filter(|_| secure_mode) {
            return Err(ConfigError {
                field: format!("tokens[{i}].token"),
                token: self.tokens.get(i).map(|t| t.id.clone()),
                line: None,
                column: None,
                message: "plaintext tokens are refused in secure_mode: give `sha256`".into(),
            });
        }
        // Sorting indices finds duplicate ids without a second copy of every id.
        let mut order: Vec<usize> = (0..self.tokens.len()).collect();
        let id_of = |i: &usize| self.tokens.get(*i).map_or("", |t| t.id.as_str());
        order.sort_by(|a, b| id_of(a).cmp(id_of(b)).then(a.cmp(b)));
        for pair in order.windows(2) {
            if let [first, second] = pair {
                if id_of(first) == id_of(second) {
                    return Err(ConfigError {
                        field: format!("tokens[{second}].id"),
                        token: Some(id_of(second).to_owned()),
                        line: None,
                        column: None,
                        message: format!("duplicate token id (also tokens[{first}])"),
                    });
                }
            }
        }
        Ok((self.tokens, self.index, self.previous))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = bytes.get(..offset).unwrap_or(bytes);
    let line = before.iter().filter(|&&c| c == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(before.get(line_start..).unwrap_or_default())
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Compiles an already parsed configuration (tokenctl parses YAML itself).
pub fn from_value(value: &Value) -> Result<Config, ConfigError> {
    crate::javare::shared_compiles(|| from_value_inner(value))
}

fn from_value_inner(value: &Value) -> Result<Config, ConfigError> {
    let mut set = TokenSet::default();
    if let Some(Value::Array(items)) = value.get("tokens") {
        for item in items {
            set.add(item)?;
        }
    }
    from_parts(value, set)
}

/// Compiles the root map; `set` holds the tokens already read from its `tokens` list.
fn from_parts(value: &Value, set: TokenSet) -> Result<Config, ConfigError> {
    let root = Obj::new(value, String::new(), None)?;
    root.only(&[
        "auth_methods",
        "secure_mode",
        "protected_paths",
        "unknown_credentials",
        "max_body_bytes",
        "identity",
        "audit",
        "tokens",
    ])?;
    let auth_methods = match root.str("auth_methods")? {
        None | Some("basic") => AuthMethods::Basic,
        Some("bearer") => AuthMethods::Bearer,
        Some("both") => AuthMethods::Both,
        Some(other) => {
            return Err(root.err(
                "auth_methods",
                format!("`{other}` is not one of basic, bearer, both"),
            ))
        }
    };
    let unknown_credentials = match root.str("unknown_credentials")? {
        None | Some("passthrough") => UnknownCredentials::Passthrough,
        Some("deny") => UnknownCredentials::Deny,
        Some(other) => {
            return Err(root.err(
                "unknown_credentials",
                format!("`{other}` is not one of passthrough, deny"),
            ))
        }
    };
    let secure_mode = root.bool("secure_mode")?.unwrap_or(false);
    let protected_paths = match root.str_list("protected_paths")? {
        None => vec!["/rest/".to_owned()],
        Some(list) if list.is_empty() => {
            return Err(root.err(
                "protected_paths",
                "must list at least one path prefix".into(),
            ))
        }
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                if !p.starts_with('/') || p.bytes().any(|c| !(0x21..=0x7e).contains(&c)) {
                    return Err(root.err(
                        &format!("protected_paths[{i}]"),
                        format!("`{p}` must start with `/` and hold visible ASCII only"),
                    ));
                }
            }
            list
        }
    };
    let max_body_bytes = match root.uint("max_body_bytes")? {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(0) => return Err(root.err("max_body_bytes", "must be at least 1".into())),
        Some(n) => n,
    };
    let identity = load_identity(root.get("identity"))?;
    let audit = match root.get("audit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(load_audit(v)?),
    };

    match root.get("tokens") {
        None | Some(Value::Null | Value::Array(_)) => {}
        Some(_) => return Err(root.err("tokens", "must be a list of tokens".into())),
    }
    let (tokens, index, previous) = set.finish(secure_mode)?;

    Ok(Config {
        auth_methods,
        secure_mode,
        protected_paths,
        unknown_credentials,
        max_body_bytes,
        identity,
        audit,
        tokens,
        index,
        previous,
    })
}

fn load_identity(value: Option<&Value>) -> Result<Identity, ConfigError> {
    let empty = Value::Object(Map::new());
    let value = match value {
        None | Some(Value::Null) => &empty,
        Some(v) => v,
    };
    let obj = Obj::new(value, "identity".into(), None)?;
    obj.only(&["header", "run_as_header", "upstream_authorization"])?;
    let header = header_name(&obj, "header", "x-forwarded-user")?;
    let run_as_header = header_name(&obj, "run_as_header", "contextUser")?;
    if header == run_as_header {
        return Err(obj.err("run_as_header", "must differ from identity.header".into()));
    }
    let underscored = header.replace('-', "_");
    let header_underscored = (underscored != header).then_some(underscored);
    let mut upstream_authorization = HashMap::new();
    match obj.get("upstream_authorization") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (user, v) in map {
                let field = format!("identity.upstream_authorization.{user}");
                let text = v
                    .as_str()
                    .ok_or_else(|| plain_err(&field, None, "must be a string".into()))?;
                if text.is_empty() || text.bytes().any(|c| !(0x20..=0x7e).contains(&c)) {
                    return Err(plain_err(
                        &field,
                        None,
                        "must be a non-empty header value of visible ASCII".into(),
                    ));
                }
                valid_username(user).map_err(|m| plain_err(&field, None, m))?;
                if upstream_authorization
                    .insert(user.to_ascii_lowercase(), text.to_owned())
                    .is_some()
                {
                    return Err(plain_err(
                        &field,
                        None,
                        "user listed twice (usernames compare case-insensitively)".into(),
                    ));
                }
            }
        }
        Some(_) => {
            return Err(obj.err(
                "upstream_authorization",
                "must be a map of user to Authorization value".into(),
            ))
        }
    }
    Ok(Identity {
        header,
        header_underscored,
        run_as_header,
        upstream_authorization,
    })
}

/// Header names the filter may own: RFC 9110 tokens, not ones that carry other meaning.
fn header_name(obj: &Obj<'_>, key: &str, default: &str) -> Result<String, ConfigError> {
    let name = obj.str(key)?.unwrap_or(default).to_ascii_lowercase();
    let reserved = [
        "authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "x-request-id",
        "x-forwarded-for",
    ];
    let token_chars = name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
    if name.is_empty() || !token_chars || reserved.contains(&name.as_str()) {
        return Err(obj.err(key, format!("`{name}` cannot be used as this header")));
    }
    Ok(name)
}

fn load_audit(value: &Value) -> Result<AuditConfig, ConfigError> {
    let obj = Obj::new(value, "audit".into(), None)?;
    obj.only(&[
        "cluster",
        "authority",
        "path",
        "flush_interval_ms",
        "batch_max_lines",
        "queue_max_lines",
        "timeout_ms",
        "authorization",
    ])?;
    let text = |key: &str, default: &str| -> Result<String, ConfigError> {
        let v = obj.str(key)?.unwrap_or(default);
        if v.is_empty() || v.bytes().any(|c| !(0x21..=0x7e).contains(&c)) {
            return Err(obj.err(key, "must be non-empty visible ASCII".into()));
        }
        Ok(v.to_owned())
    };
    let cluster = text("cluster", "audit_sink")?;
    let authority = text("authority", "audit")?;
    let path = text("path", "/audit")?;
    if !path.starts_with('/') {
        return Err(obj.err("path", "must start with `/`".into()));
    }
    let positive = |key: &str, default: u64| -> Result<u64, ConfigError> {
        match obj.uint(key)? {
            None => Ok(default),
            Some(0) => Err(obj.err(key, "must be at least 1".into())),
            Some(n) => Ok(n),
        }
    };
    let flush_interval_ms = positive("flush_interval_ms", 1000)?;
    let batch_max_lines = usize::try_from(positive("batch_max_lines", 500)?).unwrap_or(usize::MAX);
    let queue_max_lines =
        usize::try_from(positive("queue_max_lines", 10_000)?).unwrap_or(usize::MAX);
    if queue_max_lines < batch_max_lines {
        return Err(obj.err("queue_max_lines", "must be at least batch_max_lines".into()));
    }
    let timeout_ms = obj.uint("timeout_ms")?.unwrap_or(2000);
    let authorization = match obj.str("authorization")? {
        None => None,
        // A header value: visible ASCII and inner spaces, as `Bearer …` needs.
        Some(v)
            if !v.is_empty()
                && !v.starts_with(' ')
                && !v.ends_with(' ')
                && v.bytes().all(|c| (0x20..=0x7e).contains(&c)) =>
        {
            Some(v.to_owned())
        }
        Some(_) => {
            return Err(obj.err(
                "authorization",
                "must be a non-empty header value of visible ASCII and spaces".into(),
            ))
        }
    };
    Ok(AuditConfig {
        cluster,
        authority,
        path,
        flush_interval_ms,
        batch_max_lines,
        queue_max_lines,
        timeout_ms,
        authorization,
    })
}

/// Compiles one token; also says whether it was given as plaintext.
fn load_token(i: usize, value: &Value) -> Result<(Token, bool), ConfigError> {
    let base = format!("tokens[{i}]");
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            plain_err(
                &format!("{base}.id"),
                None,
                "every token needs a string `id`".into(),
            )
        })?;
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(plain_err(
            &format!("{base}.id"),
            Some(&id),
            "must be 1..=200 characters without control characters".into(),
        ));
    }
    let obj = Obj::new(value, base.clone(), Some(id.clone()))?;
    obj.only(&[
        "id",
        "name",
        "user",
        "sha256",
        "token",
        "expires",
        "revoked",
        "ips",
        "run_as",
        "limit_to",
        "shadow_limit_to",
        "previous",
    ])?;
    let name = obj.str("name")?.unwrap_or(&id).to_owned();
    let user = match obj.str("user")? {
        None => None,
        Some(u) => {
            valid_username(u).map_err(|m| obj.err("user", m))?;
            Some(u.to_owned())
        }
    };
    let digest = match (obj.str("sha256")?, obj.str("token")?) {
        (Some(_), Some(_)) => {
            return Err(obj.err("token", "give either `sha256` or `token`, not both".into()))
        }
        (None, None) => {
            return Err(obj.err(
                "sha256",
                "every token needs `sha256` (or `token` outside secure_mode)".into(),
            ))
        }
        (Some(hex), None) => digest::parse_hex(hex)
            .ok_or_else(|| obj.err("sha256", "must be 64 lowercase hex digits".into()))?,
        (None, Some(plain)) => {
            if plain.is_empty()
                || plain
                    .bytes()
                    .any(|c| !(0x21..=0x7e).contains(&c) || c == b',')
            {
                return Err(obj.err(
                    "token",
                    "must be printable ASCII without spaces or commas".into(),
                ));
            }
            digest::sha256(plain.as_bytes())
        }
    };
    let expires_ms = match obj.str("expires")? {
        None => None,
        Some(t) => Some(
            crate::time::parse_rfc3339(t)
                .ok_or_else(|| obj.err("expires", format!("`{t}` is not an RFC 3339 date-time")))?,
        ),
    };
    let revoked = obj.bool("revoked")?.unwrap_or(false);
    let mut ips = Vec::new();
    for (j, entry) in obj.str_list("ips")?.unwrap_or_default().iter().enumerate() {
        ips.push(Cidr::parse(entry).map_err(|m| obj.err(&format!("ips[{j}]"), m))?);
    }
    if obj
        .get("ips")
        .is_some_and(|v| v.as_array().is_some_and(Vec::is_empty))
    {
        return Err(obj.err(
            "ips",
            "an empty list would admit no client; leave `ips` out to allow any".into(),
        ));
    }
    let mut run_as = RunAs::default();
    for (j, entry) in obj
        .str_list("run_as")?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if entry == "*" {
            run_as.anyone = true;
        } else {
            valid_username(entry).map_err(|m| obj.err(&format!("run_as[{j}]"), m))?;
            run_as.users.push(entry.clone());
        }
    }
    let lines: Vec<String> = match obj.get("limit_to") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.lines().map(str::to_owned).collect(),
        Some(Value::Array(_)) => obj.str_list("limit_to")?.unwrap_or_default(),
        Some(_) => return Err(obj.err("limit_to", "must be a list of lines or one string".into())),
    };
    let restrictions = Restrictions::compile(&lines).map_err(|e| ConfigError {
        field: format!("{base}.limit_to[{}]", e.line.saturating_sub(1)),
        token: Some(id.clone()),
        line: Some(e.line),
        column: Some(e.column),
        message: e.message,
    })?;
    let shadow = match obj.get("shadow_limit_to") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let lines: Vec<String> = match v {
                Value::String(s) => s.lines().map(str::to_owned).collect(),
                Value::Array(_) => obj.str_list("shadow_limit_to")?.unwrap_or_default(),
                _ => {
                    return Err(obj.err(
                        "shadow_limit_to",
                        "must be a list of lines or one string".into(),
                    ))
                }
            };
            let r = Restrictions::compile(&lines).map_err(|e| ConfigError {
                field: format!("{base}.shadow_limit_to[{}]", e.line.saturating_sub(1)),
                token: Some(id.clone()),
                line: Some(e.line),
                column: Some(e.column),
                message: e.message,
            })?;
            (!r.is_empty()).then_some(r)
        }
    };
    let previous = match obj.get("previous") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let p = Obj::new(v, format!("{base}.previous"), Some(id.clone()))?;
            p.only(&["sha256", "until"])?;
            let digest = p
                .str("sha256")?
                .and_then(digest::parse_hex)
                .ok_or_else(|| p.err("sha256", "must be 64 lowercase hex digits".into()))?;
            let until = p.str("until")?.ok_or_else(|| {
                p.err("until", "the time the previous secret stops working".into())
            })?;
            let until_ms = crate::time::parse_rfc3339(until)
                .ok_or_else(|| p.err("until", format!("`{until}` is not an RFC 3339 date-time")))?;
            Some(Previous { digest, until_ms })
        }
    };
    let plaintext = obj.get("token").is_some_and(|v| !v.is_null());
    let token = Token {
        id,
        name,
        user,
        digest,
        expires_ms,
        revoked,
        ips,
        run_as,
        restrictions,
        shadow,
        previous,
    };
    Ok((token, plaintext))
}

/// Usernames end up in a header value and in audit lines.
pub fn valid_username(u: &str) -> Result<(), String> {
    if u.is_empty() || u.chars().any(|c| c.is_control() || c == ',') || u.trim() != u {
        return Err(format!("`{u}` is not a valid username (empty, control characters, commas or surrounding spaces)"));
    }
    Ok(())
}

fn plain_err(field: &str, token: Option<&str>, message: String) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        token: token.map(str::to_owned),
        line: None,
        column: None,
        message,
    }
}

/// A JSON object being read, with the path and token id errors should name.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    token: Option<String>,
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: String, token: Option<String>) -> Result<Obj<'a>, ConfigError> {
        match value {
            Value::Object(map) => Ok(Obj { map, path, token }),
            _ => {
                let field = if path.is_empty() {
                    "(document)".to_owned()
                } else {
                    path
                };
                Err(ConfigError {
                    field,
                    token,
                    line: None,
                    column: None,
                    message: "must be a map".into(),
                })
            }
        }
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn err(&self, key: &str, message: String) -> ConfigError {
        ConfigError {
            field: self.field(key),
            token: self.token.clone(),
            line: None,
            column: None,
            message,
        }
    }

    fn only(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(self.err(
                k,
                format!("unknown field; expected one of: {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(key, "must be a string".into())),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(key, "must be true or false".into())),
        }
    }

    /// A non-negative integer. Envoy hands Struct numbers over as doubles, so an integral
    /// double (`1048576.0`) is accepted too.
    fn uint(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(u) = n.as_u64() {
                    return Ok(Some(u));
                }
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(Some(f as u64)),
                    _ => Err(self.err(key, "must be a non-negative integer".into())),
                }
            }
            Some(_) => Err(self.err(key, "must be a non-negative integer".into())),
        }
    }

    fn str_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| self.err(&format!("{key}[{i}]"), "must be a string".into()))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.err(key, "must be a list of strings".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Config, ConfigError> {
        load(s.as_bytes())
    }

    const PW: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn defaults() {
        let c = load_str(r#"{"tokens":[]}"#).unwrap();
        assert_eq!(c.auth_methods, AuthMethods::Basic);
        assert_eq!(c.protected_paths, vec!["/rest/".to_owned()]);
        assert_eq!(c.unknown_credentials, UnknownCredentials::Passthrough);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.identity.header, "x-forwarded-user");
        assert_eq!(
            c.identity.header_underscored.as_deref(),
            Some("x_forwarded_user")
        );
        assert_eq!(c.identity.run_as_header, "contextuser");
        assert!(c.audit.is_none());
    }

    #[test]
    fn full_token_and_lookup() {
        let c = load_str(&format!(
            r#"{{"auth_methods":"both","max_body_bytes":2048.0,"tokens":[
              {{"id":"a","name":"A","user":"alice","sha256":"{PW}","expires":"2027-01-01T00:00:00Z",
                "ips":["10.0.0.0/8"],"run_as":["Bob","*"]}},
              {{"id":"b","token":"tg_plain"}}]}}"#
        ))
        .unwrap();
        assert_eq!(c.max_body_bytes, 2048);
        let (i, t) = c.find("password").unwrap();
        assert_eq!(
            (i, t.id.as_str(), t.user.as_deref()),
            (0, "a", Some("alice"))
        );
        assert!(t.run_as.anyone && t.run_as.permits("bob"));
        assert_eq!(c.find("tg_plain").map(|(i, _)| i), Some(1));
        assert!(c.find("tg_other").is_none());
    }

    fn err_of(s: &str) -> ConfigError {
        match load_str(s) {
            Ok(_) => panic!("config should be refused: {s}"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_name_field_and_token() {
        let e = err_of(r#"{"tokens":[{"id":"ci","sha256":"ABC"}]}"#);
        assert_eq!(
            (e.field.as_str(), e.token.as_deref()),
            ("tokens[0].sha256", Some("ci"))
        );
        let e = err_of(r#"{"tokens":[{"id":"ci","token":"x","bogus":1}]}"#);
        assert_eq!(e.field, "tokens[0].bogus");
        assert!(e.to_string().contains("(token `ci`)"), "{e}");
        let e = err_of(r#"{"secure_mode":true,"tokens":[{"id":"s","token":"tg_x"}]}"#);
        assert_eq!(
            (e.field.as_str(), e.token.as_deref()),
            ("tokens[0].token", Some("s"))
        );
        let e = err_of(r#"{"tokens":[{"id":"a","token":"x"},{"id":"a","token":"y"}]}"#);
        assert!(e.message.contains("duplicate token id"), "{e}");
        let e = err_of(r#"{"tokens":[{"id":"a","token":"x"},{"id":"b","token":"x"}]}"#);
        assert!(e.message.contains("token `a`"), "{e}");
        let e = err_of(&format!(
            r#"{{"tokens":[{{"id":"a","token":"x"}},{{"id":"b","sha256":"{}"}}]}}"#,
            digest::to_hex(&digest::sha256(b"x"))
        ));
        assert_eq!(e.token.as_deref(), Some("b"));
        let e = err_of(r#"{"tokens":[{"id":"a","token":"x","expires":"tomorrow"}]}"#);
        assert_eq!(e.field, "tokens[0].expires");
        let e = err_of(r#"{"tokens":[{"id":"a","token":"x","ips":["10.0.0.0/40"]}]}"#);
        assert_eq!(e.field, "tokens[0].ips[0]");
        let e = err_of(r#"{"tokens":[{"id":"a","token":"x","ips":[]}]}"#);
        assert_eq!(e.field, "tokens[0].ips");
        let e = err_of(r#"{"tokens":[{"id":"a","token":"has space"}]}"#);
        assert_eq!(e.field, "tokens[0].token");
        let e = err_of(r#"{"tokens":[{"id":"a","token":"a,b"}]}"#);
        assert_eq!(e.field, "tokens[0].token");
        let e = err_of(r#"{"auth_methods":"digest"}"#);
        assert_eq!(e.field, "auth_methods");
        let e = err_of(r#"{"frobnicate":true}"#);
        assert_eq!(e.field, "frobnicate");
        let e = err_of(r#"{"tokens":[{"token":"x"}]}"#);
        assert_eq!(e.field, "tokens[0].id");
        let e = err_of(r#"{"tokens":[{"id":"a","token":"x","revoked":"yes"}]}"#);
        assert_eq!(e.field, "tokens[0].revoked");
        let e = err_of(r#"{"identity":{"header":"authorization"}}"#);
        assert_eq!(e.field, "identity.header");
        let e = err_of(r#"{"audit":{"queue_max_lines":10,"batch_max_lines":20}}"#);
        assert_eq!(e.field, "audit.queue_max_lines");
        let e = err_of("{\n  \"tokens\": [,]\n}");
        assert_eq!((e.field.as_str(), e.line), ("(document)", Some(2)));
        let e = err_of(r#"{"protected_paths":["rest/"]}"#);
        assert_eq!(e.field, "protected_paths[0]");
    }

    #[test]
    fn tokens_stream_in_any_key_order() {
        // secure_mode after the tokens still refuses a plaintext one.
        let e = err_of(r#"{"tokens":[{"id":"p","token":"tg_p"}],"secure_mode":true}"#);
        assert_eq!(
            (e.field.as_str(), e.token.as_deref()),
            ("tokens[0].token", Some("p"))
        );
        let e = err_of(r#"{"tokens":"tg_x"}"#);
        assert_eq!(e.field, "tokens");
        let e = err_of(r#"{"tokens":{"id":"a"}}"#);
        assert_eq!(e.field, "tokens");
        assert!(load_str(r#"{"tokens":null}"#).unwrap().tokens.is_empty());
        let e = err_of(
            r#"{"tokens":[{"id":"a","token":"x"},{"id":"b","sha256":"zz"}],"auth_methods":"both"}"#,
        );
        assert_eq!(
            (e.field.as_str(), e.token.as_deref()),
            ("tokens[1].sha256", Some("b"))
        );
        let e = err_of("{\"tokens\":[{\"id\":\"a\",\"token\":\"x\"}]\n,}");
        assert_eq!((e.field.as_str(), e.line), ("(document)", Some(2)));
        let e = err_of("[1]");
        assert_eq!(e.field, "(document)");
    }

    #[test]
    fn duplicate_keys_refused() {
        let e = err_of(
            "{\"tokens\":[{\"id\":\"a\",\"token\":\"x\",\n \"revoked\":true,\"revoked\":false}]}",
        );
        // The position is the object holding the duplicate.
        assert_eq!(
            (e.field.as_str(), e.line, e.column),
            ("(document)", Some(1), Some(12))
        );
        assert!(e.message.contains("duplicate member name"), "{e}");
    }

    #[test]
    fn prefix_collisions_still_found() {
        let mut c =
            load_str(r#"{"tokens":[{"id":"a","token":"x"},{"id":"b","token":"y"}]}"#).unwrap();
        // Force both into one bucket: the second must still be found through the overflow.
        let first = prefix(&c.tokens[0].digest);
        c.index.by_prefix.clear();
        c.index.by_prefix.insert(first, 0);
        c.index.overflow = vec![1];
        assert_eq!(c.find("y").map(|(i, _)| i), Some(1));
        assert_eq!(c.find("x").map(|(i, _)| i), Some(0));
    }
}
