//! rumqttd's router, driven from one thread.
//!
//! The router keeps subscriptions (persistent sessions included) and delivers
//! what the gateway publishes to the devices that subscribed, with QoS 1
//! retransmission. Every device connection that subscribes gets a local link
//! to it; the gateway has one more link of its own to publish results on.
//!
//! rumqttd's link handles are synchronous: building one waits for the router,
//! and sending blocks while the router's channel is full. So every call into
//! the router happens on one dedicated thread (the "feeder"), fed by a
//! bounded queue: connections wait for room there (back-pressure), results
//! are dropped and counted when it is full, and no async task ever blocks.
//!
//! The router thread itself cannot be stopped (rumqttd keeps its own sender
//! to it); after shutdown it idles.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use futures_util::FutureExt;
use hashbrown::HashMap;
use parking_lot::RwLock;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet, Publish};
use rumqttd::{Notification, Router, RouterConfig};
use tokio::sync::{mpsc, oneshot};

/// Results pushed to the router per notification: batching amortizes the
/// router's per-event cost when many results go out at once.
const PUBLISH_BATCH: usize = 256;

/// Client id of the gateway's own link (router ids may not contain `+$#/`).
const RESULTS_CLIENT: &str = "emotion-gateway-results";

/// A link to the router, as the feeder knows it.
pub type LinkId = u64;

/// A new device link.
#[derive(Debug)]
pub struct Opened {
    pub link: LinkId,
    pub rx: LinkRx,
    /// The router had a session for this client id (persistent session).
    pub session_present: bool,
}

enum Cmd {
    Open {
        client_id: String,
        clean: bool,
        reply: oneshot::Sender<Result<Opened, String>>,
    },
    Packet {
        link: LinkId,
        packet: Box<Packet>,
    },
    Close {
        link: LinkId,
    },
    Publish {
        topic: Bytes,
        payload: Bytes,
    },
}

/// The router and its feeder thread.
#[derive(Debug)]
pub struct Broker {
    cmd: mpsc::Sender<Cmd>,
    subscribed: Arc<RwLock<HashSet<String>>>,
    feeder: Option<JoinHandle<()>>,
}

/// Publishes results through the gateway's link (cheap to clone).
#[derive(Debug, Clone)]
pub struct Publisher {
    cmd: mpsc::Sender<Cmd>,
    subscribed: Arc<RwLock<HashSet<String>>>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Open { client_id, .. } => write!(f, "Open({client_id})"),
            Cmd::Packet { link, .. } => write!(f, "Packet({link})"),
            Cmd::Close { link } => write!(f, "Close({link})"),
            Cmd::Publish { .. } => write!(f, "Publish"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("starting the MQTT router: {0}")]
    Router(String),
    #[error("starting the MQTT feeder thread: {0}")]
    Thread(std::io::Error),
}

impl Broker {
    /// Start the router (its own thread) and the feeder. `queue` bounds the
    /// feeder's queue.
    pub fn start(config: RouterConfig, queue: usize) -> Result<Broker, BrokerError> {
        let router = Router::new(0, config);
        // `spawn` unwraps the thread creation; turn that into an error.
        let router_tx =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| router.spawn()))
                .map_err(|_| BrokerError::Router("could not start the router thread".into()))?;
        let (cmd, rx) = mpsc::channel(queue.max(1));
        // The router's channel type is not nameable outside rumqttd; this
        // closure is the only thing that needs it.
        let make_link = move |client_id: &str, clean: bool, dynamic_filters: bool| {
            LinkBuilder::new(client_id, router_tx.clone())
                .clean_session(clean)
                .dynamic_filters(dynamic_filters)
                .build()
                .map_err(|e| e.to_string())
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let feeder = std::thread::Builder::new()
            .name("mqtt-router-feeder".into())
            .spawn(move || feeder(rx, make_link, ready_tx))
            .map_err(BrokerError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BrokerError::Router(e)),
            Err(_) => return Err(BrokerError::Router("the feeder thread stopped".into())),
        }
        Ok(Broker {
            cmd,
            subscribed: Arc::new(RwLock::new(HashSet::new())),
            feeder: Some(feeder),
        })
    }

    pub fn publisher(&self) -> Publisher {
        Publisher {
            cmd: self.cmd.clone(),
            subscribed: self.subscribed.clone(),
        }
    }

    pub fn links(&self) -> Links {
        Links {
            cmd: self.cmd.clone(),
            subscribed: self.subscribed.clone(),
        }
    }

    /// Stop the feeder once every handle is gone. Blocking.
    pub fn join(mut self) {
        let Broker { cmd, feeder, .. } = &mut self;
        drop(std::mem::replace(cmd, mpsc::channel(1).0));
        if let Some(t) = feeder.take()
            && t.join().is_err()
        {
            tracing::error!("MQTT feeder thread panicked");
        }
    }
}

/// What device connections use: open and close links, pass packets.
#[derive(Debug, Clone)]
pub struct Links {
    cmd: mpsc::Sender<Cmd>,
    subscribed: Arc<RwLock<HashSet<String>>>,
}

impl Links {
    pub async fn open(&self, client_id: String, clean: bool) -> Result<Opened, String> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Open {
                client_id,
                clean,
                reply,
            })
            .await
            .map_err(|_| "the broker is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "the broker is shutting down".to_owned())?
    }

    /// Pass a packet to the router (waits while the feeder's queue is full).
    pub async fn send(&self, link: LinkId, packet: Packet) -> bool {
        self.cmd
            .send(Cmd::Packet {
                link,
                packet: Box::new(packet),
            })
            .await
            .is_ok()
    }

    pub async fn close(&self, link: LinkId) {
        let _ = self.cmd.send(Cmd::Close { link }).await;
    }

    /// Note that a device subscribed to `topic`, so results for it are
    /// published from now on.
    pub fn note_subscription(&self, topic: &str) {
        if !self.subscribed.read().contains(topic) {
            self.subscribed.write().insert(topic.to_owned());
        }
    }
}

impl Publisher {
    /// Whether any device ever subscribed to `topic` (the router keeps
    /// persistent sessions' subscriptions, so the set only grows; it is
    /// bounded by the devices' own result topics).
    pub fn subscribed(&self, topic: &str) -> bool {
        self.subscribed.read().contains(topic)
    }

    /// Queue a QoS 0 publish; false when the queue is full (dropped).
    pub fn publish(&self, topic: String, payload: Bytes) -> bool {
        self.cmd
            .try_send(Cmd::Publish {
                topic: Bytes::from(topic),
                payload,
            })
            .is_ok()
    }
}

fn feeder<F>(
    mut rx: mpsc::Receiver<Cmd>,
    make_link: F,
    ready: std::sync::mpsc::SyncSender<Result<(), String>>,
) where
    F: Fn(&str, bool, bool) -> Result<(LinkTx, LinkRx, Notification), String>,
{
    // The gateway's own link creates filters for what it publishes
    // (`dynamic_filters`): without, a publish on a topic the router has no
    // filter for yet makes it drop the link.
    let (mut results, results_rx) = match make_link(RESULTS_CLIENT, true, true) {
        Ok((tx, rx, _)) => (tx, rx),
        Err(e) => {
            let _ = ready.send(Err(format!("creating the gateway's router link: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    // QoS 0 publishes get no answers, but keep the link's notifications
    // drained so that nothing can pile up in them.
    let drain = std::thread::Builder::new()
        .name("mqtt-results-drain".into())
        .spawn(move || {
            let mut rx = results_rx;
            while rx.recv().is_ok() {}
        });
    if let Err(e) = drain {
        tracing::warn!(error = %e, "could not start the results drain thread");
    }

    let mut links: HashMap<LinkId, LinkTx> = HashMap::new();
    let mut next_id: LinkId = 1;
    let mut batch: Vec<(Bytes, Bytes)> = Vec::with_capacity(PUBLISH_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let mut cmd = Some(first);
        while let Some(c) = cmd.take() {
            match c {
                Cmd::Publish { topic, payload } => {
                    batch.push((topic, payload));
                    if batch.len() >= PUBLISH_BATCH {
                        flush(&mut results, &mut batch);
                    }
                }
                other => {
                    // Keep the order of everything else relative to results.
                    flush(&mut results, &mut batch);
                    handle(other, &mut links, &mut next_id, &make_link);
                }
            }
            cmd = rx.try_recv().ok();
        }
        flush(&mut results, &mut batch);
    }
    // Every sender is gone: close what is left.
    for (_, mut tx) in links.drain() {
        disconnect(&mut tx);
    }
    tracing::debug!("MQTT feeder stopped");
}

fn handle<F>(cmd: Cmd, links: &mut HashMap<LinkId, LinkTx>, next_id: &mut LinkId, make_link: &F)
where
    F: Fn(&str, bool, bool) -> Result<(LinkTx, LinkRx, Notification), String>,
{
    match cmd {
        Cmd::Open {
            client_id,
            clean,
            reply,
        } => {
            let opened = make_link(&client_id, clean, false).map(|(tx, rx, ack)| {
                let session_present = match ack {
                    Notification::DeviceAck(ack) => {
                        matches!(Packet::from(ack), Packet::ConnAck(c, _) if c.session_present)
                    }
                    _ => false,
                };
                let id = *next_id;
                *next_id += 1;
                links.insert(id, tx);
                Opened {
                    link: id,
                    rx,
                    session_present,
                }
            });
            let _ = reply.send(opened.map_err(|e| format!("the router refused the link: {e}")));
        }
        Cmd::Packet { link, packet } => {
            if let Some(tx) = links.get_mut(&link) {
                // `send` is async in name only: it never awaits.
                match tx.send(*packet).now_or_never() {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(link, error = %e, "router link send failed"),
                    None => tracing::debug!(link, "router link send did not complete"),
                }
            }
        }
        Cmd::Close { link } => {
            if let Some(mut tx) = links.remove(&link) {
                disconnect(&mut tx);
            }
        }
        Cmd::Publish { .. } => {}
    }
}

/// Tell the router a link is gone (it keeps a persistent session's state).
fn disconnect(tx: &mut LinkTx) {
    let packet = Packet::Disconnect(
        Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        },
        None,
    );
    let _ = tx.send(packet).now_or_never();
}

/// Push a batch of results with one router notification.
fn flush(results: &mut LinkTx, batch: &mut Vec<(Bytes, Bytes)>) {
    let Some((last_topic, last_payload)) = batch.pop() else {
        return;
    };
    {
        let mut buf = results.buffer();
        for (topic, payload) in batch.drain(..) {
            buf.push_back(Packet::Publish(Publish::new(topic, payload, false), None));
        }
    }
    // Pushes the last one and notifies the router of all of them.
    if let Err(e) = results.publish(last_topic, last_payload) {
        tracing::warn!(error = %e, "publishing results to the router failed");
    }
}
