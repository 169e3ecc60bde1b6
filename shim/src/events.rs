//! Task events to containerd: queued in the order they are published,
//! forwarded one after the other by a single task (retried over a new
//! connection if the old one broke), and flushed before the shim exits.
//!
//! containerd-shim's `RemotePublisher` also queues, but requeues a failed
//! event behind later ones and offers no way to wait for its queue to
//! empty: a shim exiting right after its last Delete could lose the
//! `/tasks/delete` event. Publishing never waits for containerd, so an RPC
//! that publishes under the task table's lock is never held up by it.

use std::time::Duration;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use tokio::sync::{mpsc, watch};

/// How often a forward is tried before the event is given up (and logged).
const ATTEMPTS: u32 = 5;
/// How long containerd may take to accept one event.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Publisher {
    namespace: String,
    queue: mpsc::UnboundedSender<(String, ForwardRequest)>,
    /// Events published and not yet delivered (or given up).
    pending: watch::Sender<usize>,
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
        let (queue, events) = mpsc::unbounded_channel();
        let (pending, _) = watch::channel(0);
        tokio::spawn(forward_all(
            address,
            EventsClient::new(client),
            events,
            pending.clone(),
        ));
        Ok(Publisher {
            namespace: namespace.to_string(),
            queue,
            pending,
        })
    }

    /// Queues one event; events leave in the order they were queued.
    pub fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
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
        self.pending.send_modify(|n| *n += 1);
        if self.queue.send((topic.to_string(), request)).is_err() {
            self.pending.send_modify(|n| *n -= 1);
            log::error!("event {topic}: the forwarder is gone");
        }
    }

    /// Waits until every queued event was delivered or given up, at most
    /// `limit`.
    pub async fn flush(&self, limit: Duration) {
        let mut pending = self.pending.subscribe();
        if tokio::time::timeout(limit, pending.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            log::warn!("{} events not delivered before exit", *pending.borrow());
        }
    }
}

async fn forward_all(
    address: String,
    client: EventsClient,
    mut events: mpsc::UnboundedReceiver<(String, ForwardRequest)>,
    pending: watch::Sender<usize>,
) {
    let mut client = Some(client);
    while let Some((topic, request)) = events.recv().await {
        forward(&address, &mut client, &topic, &request).await;
        pending.send_modify(|n| *n -= 1);
    }
}

async fn forward(
    address: &str,
    client: &mut Option<EventsClient>,
    topic: &str,
    request: &ForwardRequest,
) {
    for attempt in 1..=ATTEMPTS {
        if client.is_none() {
            match Client::connect(address).await {
                Ok(c) => *client = Some(EventsClient::new(c)),
                Err(e) => log::warn!("event {topic}: reconnect to containerd: {e}"),
            }
        }
        if let Some(events) = client.as_ref() {
            let ctx = containerd_shim::protos::ttrpc::context::with_timeout(
                FORWARD_TIMEOUT.as_nanos() as i64,
            );
            match events.forward(ctx, request).await {
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
