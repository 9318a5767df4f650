//! Envoy's Extension Config Discovery Service (state of the world, over gRPC): each stream
//! gets the current configuration when it subscribes and every new one as it is published;
//! ACKs and NACKs are recorded per node for `/api/v1/fleet`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::{
    ExtensionConfigDiscoveryService, ExtensionConfigDiscoveryServiceServer,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::publish::{Publisher, Snapshot, RESOURCE_NAME};
use crate::store::Store;
use crate::{now_ms, Metrics};

pub const TYPE_URL: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

pub struct Ecds {
    pub publisher: Arc<Publisher>,
    pub store: Store,
    pub instance: String,
    pub metrics: Arc<Metrics>,
    nonce: AtomicU64,
}

impl Ecds {
    pub fn new(
        publisher: Arc<Publisher>,
        store: Store,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> Ecds {
        Ecds {
            publisher,
            store,
            instance,
            metrics,
            nonce: AtomicU64::new(1),
        }
    }

    pub fn into_service(self) -> ExtensionConfigDiscoveryServiceServer<Ecds> {
        // A 100,000-token configuration is about 20 MB; the default limit would refuse it.
        ExtensionConfigDiscoveryServiceServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(usize::MAX)
    }
}

fn response(snap: &Snapshot, nonce: String) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: snap.version.clone(),
        resources: vec![snap.resource.clone()],
        type_url: TYPE_URL.into(),
        nonce,
        ..Default::default()
    }
}

type Out = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaOut = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExtensionConfigDiscoveryService for Ecds {
    type StreamExtensionConfigsStream = Out;
    type DeltaExtensionConfigsStream = DeltaOut;

    async fn stream_extension_configs(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Out>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<DiscoveryResponse, Status>>(4);
        let publisher = self.publisher.clone();
        let store = self.store.clone();
        let instance = self.instance.clone();
        let metrics = self.metrics.clone();
        let nonce_base = self.nonce.fetch_add(1 << 20, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut updates = publisher.subscribe();
            let mut node: Option<(String, i64)> = None;
            let mut sent: Option<(String, String)> = None; // (nonce, version)
            let mut subscribed = false;
            let mut n = nonce_base;
            loop {
                let send_now = tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(req)) => {
                            if node.is_none() {
                                let (id, cluster) = req
                                    .node
                                    .as_ref()
                                    .map(|n| (n.id.clone(), n.cluster.clone()))
                                    .unwrap_or_default();
                                let at = now_ms();
                                if let Err(e) = store.node_connected(&id, &cluster, &instance, at).await {
                                    tracing::warn!("recording node `{id}`: {e}");
                                }
                                tracing::info!(node = %id, cluster = %cluster, "Envoy subscribed");
                                node = Some((id, at));
                            }
                            if req.type_url != TYPE_URL && !req.type_url.is_empty() {
                                continue;
                            }
                            let node_id = node.as_ref().map(|n| n.0.clone()).unwrap_or_default();
                            match &sent {
                                Some((nonce, version)) if *nonce == req.response_nonce => {
                                    let error = req.error_detail.as_ref().map(|s| s.message.clone());
                                    if let Some(e) = &error {
                                        metrics.nacks.fetch_add(1, Ordering::Relaxed);
                                        tracing::warn!(node = %node_id, version = %version, "Envoy refused the configuration: {e}");
                                    } else {
                                        metrics.acks.fetch_add(1, Ordering::Relaxed);
                                    }
                                    let v = if error.is_some() { version.as_str() } else { req.version_info.as_str() };
                                    if let Err(e) = store.node_answered(&node_id, v, error.as_deref(), now_ms()).await {
                                        tracing::warn!("recording node `{node_id}`: {e}");
                                    }
                                    false
                                }
                                // An answer to an older response: superseded, nothing to do.
                                Some(_) if !req.response_nonce.is_empty() => false,
                                // A (re)subscription: what it names decides.
                                _ => {
                                    subscribed = req.resource_names.is_empty()
                                        || req.resource_names.iter().any(|r| r == RESOURCE_NAME);
                                    subscribed
                                }
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                    changed = updates.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        subscribed
                    }
                };
                if send_now {
                    let snap = updates.borrow_and_update().clone();
                    n += 1;
                    let nonce = n.to_string();
                    sent = Some((nonce.clone(), snap.version.clone()));
                    metrics.pushes.fetch_add(1, Ordering::Relaxed);
                    if tx.send(Ok(response(&snap, nonce))).await.is_err() {
                        break;
                    }
                }
            }
            if let Some((id, at)) = node {
                tracing::info!(node = %id, "Envoy stream closed");
                if let Err(e) = store.node_disconnected(&id, &instance, at, now_ms()).await {
                    tracing::warn!("recording node `{id}`: {e}");
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_extension_configs(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaOut>, Status> {
        Err(Status::unimplemented(
            "tokengate-server speaks state-of-the-world ECDS: use api_type GRPC, not DELTA_GRPC",
        ))
    }

    async fn fetch_extension_configs(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented(
            "use the streaming ECDS API (api_type GRPC)",
        ))
    }
}
