//! tokenctl: create, check, explain and share tokengate tokens (SPEC §13).
//!
//! Every decision comes from the filter's own core crate (`tokengate-core`): configs load through
//! `config::from_value`/`config::load`, requests are decided by `policy::decide_headers` and
//! `policy::decide_body`, restriction lines are traced by `Restrictions::explain`.

mod check;
mod entry;
mod import;
mod source;
mod yaml;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tokengate_core::snippet::{self, Secret};
use tokengate_core::{config, digest, explain, time, token};

const AFTER_HELP: &str = "\
Examples:
  tokenctl new --name 'CI bot' --user ci-bot --expires 90d \\
      --limit '[get].*/rest/api/2/issue/JRA-.*'
  tokenctl hash < token.txt
  tokenctl check envoy/envoy.yaml
  tokenctl explain envoy/envoy.yaml --method GET \\
      --url https://jira.example.com/rest/api/2/issue/JRA-1 --basic ci-bot < token.txt
  tokenctl snippet --url https://jira.example.com/rest/api/2/myself --user ci-bot < token.txt

Tokens are read from standard input (typed with echo off on a terminal), never from the
command line, so they stay out of shell history and process lists.";

#[derive(Parser)]
#[command(
    name = "tokenctl",
    version,
    about = "Create, check and explain tokengate tokens (scoped REST API tokens for Jira/Confluence behind Envoy)",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a token: prints it once, its config entry (sha256 only) and curl/JavaScript snippets.
    #[command(after_help = "\
Examples:
  tokenctl new --name 'CI bot' --user ci-bot --expires 90d
  tokenctl new --id jira-comments --user ansible --expires 2027-01-01 \\
      --limit '[post].*/rest/api/2/issue/KANBAN-100/comment.*' --ip 10.0.0.0/8
  tokenctl new --user alice --secure --url https://jira.example.com/rest/api/2/myself

Paste the entry under `tokens:` in the plugin configuration (envoy.yaml:
...configuration.value.tokens), then reload Envoy. Only the printed token is secret; the
entry holds its SHA-256 digest and is safe to commit.

Token format: tg_ + 32 random base62 characters (about 190 bits from the OS) + a 6-character
base62 CRC-32 checksum of the random part. Secret scanners can match it with
  \\btg_[0-9A-Za-z]{38}\\b")]
    New(NewArgs),
    /// Print the SHA-256 digest (for `sha256:`) of a token read from standard input.
    #[command(after_help = "\
Examples:
  tokenctl hash              # type or paste the token; it is not echoed
  tokenctl hash < token.txt
  printf %s \"$TOKEN\" | tokenctl hash")]
    Hash,
    /// Load a config as the filter would and lint it: plugin config (YAML/JSON), envoy.yaml or WasmPlugin.
    #[command(after_help = "\
Exit status: 0 no findings, 1 errors or warnings, 2 the file cannot be read or holds no
tokengate configuration.

Examples:
  tokenctl check envoy/envoy.yaml
  tokenctl check tokens.yaml
  tokenctl check - < plugin-config.json")]
    Check(CheckArgs),
    /// Show the decision the filter would take for a request, and for each restriction line why.
    #[command(after_help = "\
Exit status: 0 allowed or passed through untouched, 1 denied, 2 usage or config error.

The token travels in an Authorization header: give it with --basic USER or --bearer (token
read from standard input), or spell the header yourself with --header.
With --body, a Content-Length header is added unless you give one (as curl does); give the
Content-Type yourself, as the filter checks it.

Examples:
  tokenctl explain envoy/envoy.yaml --method GET \\
      --url 'https://jira.example.com/rest/api/2/issue/JRA-1' --basic alice < token.txt
  tokenctl explain tokens.yaml --method POST --url /rest/api/2/filter \\
      --header 'Content-Type: application/json' --body filter.json --bearer < token.txt")]
    Explain(ExplainArgs),
    /// Print curl and JavaScript (fetch) snippets for a token read from standard input.
    #[command(after_help = "\
Examples:
  tokenctl snippet --url https://jira.example.com/rest/api/2/myself --user alice < token.txt
  tokenctl snippet --url https://jira.example.com/rest/api/2/myself --bearer < token.txt")]
    Snippet(SnippetArgs),
    /// Move tokens over from the original app: its token API's JSON list (label, user, token,
    /// limitTo, ip, validUntil), imported into the token service, or printed as config entries.
    #[command(after_help = "\
Examples:
  TOKENGATE_ADMIN_KEY=tga_... tokenctl import tokens.json --server http://127.0.0.1:8080
  tokenctl import tokens.json > entries.json      # plugin-config entries (sha256 only)

Scripts keep their secrets: the service stores only each token's SHA-256 digest. The
plaintext is never printed. Exit status: 0 all imported (or already there), 1 some failed,
2 the file cannot be read.")]
    Import(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The JSON list (`-` for standard input).
    file: String,
    /// tokengate-server base URL; without it, the entries are printed for a plugin config.
    #[arg(long)]
    server: Option<String>,
    /// Environment variable holding an admin API key (tga_…).
    #[arg(long, default_value = "TOKENGATE_ADMIN_KEY")]
    key_env: String,
}

#[derive(clap::Args)]
struct NewArgs {
    /// Stable id shown in audit lines (default: from --name, else tok-<digest prefix>).
    #[arg(long)]
    id: Option<String>,
    /// Free label for people.
    #[arg(long)]
    name: Option<String>,
    /// The only user who may use the token (recommended). Without it, any user may use it, with Basic only.
    #[arg(long)]
    user: Option<String>,
    /// Expiry: a duration (90d, 12w, 24h) or a date (2027-01-01, or RFC 3339 2027-01-01T12:00:00Z).
    #[arg(long, value_name = "90d|DATE")]
    expires: Option<String>,
    /// A restriction line (repeatable; any one matching allows), e.g. '[get].*/rest/api/2/issue/JRA-.*'.
    #[arg(long = "limit", value_name = "LINE")]
    limits: Vec<String>,
    /// Allowed client address or CIDR (repeatable).
    #[arg(long = "ip", value_name = "CIDR")]
    ips: Vec<String>,
    /// A user the token may act for through the contextUser header (repeatable; * = anyone).
    #[arg(long = "run-as", value_name = "USER")]
    run_as: Vec<String>,
    /// Print the token only once: snippets read it from $TOKENGATE_TOKEN instead of containing it.
    #[arg(long)]
    secure: bool,
    /// URL used in the snippets.
    #[arg(long, default_value = "https://jira.example.com/rest/api/2/myself")]
    url: String,
    /// Indent the config entry by this many spaces (to paste it straight into envoy.yaml).
    #[arg(long, default_value_t = 0)]
    indent: usize,
    /// Machine-readable output (JSON) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Plugin config (YAML or JSON), envoy.yaml / envoy.json, or a WasmPlugin manifest; `-` for stdin.
    file: String,
    /// Judge expiry against this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Print findings only, no summary line.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// Plugin config (YAML or JSON), envoy.yaml, or a WasmPlugin manifest.
    config: String,
    /// HTTP method as sent (GET, POST...).
    #[arg(long, short = 'X')]
    method: String,
    /// Full URL (https://jira.example.com/rest/...) or path with query (/rest/...?a=b).
    #[arg(long)]
    url: String,
    /// A request header 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "'K: V'")]
    headers: Vec<String>,
    /// Request body from this file.
    #[arg(long, value_name = "FILE")]
    body: Option<String>,
    /// Send the token (from stdin) as Basic auth with this username.
    #[arg(long, value_name = "USER", conflicts_with = "bearer")]
    basic: Option<String>,
    /// Send the token (from stdin) as a Bearer token.
    #[arg(long)]
    bearer: bool,
    /// Client address (for tokens with `ips`), e.g. 10.1.2.3.
    #[arg(long, value_name = "IP")]
    client_ip: Option<String>,
    /// Decide as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Machine-readable output (JSON).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SnippetArgs {
    /// The URL to call.
    #[arg(long)]
    url: String,
    /// Username for Basic auth.
    #[arg(long)]
    user: Option<String>,
    /// Use Authorization: Bearer instead of Basic.
    #[arg(long)]
    bearer: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::New(a) => cmd_new(&a),
        Command::Hash => cmd_hash(),
        Command::Check(a) => match at_time(a.at.as_deref()) {
            Ok(now) => check::run(&a.file, now, a.quiet),
            Err(e) => fail(&e),
        },
        Command::Explain(a) => cmd_explain(&a),
        Command::Snippet(a) => cmd_snippet(&a),
        Command::Import(a) => cmd_import(&a),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

fn fail(message: &str) -> i32 {
    eprintln!("tokenctl: error: {message}");
    2
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn at_time(at: Option<&str>) -> Result<i64, String> {
    match at {
        None => Ok(now_ms()),
        Some(t) => time::parse_rfc3339(t)
            .ok_or_else(|| format!("--at `{t}` is not an RFC 3339 time (2027-01-01T00:00:00Z)")),
    }
}

/// `90d`, `12w`, `24h`, `2027-01-01`, or RFC 3339 → RFC 3339 (seconds precision).
fn parse_expires(text: &str, now: i64) -> Result<String, String> {
    let t = text.trim();
    let unit = t.chars().last().unwrap_or(' ');
    let num = t.get(..t.len().saturating_sub(1)).unwrap_or("");
    let ms = if matches!(unit, 'd' | 'w' | 'h')
        && !num.is_empty()
        && num.bytes().all(|c| c.is_ascii_digit())
    {
        let n: i64 = num
            .parse()
            .map_err(|_| format!("--expires `{t}`: number too large"))?;
        let per = match unit {
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => 7 * 86_400_000,
        };
        if n == 0 || n > 100 * 366 {
            return Err(format!(
                "--expires `{t}`: give a positive duration of at most 100 years"
            ));
        }
        now + n * per
    } else if t.len() == 10 {
        time::parse_rfc3339(&format!("{t}T00:00:00Z"))
            .ok_or_else(|| format!("--expires `{t}` is not a date (YYYY-MM-DD)"))?
    } else {
        time::parse_rfc3339(t).ok_or_else(|| {
            format!("--expires `{t}`: use a duration (90d, 12w, 24h), a date (2027-01-01) or an RFC 3339 time (2027-01-01T00:00:00Z)")
        })?
    };
    if ms <= now {
        return Err(format!("--expires `{t}` is in the past"));
    }
    let secs = ms - ms.rem_euclid(1000);
    Ok(time::format_rfc3339_ms(secs).replace(".000Z", "Z"))
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').chars().take(60).collect()
}

/// Which option a field of the generated entry came from.
fn option_of(field: &str) -> String {
    let f = field.strip_prefix("tokens[0].").unwrap_or(field);
    let name = f.split(['[', '.']).next().unwrap_or(f);
    let index = f
        .split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    let opt = match name {
        "limit_to" => "--limit",
        "ips" => "--ip",
        "run_as" => "--run-as",
        other => return format!("--{other}"),
    };
    match index {
        Some(i) => format!("{opt} #{}", i + 1),
        None => opt.to_owned(),
    }
}

fn cmd_new(a: &NewArgs) -> i32 {
    let now = now_ms();
    let expires = match a
        .expires
        .as_deref()
        .map(|e| parse_expires(e, now))
        .transpose()
    {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    if let Err(e) = explain::target_of(&a.url) {
        return fail(&e);
    }
    let secret = match token::generate() {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let hex = digest::to_hex(&digest::sha256(secret.as_bytes()));
    let id = match (&a.id, &a.name) {
        (Some(id), _) => id.clone(),
        (None, Some(name)) if !slug(name).is_empty() => slug(name),
        _ => format!("tok-{}", hex.get(..8).unwrap_or("")),
    };
    let mut entry = serde_json::Map::new();
    entry.insert("id".into(), json!(id));
    if let Some(n) = &a.name {
        entry.insert("name".into(), json!(n));
    }
    if let Some(u) = &a.user {
        entry.insert("user".into(), json!(u));
    }
    entry.insert("sha256".into(), json!(hex));
    if let Some(e) = &expires {
        entry.insert("expires".into(), json!(e));
    }
    if !a.ips.is_empty() {
        entry.insert("ips".into(), json!(a.ips));
    }
    if !a.run_as.is_empty() {
        entry.insert("run_as".into(), json!(a.run_as));
    }
    if !a.limits.is_empty() {
        entry.insert("limit_to".into(), json!(a.limits));
    }
    let entry = Value::Object(entry);
    // Validate with the filter's loader: what we print must load.
    let probe = json!({"auth_methods": "both", "tokens": [entry.clone()]});
    if let Err(e) = config::from_value(&probe) {
        let mut msg = format!("{}: {}", option_of(&e.field), e.message);
        if let (Some(l), Some(c)) = (e.line, e.column) {
            if e.field.contains("limit_to") {
                msg = format!("--limit #{l}, column {c}: {}", e.message);
            }
        }
        return fail(&msg);
    }
    for (i, line) in a.limits.iter().enumerate() {
        if let Some(why) = check::never_matches(line, &["/rest/".to_owned()]) {
            eprintln!(
                "tokenctl: warning: --limit #{} can never match under the default protected_paths: {why}",
                i + 1
            );
        }
    }
    if a.user.is_none() {
        eprintln!("tokenctl: note: no --user: anyone who holds this token can use it as any user (Basic only). Binding it with --user is recommended.");
    }
    if a.user.is_none() && !a.run_as.is_empty() {
        eprintln!("tokenctl: warning: --run-as without --user lets any Basic username act as the listed users.");
    }
    let yaml_text = entry::yaml_entry(&entry, a.indent);
    // Round trip: the printed YAML must read back as the same entry.
    let reread = yaml::parse(&yaml_text)
        .ok()
        .and_then(|d| d.into_iter().next())
        .map(|n| n.to_json());
    if reread != Some(json!([entry])) {
        return fail("internal error: the generated YAML entry does not read back as written");
    }
    let env = "TOKENGATE_TOKEN";
    let sec = if a.secure {
        Secret::EnvVar(env)
    } else {
        Secret::Literal(&secret)
    };
    let user = a.user.as_deref();
    let mut snippets = vec![(
        "Basic",
        snippet::curl(&a.url, user, &sec, false),
        snippet::javascript(&a.url, user, &sec, false),
    )];
    if user.is_some() {
        snippets.push((
            "Bearer",
            snippet::curl(&a.url, user, &sec, true),
            snippet::javascript(&a.url, user, &sec, true),
        ));
    }
    if a.json {
        let j = json!({
            "token": secret,
            "sha256": hex,
            "id": id,
            "entry": entry,
            "entry_yaml": yaml_text,
            "scan_regex": token::SCAN_REGEX,
            "snippets": snippets.iter().map(|(k, c, js)| json!({"auth": k, "curl": c, "javascript": js})).collect::<Vec<_>>(),
        });
        println!("{j:#}");
        return 0;
    }
    let mut o = String::new();
    o.push_str(
        "=== SECRET: the token, shown this once. Store it now (password manager, CI secret). ===\n",
    );
    o.push_str(&secret);
    o.push_str("\n\n");
    o.push_str(
        "=== Config entry (not secret: only the SHA-256 digest). Paste it under `tokens:` ===\n",
    );
    o.push_str(
        "=== in the plugin configuration (envoy/envoy.yaml), then reload Envoy.          ===\n",
    );
    o.push_str(&yaml_text);
    o.push('\n');
    if a.secure {
        o.push_str(&format!(
            "=== Snippets (not secret: they read the token from ${env}; set it first, e.g. read -rs {env} && export {env}) ===\n"
        ));
    } else {
        o.push_str("=== Snippets (SECRET: they contain the token) ===\n");
    }
    for (kind, c, js) in &snippets {
        let note = if *kind == "Bearer" {
            " (needs auth_methods: bearer or both)"
        } else if user.is_none() {
            " (replace USERNAME with the Jira username)"
        } else {
            ""
        };
        o.push_str(&format!(
            "# {kind}{note}, curl:\n{c}\n# {kind}, JavaScript (Node.js 18+ or browser):\n{js}\n\n"
        ));
    }
    print!("{o}");
    let _ = std::io::stdout().flush();
    0
}

/// Reads a token from standard input: one line, with echo off on a terminal.
fn read_secret(prompt: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut line = String::new();
    if tty {
        eprint!("{prompt} (input hidden): ");
        let _ = std::io::stderr().flush();
        let echo_off = std::process::Command::new("stty")
            .arg("-echo")
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success());
        let read = stdin.lock().read_line(&mut line);
        if echo_off {
            let _ = std::process::Command::new("stty")
                .arg("echo")
                .stdin(std::process::Stdio::inherit())
                .status();
        }
        eprintln!();
        read.map_err(|e| format!("cannot read the token: {e}"))?;
    } else {
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the token from standard input: {e}"))?;
    }
    let token = line.trim_end_matches(['\n', '\r']).to_owned();
    if token.is_empty() {
        return Err(
            "no token on standard input (pipe it in, e.g. `tokenctl hash < token.txt`)".into(),
        );
    }
    if token.bytes().any(|c| !(0x21..=0x7e).contains(&c)) {
        return Err("the token holds spaces or non-printable characters (tokens are printable ASCII without spaces); check what you pasted".into());
    }
    Ok(token)
}

fn warn_shape(t: &str) {
    match token::shape(t) {
        token::Shape::BadChecksum => eprintln!("tokenctl: warning: this looks like a tokenctl token but its checksum does not match: a typo or a truncated copy?"),
        token::Shape::Malformed => eprintln!("tokenctl: warning: starts with `tg_` but is not in tokenctl's format ({} characters expected)", token::TOKEN_LEN),
        token::Shape::Valid | token::Shape::Foreign => {}
    }
}

fn cmd_hash() -> i32 {
    match read_secret("Token") {
        Ok(t) => {
            warn_shape(&t);
            println!("{}", digest::to_hex(&digest::sha256(t.as_bytes())));
            0
        }
        Err(e) => fail(&e),
    }
}

fn cmd_snippet(a: &SnippetArgs) -> i32 {
    if let Err(e) = explain::target_of(&a.url) {
        return fail(&e);
    }
    if !a.bearer && a.user.is_none() {
        return fail("Basic authentication needs --user USER (the Jira username); or pass --bearer for a token bound to a user");
    }
    let t = match read_secret("Token") {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    warn_shape(&t);
    let sec = Secret::Literal(&t);
    let kind = if a.bearer { "Bearer" } else { "Basic" };
    println!(
        "# {kind}, curl:\n{}\n# {kind}, JavaScript (Node.js 18+ or browser):\n{}",
        snippet::curl(&a.url, a.user.as_deref(), &sec, a.bearer),
        snippet::javascript(&a.url, a.user.as_deref(), &sec, a.bearer)
    );
    0
}

fn cmd_explain(a: &ExplainArgs) -> i32 {
    let now = match at_time(a.at.as_deref()) {
        Ok(n) => n,
        Err(e) => return fail(&e),
    };
    let target = match explain::target_of(&a.url) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let method = a.method.trim().to_owned();
    if method.is_empty() || !method.bytes().all(|c| c.is_ascii_alphabetic() || c == b'-') {
        return fail(&format!(
            "--method `{}` is not an HTTP method (GET, POST...)",
            a.method
        ));
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in &a.headers {
        match explain::parse_header(h) {
            Ok((k, v)) => headers.entry(k).or_default().push(v),
            Err(e) => return fail(&e),
        }
    }
    if (a.basic.is_some() || a.bearer) && headers.contains_key("authorization") {
        return fail("give the token either with --basic/--bearer or with an Authorization --header, not both");
    }
    if a.basic.is_some() || a.bearer {
        let t = match read_secret("Token") {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let value = match &a.basic {
            Some(user) => format!(
                "Basic {}",
                tokengate_core::credential::encode_base64(format!("{user}:{t}").as_bytes())
            ),
            None => format!("Bearer {t}"),
        };
        headers.insert("authorization".into(), vec![value]);
    }
    let body = match &a.body {
        None => None,
        Some(f) => match std::fs::read(f) {
            Ok(b) => Some(b),
            Err(e) => return fail(&format!("cannot read --body {f}: {e}")),
        },
    };
    if let Some(b) = &body {
        headers
            .entry("content-length".into())
            .or_insert_with(|| vec![b.len().to_string()]);
    }
    let client = a
        .client_ip
        .as_ref()
        .map(|ip| match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:0"),
            Ok(v4) => format!("{v4}:0"),
            Err(_) => ip.clone(),
        });
    let sources = match source::read(&a.config) {
        Ok(s) => s,
        Err(e) => return fail(&format!("{}: {}", a.config, e.message)),
    };
    let Some(src) = sources.first() else {
        return fail(&format!("{}: no tokengate configuration found", a.config));
    };
    if sources.len() > 1 {
        eprintln!(
            "tokenctl: note: {} holds {} tokengate configurations; using the first ({}, line {})",
            a.config,
            sources.len(),
            src.label,
            src.pos.line
        );
    }
    let loaded = source::load(src);
    let config = match loaded.result {
        Ok(c) => c,
        Err(e) => {
            let (pos, _) = source::error_position(src, loaded.tree.as_ref(), &e);
            return fail(&format!(
                "{}:{}:{}: the configuration does not load (Envoy would refuse it): {e}\n  run `tokenctl check {}` for details",
                a.config, pos.line, pos.column, a.config
            ));
        }
    };
    let req = explain::Request {
        method,
        target,
        headers,
        body,
        client,
    };
    let out = explain::explain(&config, &req, now);
    if a.json {
        println!("{}", out.json);
    } else {
        print!("{}", out.text);
    }
    i32::from(out.denied)
}

fn cmd_import(a: &ImportArgs) -> i32 {
    let text = if a.file == "-" {
        let mut t = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut t) {
            Ok(_) => t,
            Err(e) => return fail(&format!("cannot read standard input: {e}")),
        }
    } else {
        match std::fs::read_to_string(&a.file) {
            Ok(t) => t,
            Err(e) => return fail(&format!("cannot read {}: {e}", a.file)),
        }
    };
    let doc: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return fail(&format!(
                "{}:{}:{}: not JSON: {e}",
                a.file,
                e.line(),
                e.column()
            ))
        }
    };
    let entries = match import::convert(&doc) {
        Ok(e) => e,
        Err(e) => return fail(&format!("{}: {e}", a.file)),
    };
    let Some(server) = &a.server else {
        let list: Vec<Value> = entries.iter().map(import::config_entry).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "tokens": list })).unwrap_or_default()
        );
        return 0;
    };
    let key = match std::env::var(&a.key_env) {
        Ok(k) if !k.is_empty() => k,
        _ => {
            return fail(&format!(
                "set ${} to an admin API key (tokengate-server admin key NAME)",
                a.key_env
            ))
        }
    };
    let url = format!("{}/api/v1/tokens", server.trim_end_matches('/'));
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build(),
    );
    let mut failed = 0;
    for e in &entries {
        let id = e.request.get("id").and_then(Value::as_str).unwrap_or("?");
        let res = agent
            .post(&url)
            .header("Authorization", &format!("Bearer {key}"))
            .header("Content-Type", "application/json")
            .send(e.request.to_string().as_bytes());
        match res {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                let msg = body.get("error").and_then(Value::as_str).unwrap_or("");
                match status {
                    201 => println!("imported {id}"),
                    409 => println!("exists   {id} ({msg})"),
                    _ => {
                        failed += 1;
                        let field = body
                            .get("field")
                            .and_then(Value::as_str)
                            .map(|f| format!(" [{f}]"))
                            .unwrap_or_default();
                        eprintln!("tokenctl: {id}: {status}{field}: {msg}");
                    }
                }
            }
            Err(err) => return fail(&format!("{url}: {err}")),
        }
    }
    i32::from(failed > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_core_decoder() {
        for s in ["a", "ab", "abc", "alice:tg_x"] {
            let enc = tokengate_core::credential::encode_base64(s.as_bytes());
            assert_eq!(
                tokengate_core::credential::decode_base64(enc.as_bytes()).as_deref(),
                Some(s.as_bytes())
            );
        }
    }

    #[test]
    fn expiry_forms() {
        let now = time::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(parse_expires("90d", now).unwrap(), "2026-04-01T00:00:00Z");
        assert_eq!(
            parse_expires("2027-01-01", now).unwrap(),
            "2027-01-01T00:00:00Z"
        );
        assert!(parse_expires("2020-01-01", now).is_err());
        assert!(parse_expires("soon", now).is_err());
        assert!(parse_expires("0d", now).is_err());
    }

    #[test]
    fn slugs_and_options() {
        assert_eq!(slug("CI bot (prod)"), "ci-bot-prod");
        assert_eq!(option_of("tokens[0].limit_to[1]"), "--limit #2");
        assert_eq!(option_of("tokens[0].user"), "--user");
    }
}
