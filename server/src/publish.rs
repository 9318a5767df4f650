//! The current configuration and its pushes: one snapshot per configuration generation,
//! rebuilt from the database when the generation moves, handed to every ECDS stream.
//!
//! A change committed on this instance wakes the publisher at once; a change committed on
//! another instance (PostgreSQL) is seen by polling the one-row generation counter, which is
//! cheap and needs no connection of its own, and keeps working across database restarts
//! (LISTEN/NOTIFY would need both). Changes that arrive within [`COALESCE`] of each other
//! become one version, so a burst of API calls costs each Envoy one reload.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use serde_json::Value;
use tokengate_core::config::Config;
use tokio::sync::{watch, Notify};

use envoy_types::pb::envoy::config::core::v3::{
    async_data_source, data_source, AsyncDataSource, DataSource, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::dynamic_modules::v3::DynamicModuleConfig;
use envoy_types::pb::envoy::extensions::filters::http::dynamic_modules::v3::DynamicModuleFilter;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{
    plugin_config, FailurePolicy, PluginConfig, VmConfig,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, StringValue};

use crate::plugin;
use crate::store::Store;

/// ECDS resource name: the HTTP filter's name in Envoy's `config_discovery`.
pub const RESOURCE_NAME: &str = "tokengate";
pub const WASM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
pub const COALESCE: Duration = Duration::from_millis(100);

/// What every Envoy is sent now.
pub struct Snapshot {
    /// The string Envoy reports back as the version it accepted.
    pub version: String,
    pub generation: i64,
    /// The plugin configuration as pushed (with the audit credential: never shown as is).
    pub config: Value,
    /// `Any(TypedExtensionConfig)`, encoded once and shared by every stream.
    pub resource: Any,
    /// The same configuration compiled by the core, for `/api/v1/explain` and the receiver.
    pub compiled: Arc<Config>,
    pub tokens: usize,
    pub bytes: usize,
}

/// Which build Envoys run, and where they find it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The wasm module's path, for the pushed `vm_config`.
    pub wasm_path: String,
    /// Push the native build instead (SPEC §18): an Envoy dynamic module of this name, which
    /// Envoy finds as `lib<name>.so` in `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
    pub native_module: Option<String>,
}

pub const NATIVE_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";

pub struct Publisher {
    store: Store,
    target: Target,
    audit_authorization: String,
    wake: Notify,
    tx: watch::Sender<Arc<Snapshot>>,
}

impl Publisher {
    /// Builds the first snapshot (the service does not start on a configuration the core
    /// refuses).
    pub async fn start(
        store: Store,
        target: Target,
        audit_authorization: String,
    ) -> Result<Arc<Publisher>, String> {
        let first = build(&store, &target, &audit_authorization)
            .await
            .map_err(|e| format!("the stored configuration does not load: {e}"))?;
        let (tx, _) = watch::channel(Arc::new(first));
        Ok(Arc::new(Publisher {
            store,
            target,
            audit_authorization,
            wake: Notify::new(),
            tx,
        }))
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// A change was committed here: push it (after the coalescing window).
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// Runs for the life of the service.
    pub async fn run(self: Arc<Self>, poll: Duration) {
        loop {
            let woken = tokio::select! {
                () = self.wake.notified() => true,
                () = tokio::time::sleep(poll) => false,
            };
            if woken {
                tokio::time::sleep(COALESCE).await;
            }
            let generation = match self.store.generation().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!("reading the configuration generation: {e}");
                    continue;
                }
            };
            if generation == self.current().generation {
                continue;
            }
            match build(&self.store, &self.target, &self.audit_authorization).await {
                Ok(snap) => {
                    tracing::info!(
                        version = %snap.version,
                        tokens = snap.tokens,
                        bytes = snap.bytes,
                        "pushing a new configuration"
                    );
                    self.tx.send_replace(Arc::new(snap));
                }
                // Every change was checked before it was stored, so this means a database
                // edited by hand: keep pushing the last good configuration.
                Err(e) => tracing::error!(
                    generation,
                    "the stored configuration does not load; Envoys keep the previous one: {e}"
                ),
            }
        }
    }
}

/// The stored settings (defaults when none were set).
pub async fn settings(store: &Store) -> Result<Value, String> {
    match store.setting("plugin").await.map_err(|e| e.to_string())? {
        None => Ok(Value::Object(Default::default())),
        Some(text) => serde_json::from_str(&text).map_err(|e| format!("stored settings: {e}")),
    }
}

async fn build(
    store: &Store,
    target: &Target,
    audit_authorization: &str,
) -> Result<Snapshot, String> {
    // The generation is read first: a change committed while this runs moves it again, and
    // the next round rebuilds.
    let generation = store.generation().await.map_err(|e| e.to_string())?;
    let settings = settings(store).await?;
    let tokens = store.all_tokens().await.map_err(|e| e.to_string())?;
    let (config, text, compiled) = plugin::build_compiled(&settings, audit_authorization, &tokens)
        .map_err(|e| {
            format!(
                "{}{}",
                e.field
                    .map(|f| format!("field `{f}`: "))
                    .unwrap_or_default(),
                e.message
            )
        })?;
    let bytes = text.len();
    let resource = resource(target, text);
    Ok(Snapshot {
        version: generation.to_string(),
        generation,
        config,
        resource,
        compiled: Arc::new(compiled),
        tokens: tokens.len(),
        bytes,
    })
}

/// The Wasm filter of SPEC §15: V8, the module at `--wasm`, headers held for bodies,
/// fail-closed, the plugin configuration as a JSON string.
pub fn wasm_filter(target: &Target, configuration_json: String) -> Wasm {
    let configuration = Any {
        type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
        value: StringValue {
            value: configuration_json,
        }
        .encode_to_vec(),
    };
    Wasm {
        config: Some(PluginConfig {
            name: RESOURCE_NAME.into(),
            root_id: RESOURCE_NAME.into(),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: RESOURCE_NAME.into(),
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(AsyncDataSource {
                    specifier: Some(async_data_source::Specifier::Local(DataSource {
                        specifier: Some(data_source::Specifier::Filename(target.wasm_path.clone())),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            configuration: Some(configuration),
            failure_policy: FailurePolicy::FailClosed as i32,
            allow_on_headers_stop_iteration: Some(BoolValue { value: true }),
            ..Default::default()
        }),
    }
}

/// The native build's filter: the same plugin configuration as its `filter_config`.
fn native_filter(module: &str, configuration_json: String) -> DynamicModuleFilter {
    DynamicModuleFilter {
        dynamic_module_config: Some(DynamicModuleConfig {
            name: module.into(),
            do_not_close: true,
            ..Default::default()
        }),
        filter_name: RESOURCE_NAME.into(),
        filter_config: Some(Any {
            type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
            value: StringValue {
                value: configuration_json,
            }
            .encode_to_vec(),
        }),
        ..Default::default()
    }
}

fn resource(target: &Target, configuration_json: String) -> Any {
    let typed_config = match &target.native_module {
        Some(module) => Any {
            type_url: NATIVE_TYPE_URL.into(),
            value: native_filter(module, configuration_json).encode_to_vec(),
        },
        None => Any {
            type_url: WASM_TYPE_URL.into(),
            value: wasm_filter(target, configuration_json).encode_to_vec(),
        },
    };
    let typed = TypedExtensionConfig {
        name: RESOURCE_NAME.into(),
        typed_config: Some(typed_config),
    };
    Any {
        type_url: "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig".into(),
        value: typed.encode_to_vec(),
    }
}
