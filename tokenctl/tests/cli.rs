//! CLI tests: the built binary, every command and its error paths.
// Test code: helpers outside #[test] functions may unwrap too (clippy.toml covers #[test] only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokenctl"))
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit before reading its input (usage errors): ignore a broken pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tmp(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokenctl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    // Tests run in parallel and may write the same file: replace it atomically.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let part = dir.join(format!("{name}.{n}.part"));
    std::fs::write(&part, content).unwrap();
    std::fs::rename(&part, &p).unwrap();
    p
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

const PASSWORD_SHA: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

fn new_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["new", "--json"];
    all.extend_from_slice(args);
    let o = run(&all, "");
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

// ------------------------------------------------------------------ help

#[test]
fn help_has_examples() {
    for args in [
        vec!["--help"],
        vec!["new", "--help"],
        vec!["hash", "--help"],
        vec!["check", "--help"],
        vec!["explain", "--help"],
        vec!["snippet", "--help"],
    ] {
        let o = run(&args, "");
        assert_eq!(o.status.code(), Some(0));
        assert!(out(&o).contains("Examples:"), "{args:?}: {}", out(&o));
    }
    let o = run(&[], "");
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["frobnicate"], "");
    assert_eq!(o.status.code(), Some(2));
}

// ------------------------------------------------------------------ new

#[test]
fn new_prints_token_entry_and_snippets() {
    let o = run(
        &[
            "new",
            "--name",
            "CI bot",
            "--user",
            "ci-bot",
            "--expires",
            "90d",
            "--limit",
            "[post].*/rest/api/2/issue/KANBAN-100/comment.*",
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    let token = text
        .lines()
        .find(|l| l.starts_with("tg_"))
        .unwrap()
        .to_owned();
    assert_eq!(token.len(), 41);
    assert!(text.contains("SECRET"));
    assert!(text.contains("- id: ci-bot"));
    assert!(text.contains("'[post].*/rest/api/2/issue/KANBAN-100/comment.*'"));
    assert!(text.contains(&format!("curl -sS -u ci-bot:{token} ")));
    assert!(text.contains(&format!("Authorization: Bearer {token}")));
    assert!(text.contains("fetch("));
    // The digest in the entry is the digest `hash` computes.
    let h = run(&["hash"], &format!("{token}\n"));
    assert_eq!(h.status.code(), Some(0));
    let hex = out(&h).trim().to_owned();
    assert!(text.contains(&format!("sha256: {hex}")), "{text}");
}

#[test]
fn new_entry_pastes_into_a_config_that_checks_clean() {
    let j = new_json(&[
        "--user",
        "alice",
        "--limit",
        ".*/rest/api/2/issue/JRA.*",
        "--ip",
        "10.0.0.0/8",
        "--run-as",
        "bob",
        "--expires",
        "2099-01-01",
        "--indent",
        "2",
    ]);
    let token = j["token"].as_str().unwrap();
    assert!(token.starts_with("tg_"));
    let cfg = format!("tokens:\n{}", j["entry_yaml"].as_str().unwrap());
    let p = tmp("new-entry.yaml", &cfg);
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), cfg);
    assert_eq!(j["entry"]["expires"], "2099-01-01T00:00:00Z");
    // And the filter's decision recognises the token.
    let o = run(
        &[
            "explain",
            s(&p),
            "-X",
            "GET",
            "--url",
            "/rest/api/2/issue/JRA-7",
            "--basic",
            "alice",
            "--client-ip",
            "10.1.2.3",
        ],
        token,
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).starts_with("ALLOW"), "{}", out(&o));
}

#[test]
fn new_tokens_are_fresh_and_secure_mode_prints_the_token_once() {
    let a = new_json(&[]);
    let b = new_json(&[]);
    assert_ne!(a["token"], b["token"]);
    assert!(a["id"].as_str().unwrap().starts_with("tok-"));
    let o = run(&["new", "--user", "alice", "--secure"], "");
    assert_eq!(o.status.code(), Some(0));
    let text = out(&o);
    let token = text.lines().find(|l| l.starts_with("tg_")).unwrap();
    assert_eq!(text.matches(token).count(), 1, "{text}");
    assert!(text.contains("$TOKENGATE_TOKEN"));
    assert!(text.contains("process.env.TOKENGATE_TOKEN"));
}

#[test]
fn new_error_paths() {
    for (args, needle) in [
        (
            vec!["new", "--limit", "[get]/rest/(x"],
            "--limit #1, column",
        ),
        (vec!["new", "--limit", "(?<=a)b"], "--limit #1"),
        (vec!["new", "--ip", "10.0.0.0/40"], "--ip #1"),
        (vec!["new", "--user", " alice"], "--user"),
        (vec!["new", "--expires", "soon"], "--expires"),
        (vec!["new", "--expires", "2001-01-01"], "in the past"),
        (vec!["new", "--url", "jira/rest"], "--url"),
    ] {
        let o = run(&args, "");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(err(&o).contains(needle), "{args:?}: {}", err(&o));
        assert!(out(&o).is_empty(), "no token printed on error");
    }
    let o = run(&["new", "--limit", "rest/api/.*"], "");
    assert_eq!(o.status.code(), Some(0));
    assert!(err(&o).contains("can never match"), "{}", err(&o));
}

// ------------------------------------------------------------------ hash

#[test]
fn hash_reads_stdin() {
    let o = run(&["hash"], "password\n");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(out(&o).trim(), PASSWORD_SHA);
    let o = run(&["hash"], "password\r\n");
    assert_eq!(out(&o).trim(), PASSWORD_SHA);
    let o = run(&["hash"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("no token"));
    let o = run(&["hash"], "pass word\n");
    assert_eq!(o.status.code(), Some(2));
    // A mistyped tokenctl token is flagged by its checksum.
    let t = new_json(&[])["token"].as_str().unwrap().to_owned();
    let typo = format!("{}{}", &t[..40], if t.ends_with('a') { 'b' } else { 'a' });
    let o = run(&["hash"], &typo);
    assert_eq!(o.status.code(), Some(0));
    assert!(err(&o).contains("checksum"), "{}", err(&o));
    // Never from argv.
    let o = run(&["hash", "password"], "");
    assert_eq!(o.status.code(), Some(2));
}

// ------------------------------------------------------------------ check

#[test]
fn check_ok_configs() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/envoy.yaml");
    let o = run(&["check", root], "");
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("OK"));
    let p = tmp(
        "ok.json",
        &format!(
            r#"{{"auth_methods":"both","tokens":[{{"id":"a","user":"u","sha256":"{PASSWORD_SHA}"}}]}}"#
        ),
    );
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let o = run(&["check", "-"], "tokens: []\n");
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

#[test]
fn check_errors_have_file_line_and_column() {
    let p = tmp(
        "bad-line.yaml",
        "tokens:\n  - id: ci\n    token: x\n    limit_to:\n      - '[get]/rest/(x'\n",
    );
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(1));
    let text = out(&o);
    // Column: the quote at 9, the line text from 10, `(` is column 12 of the line -> 21.
    assert!(text.contains("bad-line.yaml:5:21: error:"), "{text}");
    assert!(text.contains("REJECTED"), "{text}");

    let p = tmp(
        "unknown.yaml",
        "tokens:\n  - id: ci\n    token: x\n    bogus: 1\n",
    );
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("unknown.yaml:4:12: error: field `tokens[0].bogus`"),
        "{}",
        out(&o)
    );

    let p = tmp(
        "bool.yaml",
        "tokens:\n  - id: ci\n    token: x\n    user: no\n",
    );
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("quote it"), "{}", out(&o));

    let p = tmp(
        "bad.json",
        "{\n  \"tokens\": [\n    {\"id\": \"a\", \"sha256\": \"ABC\"}\n  ]\n}\n",
    );
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("bad.json:3:"), "{}", out(&o));
}

#[test]
fn check_lints() {
    let p = tmp(
        "lint.yaml",
        &format!(
            "auth_methods: bearer\ntokens:\n  - id: old\n    user: u\n    sha256: {PASSWORD_SHA}\n    expires: '2020-01-01T00:00:00Z'\n  - id: nouser\n    token: tg_legacy\n    run_as: [bob]\n  - id: never\n    user: v\n    token: other\n    limit_to: ['rest/api/.*', '.*/rest/api/.*']\n"
        ),
    );
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(1));
    let text = out(&o);
    assert!(
        text.contains("lint.yaml:6:14: warning: token `old` expired"),
        "{text}"
    );
    assert!(text.contains("sets run_as but has no `user`"), "{text}");
    assert!(text.contains("can never be used"), "{text}");
    assert!(text.contains("stored in plaintext"), "{text}");
    assert!(text.contains("lint.yaml:13:16: warning: token `never`: restriction line `rest/api/.*` can never match"), "{text}");
    assert!(!text.contains("`.*/rest/api/.*` can never"), "{text}");
    // --at moves the clock: not expired in 2019.
    let o = run(&["check", "--at", "2019-01-01T00:00:00Z", s(&p)], "");
    assert!(!out(&o).contains("expired"), "{}", out(&o));
}

#[test]
fn check_unreadable_files() {
    let o = run(&["check", "/nonexistent/tokengate.yaml"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("cannot read"));
    let p = tmp("syntax.yaml", "tokens: [\n  - id: a\n");
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("syntax.yaml:"), "{}", err(&o));
    let p = tmp("syntax.json", "{\"tokens\": [,]}");
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("syntax.json:1:"), "{}", err(&o));
    let p = tmp("noenvoy.yaml", "static_resources:\n  listeners: []\n");
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("no tokengate filter"));
    let o = run(&["check", "-"], "");
    assert_eq!(o.status.code(), Some(2));
}

const ENVOY_STRING_VALUE: &str = r#"static_resources:
  listeners:
    - filter_chains:
        - filters:
            - typed_config:
                http_filters:
                  - name: tokengate
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: tokengate
                        root_id: tokengate
                        vm_config: { vm_id: tokengate }
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: |
                            {"tokens": [{"id": "a", "token": "x", "frob": 1}]}
"#;

#[test]
fn check_envoy_string_value_and_wasmplugin() {
    let p = tmp("envoy-sv.yaml", ENVOY_STRING_VALUE);
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(1));
    let text = out(&o);
    assert!(text.contains("envoy-sv.yaml:17:"), "{text}");
    assert!(text.contains("of the JSON string"), "{text}");
    assert!(text.contains("tokens[0].frob"), "{text}");

    let wp = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: tokengate\nspec:\n  phase: AUTHN\n  pluginConfig:\n    auth_methods: both\n    tokens:\n      - id: a\n        sha256: nothex\n";
    let p = tmp("wasmplugin.yaml", wp);
    let o = run(&["check", s(&p)], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("wasmplugin.yaml:11:17: error: field `tokens[0].sha256`"),
        "{}",
        out(&o)
    );
}

// ------------------------------------------------------------------ explain

fn restriction_config() -> PathBuf {
    tmp(
        "restrict.yaml",
        r#"auth_methods: both
tokens:
  - id: seed
    user: alice
    token: tg_seedTokenForCliTests
    limit_to:
      - ".*/rest/api/2/issue/JRA.*"
      - "[post].*/rest/api/2/issue/KANBAN-100/comment.*"
      - ".*/rest/extender/1.0/filter/user/.*[QueryParam::permissions==true]"
      - "[post].*/rest/api/2/filter[JsonData::editable==false][JsonData::favourite==false]"
  - id: expired
    user: bob
    token: tg_expiredTokenForCliTests
    expires: "2020-01-01T00:00:00Z"
  - id: iponly
    user: carol
    token: tg_ipTokenForCliTests
    ips: ["10.0.0.0/8"]
"#,
    )
}

fn explain(args: &[&str], token: &str) -> Output {
    let cfg = restriction_config();
    let mut all = vec!["explain", s(&cfg)];
    all.extend_from_slice(args);
    // s(&cfg) borrows cfg; keep it alive until the run.
    let o = run(&all, token);
    drop(cfg);
    o
}

#[test]
fn explain_allow_names_the_line() {
    let o = explain(
        &[
            "-X",
            "GET",
            "--url",
            "https://jira.example.com/rest/api/2/issue/JRA-12",
            "--basic",
            "alice",
        ],
        "tg_seedTokenForCliTests",
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert!(text.starts_with("ALLOW"), "{text}");
    assert!(text.contains("restriction line 1"), "{text}");
}

#[test]
fn explain_deny_gives_each_line_its_reason() {
    let o = explain(
        &[
            "-X",
            "GET",
            "--url",
            "/rest/api/2/issue/KANBAN-100/comment",
            "--bearer",
            "--json",
        ],
        "tg_seedTokenForCliTests",
    );
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["decision"], "deny");
    assert_eq!(j["status"], 403);
    assert_eq!(j["reason"], "restricted");
    let lines = j["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 4);
    assert!(lines[0]["why"]
        .as_str()
        .unwrap()
        .contains("does not match the URL pattern"));
    assert!(lines[1]["why"].as_str().unwrap().contains("method GET"));
    assert!(lines.iter().all(|l| l["matched"] == false));
}

#[test]
fn explain_query_and_body_conditions() {
    let o = explain(
        &[
            "-X",
            "GET",
            "--url",
            "/rest/extender/1.0/filter/user/bob?permissions=false",
            "--basic",
            "alice",
        ],
        "tg_seedTokenForCliTests",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("query parameter `permissions`: value `false` does not match"),
        "{}",
        out(&o)
    );

    let body = tmp(
        "filter.json",
        r#"{"name":"f","editable":false,"favourite":"false"}"#,
    );
    let o = explain(
        &[
            "-X",
            "POST",
            "--url",
            "/rest/api/2/filter",
            "--basic",
            "alice",
            "-H",
            "Content-Type: application/json",
            "--body",
            s(&body),
        ],
        "tg_seedTokenForCliTests",
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("restriction line 4"), "{}", out(&o));

    let body = tmp("filter-fav.json", r#"{"editable":false,"favourite":true}"#);
    let o = explain(
        &[
            "-X",
            "POST",
            "--url",
            "/rest/api/2/filter",
            "--basic",
            "alice",
            "-H",
            "Content-Type: application/json",
            "--body",
            s(&body),
            "--json",
        ],
        "tg_seedTokenForCliTests",
    );
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["status"], 403);
    assert!(
        j["lines"][3]["why"].as_str().unwrap().contains("favourite"),
        "{j}"
    );

    // Wrong media type: 415, as the filter answers.
    let o = explain(
        &[
            "-X",
            "POST",
            "--url",
            "/rest/api/2/filter",
            "--basic",
            "alice",
            "-H",
            "Content-Type: text/plain",
            "--body",
            s(&body),
            "--json",
        ],
        "tg_seedTokenForCliTests",
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["status"], 415, "{j}");
}

#[test]
fn explain_authentication_outcomes() {
    let status = |args: &[&str], tok: &str| -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let o = explain(&a, tok);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}{}", out(&o), err(&o)))
    };
    let j = status(
        &[
            "-X",
            "GET",
            "--url",
            "/rest/api/2/issue/JRA-1",
            "--basic",
            "alice",
        ],
        "tg_unknownToken",
    );
    assert_eq!(
        (j["status"].clone(), j["reason"].clone()),
        (401.into(), "unknown_token".into())
    );
    let j = status(
        &[
            "-X",
            "GET",
            "--url",
            "/rest/api/2/issue/JRA-1",
            "--basic",
            "bob",
        ],
        "tg_expiredTokenForCliTests",
    );
    assert_eq!(j["reason"], "expired");
    let j = status(
        &[
            "-X",
            "GET",
            "--url",
            "/rest/api/2/issue/JRA-1",
            "--basic",
            "bob",
            "--at",
            "2019-06-01T00:00:00Z",
        ],
        "tg_expiredTokenForCliTests",
    );
    assert_eq!(j["decision"], "allow");
    let j = status(
        &["-X", "GET", "--url", "/rest/x", "--basic", "carol"],
        "tg_ipTokenForCliTests",
    );
    assert_eq!(j["reason"], "ip");
    let j = status(
        &[
            "-X",
            "GET",
            "--url",
            "/rest/x",
            "--basic",
            "carol",
            "--client-ip",
            "10.9.9.9",
        ],
        "tg_ipTokenForCliTests",
    );
    assert_eq!(j["decision"], "allow");
    let j = status(
        &["-X", "GET", "--url", "/rest/x", "--basic", "alice"],
        "a-password",
    );
    assert_eq!(j["decision"], "pass");
    let j = status(
        &[
            "-X",
            "GET",
            "--url",
            "/secure/Dashboard.jspa",
            "--basic",
            "alice",
        ],
        "tg_seedTokenForCliTests",
    );
    assert_eq!(j["decision"], "pass");
    let j = status(
        &[
            "-X",
            "GET",
            "--url",
            "/rest/api/2/issue/JRA-1/../../x",
            "--basic",
            "alice",
        ],
        "tg_seedTokenForCliTests",
    );
    assert_eq!(j["status"], 400);
    let j = status(
        &[
            "-X",
            "GET",
            "--url",
            "/rest/x",
            "-H",
            "Authorization: Basic !!!",
        ],
        "",
    );
    assert_eq!(j["reason"], "malformed_credentials");
}

#[test]
fn explain_error_paths() {
    for (args, needle) in [
        (vec!["-X", "GET", "--url", "rest/x"], "--url"),
        (vec!["-X", "G T", "--url", "/rest/x"], "--method"),
        (
            vec!["-X", "GET", "--url", "/rest/x", "-H", "nocolon"],
            "--header",
        ),
        (
            vec![
                "-X",
                "GET",
                "--url",
                "/rest/x",
                "--body",
                "/nonexistent/body.json",
            ],
            "--body",
        ),
        (
            vec!["-X", "GET", "--url", "/rest/x", "--at", "yesterday"],
            "--at",
        ),
        (
            vec![
                "-X",
                "GET",
                "--url",
                "/rest/x",
                "--bearer",
                "-H",
                "Authorization: Bearer x",
            ],
            "not both",
        ),
    ] {
        let o = explain(&args, "tok");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(err(&o).contains(needle), "{args:?}: {}", err(&o));
    }
    let o = explain(&["-X", "GET", "--url", "/rest/x", "--bearer"], "");
    assert_eq!(o.status.code(), Some(2));
    let bad = tmp("broken.yaml", "tokens:\n  - id: a\n");
    let o = run(&["explain", s(&bad), "-X", "GET", "--url", "/rest/x"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("broken.yaml:2:"), "{}", err(&o));
    let o = run(
        &[
            "explain",
            "/nonexistent.yaml",
            "-X",
            "GET",
            "--url",
            "/rest/x",
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["explain", "x.yaml", "--url", "/rest/x"], "");
    assert_eq!(o.status.code(), Some(2), "--method is required");
}

// ------------------------------------------------------------------ snippet

#[test]
fn snippet_basic_and_bearer() {
    let o = run(
        &[
            "snippet",
            "--url",
            "https://jira.example.com/rest/api/2/myself",
            "--user",
            "alice",
        ],
        "tg_abc\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    assert!(
        text.contains("curl -sS -u alice:tg_abc https://jira.example.com/rest/api/2/myself"),
        "{text}"
    );
    assert!(
        text.contains("btoa(\"alice\" + \":\" + \"tg_abc\")"),
        "{text}"
    );
    let o = run(
        &["snippet", "--url", "https://j/rest/x?a=1&b=2", "--bearer"],
        "tg_abc",
    );
    assert_eq!(o.status.code(), Some(0));
    let text = out(&o);
    assert!(
        text.contains("curl -sS -H 'Authorization: Bearer tg_abc' 'https://j/rest/x?a=1&b=2'"),
        "{text}"
    );
    assert!(text.contains("Authorization: \"Bearer tg_abc\""), "{text}");
}

#[test]
fn snippet_error_paths() {
    let o = run(&["snippet", "--url", "https://j/rest/x"], "tg_abc");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--user"));
    let o = run(&["snippet", "--url", "https://j/rest/x", "--bearer"], "");
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["snippet", "--url", "nope", "--bearer"], "tg_abc");
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["snippet", "--bearer"], "tg_abc");
    assert_eq!(o.status.code(), Some(2), "--url is required");
}
