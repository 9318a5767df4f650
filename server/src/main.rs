//! tokengate-server: the token service (SPEC §15). It owns the token set in a database
//! (SQLite embedded, PostgreSQL for several instances), pushes the plugin configuration to
//! every subscribed Envoy over ECDS, and serves the admin API.
//!
//! The filter stays the enforcer: Envoys keep deciding from the last configuration they
//! accepted while the service is away. Nothing here decides a request; the core does, for
//! the filter, `tokenctl` and this service alike.
//!
//! Layout: `api` (routes and handlers) → `store` (the database) and `plugin` (the
//! configuration, checked by the core) → `publish` (snapshots) → `xds` (ECDS streams).

mod api;
mod audit;
mod console;
mod export;
mod forward;
mod notify;
mod plugin;
mod publish;
mod secret;
mod store;
mod suggest;
mod xds;

use std::io::Read;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::publish::{Publisher, Target};
use crate::store::{Backend, Store};

#[derive(Parser, Debug)]
#[command(
    name = "tokengate-server",
    version,
    about = "tokengate's token service: tokens in a database, pushed to every Envoy over ECDS, managed by an API"
)]
struct Cli {
    /// Database: sqlite://PATH (created and migrated on start) or postgres://USER:PASS@HOST:PORT/DB.
    #[arg(
        long,
        env = "TOKENGATE_DB",
        default_value = "sqlite://tokengate.db",
        global = true
    )]
    db: String,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Debug, Clone)]
struct ServeArgs {
    /// HTTP: the console, /api/v1, the audit receiver /audit, /healthz and /metrics.
    #[arg(long, env = "TOKENGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// gRPC: Envoy's Extension Config Discovery Service.
    #[arg(long, env = "TOKENGATE_XDS", default_value = "127.0.0.1:18000")]
    xds: SocketAddr,
    /// The filter module's path as Envoy sees it (put into the pushed vm_config).
    #[arg(long, env = "TOKENGATE_WASM", default_value = "dist/tokengate.wasm")]
    wasm: String,
    /// Push the native build (an Envoy dynamic module of this name, e.g. tokengate_native,
    /// found by Envoy in ENVOY_DYNAMIC_MODULES_SEARCH_PATH) instead of the wasm filter.
    #[arg(long, env = "TOKENGATE_NATIVE_MODULE")]
    native_module: Option<String>,
    /// Base URL of the Envoy in front of the app, used in the snippets a new token comes with.
    #[arg(
        long,
        env = "TOKENGATE_PUBLIC_URL",
        default_value = "http://localhost:10000"
    )]
    public_url: String,
    /// PEM certificate chain for the xDS port (TLS). Needs --xds-tls-key and --xds-client-ca.
    #[arg(long, env = "TOKENGATE_XDS_TLS_CERT")]
    xds_tls_cert: Option<String>,
    /// PEM private key for --xds-tls-cert.
    #[arg(long, env = "TOKENGATE_XDS_TLS_KEY")]
    xds_tls_key: Option<String>,
    /// PEM CA bundle: only Envoys with a client certificate it signed may subscribe.
    #[arg(long, env = "TOKENGATE_XDS_CLIENT_CA")]
    xds_client_ca: Option<String>,
    /// Audit lines older than this many days are deleted (usage totals stay).
    #[arg(long, env = "TOKENGATE_AUDIT_RETENTION_DAYS", default_value_t = 90)]
    audit_retention_days: u32,
    /// Re-send stored audit lines to this log pipeline (NDJSON POSTs, at least once, in order).
    #[arg(long, env = "TOKENGATE_AUDIT_FORWARD")]
    audit_forward: Option<String>,
    /// `Authorization` value for --audit-forward POSTs.
    #[arg(long, env = "TOKENGATE_AUDIT_FORWARD_AUTHORIZATION")]
    audit_forward_authorization: Option<String>,
    /// Most lines held for --audit-forward while the pipeline is away; beyond, the oldest go.
    #[arg(long, env = "TOKENGATE_AUDIT_FORWARD_QUEUE", default_value_t = 100_000)]
    audit_forward_queue: usize,
    /// POST notices here (JSON: token.expiring, token.unused, token.revoked).
    #[arg(long, env = "TOKENGATE_NOTIFY_URL")]
    notify_url: Option<String>,
    /// A token with no allowed call for this many days gets a token.unused notice.
    #[arg(long, env = "TOKENGATE_UNUSED_NOTICE_DAYS", default_value_t = 90)]
    unused_notice_days: u32,
    /// Revoke tokens with no allowed call for this many days (off unless given).
    #[arg(long, env = "TOKENGATE_REVOKE_UNUSED_AFTER_DAYS")]
    revoke_unused_after_days: Option<u32>,
    /// How often notices and auto-revoke are looked for, in seconds.
    #[arg(long, env = "TOKENGATE_NOTIFY_SCAN_SECONDS", default_value_t = 60)]
    notify_scan_seconds: u64,
    /// How often another instance's changes are looked for (PostgreSQL), in milliseconds.
    #[arg(long, env = "TOKENGATE_POLL_MS", default_value_t = 250)]
    poll_ms: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage admins: passwords (console sign-in) and API keys.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the current token set for Istio (WasmPlugin) or plain Envoy, from the database.
    Export {
        /// wasmplugin: an Istio WasmPlugin manifest; envoy: an Envoy HTTP filter entry; json: the plugin configuration.
        #[arg(long, value_parser = ["wasmplugin", "envoy", "json"])]
        format: String,
        /// The module's URL (wasmplugin) or path (envoy).
        #[arg(long)]
        url: Option<String>,
        /// metadata.namespace of the WasmPlugin.
        #[arg(long, default_value = "istio-system")]
        namespace: String,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Add an admin (or set a new password): the password is read from stdin.
    Add {
        name: String,
    },
    /// Print a new API key for an admin, once (only its SHA-256 digest is stored).
    Key {
        name: String,
    },
    List,
    Remove {
        name: String,
    },
}

/// Counters for /metrics.
#[derive(Default)]
pub struct Metrics {
    pub changes: AtomicU64,
    pub pushes: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub audit_lines: AtomicU64,
    pub audit_refused: AtomicU64,
    pub audit_duplicates: AtomicU64,
}

/// Shared by every handler.
pub struct App {
    pub store: Store,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    pub opts: Opts,
    /// The value audit batches must carry as `authorization` (never logged).
    pub audit_authorization: String,
    pub forwarder: Option<Arc<forward::Forwarder>>,
    /// Wakes the notice sender when the scan queued something.
    pub notify_wake: tokio::sync::Notify,
}

pub struct Opts {
    pub public_url: String,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("tokengate-server: {msg}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOKENGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let store = match Store::open(&cli.db, Duration::from_secs(8)).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match cli.command {
        None => serve(store, cli.serve, &cli.db).await,
        Some(Command::Admin { command }) => admin(store, command).await,
        Some(Command::Export {
            format,
            url,
            namespace,
        }) => match export::run(&store, &format, url.as_deref(), &namespace).await {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

async fn admin(store: Store, command: AdminCommand) -> ExitCode {
    let now = now_ms();
    let valid = |n: &str| {
        !n.is_empty()
            && n.len() <= 100
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
    };
    match command {
        AdminCommand::Add { name } => {
            if !valid(&name) {
                return fail("an admin name is 1-100 letters, digits, `.`, `_`, `@` or `-`");
            }
            let mut password = String::new();
            if std::io::stdin().read_to_string(&mut password).is_err() {
                return fail("could not read the password from stdin");
            }
            let password = password.trim_end_matches(['\r', '\n']);
            if password.chars().count() < 12 {
                return fail("the password must have at least 12 characters");
            }
            let hash = match secret::hash_password(password) {
                Ok(h) => h,
                Err(e) => return fail(&e),
            };
            match store.add_admin(&name, Some(&hash), now).await {
                Ok(()) => {
                    eprintln!("tokengate-server: admin `{name}` can sign in");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        AdminCommand::Key { name } => {
            if !valid(&name) {
                return fail("an admin name is 1-100 letters, digits, `.`, `_`, `@` or `-`");
            }
            let key = match secret::new_admin_key() {
                Ok(k) => k,
                Err(e) => return fail(&e),
            };
            match store
                .add_admin_key(&name, &secret::sha256_hex(&key), now)
                .await
            {
                Ok(()) => {
                    println!("{key}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        AdminCommand::List => match store.admins().await {
            Ok(admins) => {
                for a in admins {
                    println!(
                        "{}\tpassword: {}\tapi keys: {}",
                        a.name,
                        if a.password_hash.is_some() {
                            "set"
                        } else {
                            "none"
                        },
                        a.keys
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        AdminCommand::Remove { name } => match store.remove_admin(&name).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(store::StoreError::NotFound) => fail(&format!("no admin `{name}`")),
            Err(e) => fail(&e.to_string()),
        },
    }
}

fn read_pem(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} `{path}`: {e}"))
}

async fn serve(store: Store, args: ServeArgs, db: &str) -> ExitCode {
    // The xDS stream carries token digests and the audit credential: plaintext only on
    // loopback, TLS with client certificates anywhere else.
    let tls = match (&args.xds_tls_cert, &args.xds_tls_key, &args.xds_client_ca) {
        (None, None, None) => None,
        (Some(c), Some(k), Some(ca)) => {
            let load = || -> Result<ServerTlsConfig, String> {
                let identity = Identity::from_pem(
                    read_pem(c, "--xds-tls-cert")?,
                    read_pem(k, "--xds-tls-key")?,
                );
                Ok(ServerTlsConfig::new()
                    .identity(identity)
                    .client_ca_root(Certificate::from_pem(read_pem(ca, "--xds-client-ca")?)))
            };
            match load() {
                Ok(t) => Some(t),
                Err(e) => return fail(&e),
            }
        }
        _ => return fail("--xds-tls-cert, --xds-tls-key and --xds-client-ca go together"),
    };
    if tls.is_none() && !args.xds.ip().is_loopback() {
        return fail(&format!(
            "--xds {} is not a loopback address: give --xds-tls-cert, --xds-tls-key and --xds-client-ca (the stream carries token digests and the audit credential)",
            args.xds
        ));
    }
    let audit_authorization = match secret::random_base62(40) {
        Ok(r) => match store
            .setting_or_insert("audit_authorization", &format!("Bearer tgs_{r}"))
            .await
        {
            Ok(v) => v,
            Err(e) => return fail(&e.to_string()),
        },
        Err(e) => return fail(&e),
    };
    let target = Target {
        wasm_path: args.wasm.clone(),
        native_module: args.native_module.clone(),
    };
    let publisher = match Publisher::start(store.clone(), target, audit_authorization.clone()).await
    {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let metrics = Arc::new(Metrics::default());
    let instance = format!(
        "{}-{}",
        std::process::id(),
        secret::random_base62(6).unwrap_or_default()
    );
    let poll = Duration::from_millis(match store.backend() {
        Backend::Postgres => args.poll_ms.max(20),
        // One instance per SQLite file: the poll is only a safety net.
        Backend::Sqlite => args.poll_ms.max(1000),
    });
    tokio::spawn(publisher.clone().run(poll));
    {
        let store = store.clone();
        let instance = instance.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if let Err(e) = store.nodes_seen(&instance, now_ms()).await {
                    tracing::warn!("refreshing the fleet: {e}");
                }
            }
        });
    }
    {
        let store = store.clone();
        let days = i64::from(args.audit_retention_days.max(1));
        tokio::spawn(async move {
            loop {
                match store
                    .delete_audit_before(now_ms() - days * 86_400_000)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        "retention: deleted {n} audit line(s) older than {days} days"
                    ),
                    Err(e) => tracing::warn!("retention: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
    }
    let forwarder = args.audit_forward.as_ref().map(|url| {
        let f = forward::Forwarder::new(
            url.clone(),
            args.audit_forward_authorization.clone(),
            args.audit_forward_queue,
        );
        tokio::spawn(f.clone().run());
        f
    });
    let app = Arc::new(App {
        store: store.clone(),
        publisher: publisher.clone(),
        metrics: metrics.clone(),
        opts: Opts {
            public_url: args.public_url.clone(),
        },
        audit_authorization,
        forwarder,
        notify_wake: tokio::sync::Notify::new(),
    });
    if args.notify_url.is_some() || args.revoke_unused_after_days.is_some() {
        let settings = notify::Settings {
            url: args.notify_url.clone(),
            unused_days: i64::from(args.unused_notice_days.max(1)),
            revoke_unused_after_days: args.revoke_unused_after_days.map(|d| i64::from(d.max(1))),
            scan: Duration::from_secs(args.notify_scan_seconds.max(1)),
        };
        tokio::spawn(notify::scan(app.clone(), settings));
        if let Some(url) = args.notify_url.clone() {
            tokio::spawn(notify::send(app.clone(), url));
        }
    }
    let http = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("--listen {}: {e}", args.listen)),
    };
    let grpc = match tokio::net::TcpListener::bind(args.xds).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("--xds {}: {e}", args.xds)),
    };
    let router = api::routes()
        .merge(console::routes())
        .with_state(app.clone());
    let ecds = xds::Ecds::new(publisher.clone(), store.clone(), instance.clone(), metrics);
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .tcp_nodelay(true);
    if let Some(t) = tls {
        builder = match builder.tls_config(t) {
            Ok(b) => b,
            Err(e) => return fail(&format!("xDS TLS: {e}")),
        };
    }
    let grpc_server = builder
        .add_service(ecds.into_service())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            shutdown(),
        );
    tracing::info!(
        listen = %args.listen,
        xds = %args.xds,
        db = %store::redact(db),
        version = %publisher.current().version,
        instance = %instance,
        "tokengate-server ready"
    );
    let http_server = axum::serve(http, router).with_graceful_shutdown(shutdown());
    let (h, g) = tokio::join!(http_server, grpc_server);
    if let Err(e) = h {
        return fail(&format!("HTTP: {e}"));
    }
    if let Err(e) = g {
        return fail(&format!("xDS: {e}"));
    }
    ExitCode::SUCCESS
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
