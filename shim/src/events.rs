//! Task events to containerd, delivered before `publish` returns.
//!
//! containerd-shim's `RemotePublisher` queues events and forwards them in
//! the background, with no way to learn that the queue is empty: a shim
//! that exits right after its last Delete could lose the `/tasks/delete`
//! event, and a retried event could overtake a later one. Here each event
//! is forwarded before `publish` returns (retried over a new connection if
//! the old one broke), so events leave in the order they were published
//! and none is pending when the shim exits.

use std::time::Duration;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use tokio::sync::Mutex;

/// How often a forward is tried before the event is given up (and logged).
const ATTEMPTS: u32 = 5;
/// How long containerd may take to accept one event.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Publisher {
    address: String,
    namespace: String,
    client: Mutex<Option<EventsClient>>,
}

impl Publisher {
    /// A publisher to containerd's ttrpc address (a path or `unix://…`).
    pub async fn connect(address: &str, namespace: &str) -> anyhow::Result<Publisher> {
        let address = match address.starts_with("unix://") {
            true => address.to_string(),
            false => format!("unix://{address}"),
        };
        let client = Client::connect(&address)
            .await
            .map_err(|e| anyhow::anyhow!("connect to containerd at {address}: {e}"))?;
        Ok(Publisher {
            address,
            namespace: namespace.to_string(),
            client: Mutex::new(Some(EventsClient::new(client))),
        })
    }

    /// Forwards one event; the lock keeps events in the order published.
    pub async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let any = match containerd_shim::util::convert_to_any(event) {
            Ok(any) => any,
            Err(e) => return log::error!("event {topic}: encode: {e}"),
        };
        let request = ForwardRequest {
            envelope: Some(Envelope {
                timestamp: Some(crate::task::timestamp(std::time::SystemTime::now())).into(),
                namespace: self.namespace.clone(),
                topic: topic.to_string(),
                event: Some(any).into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let mut client = self.client.lock().await;
        for attempt in 1..=ATTEMPTS {
            if client.is_none() {
                match Client::connect(&self.address).await {
                    Ok(c) => *client = Some(EventsClient::new(c)),
                    Err(e) => log::warn!("event {topic}: reconnect to containerd: {e}"),
                }
            }
            if let Some(events) = client.as_ref() {
                let ctx = containerd_shim::protos::ttrpc::context::with_timeout(
                    FORWARD_TIMEOUT.as_nanos() as i64,
                );
                match events.forward(ctx, &request).await {
                    Ok(_) => return,
                    Err(e) => {
                        log::warn!("event {topic}: forward (attempt {attempt}): {e}");
                        *client = None;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
        log::error!("event {topic}: not delivered after {ATTEMPTS} attempts");
    }
}
