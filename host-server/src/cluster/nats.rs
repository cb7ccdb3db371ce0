//! The replicas' transport on NATS: a JetStream KV bucket says who holds
//! each device's stream, and plain subjects carry calls, results, cancels
//! and events (see `docs/CLUSTER.md`). Every background task runs under one
//! [`TaskTracker`] and stops with one [`CancellationToken`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use async_nats::{Client, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use fusion_protocol::{CallEvent, CallResult, ResultAck};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Bus, Cluster, Inbound, Sent, WireError};
use crate::error::{Error, Result};
use crate::events::HostEvent;

/// How [`Cluster::nats`] connects.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Prefix of every subject and of the KV bucket's name, so several
    /// apps (or test runs) can share one NATS. Letters, digits, `-`, `_`.
    /// Default `fusion`.
    pub prefix: String,
    /// How often a replica refreshes the devices it holds. A holder not
    /// heard from for three of these counts as gone. Default 5 s.
    pub heartbeat: Duration,
    /// How long a call request waits for the holder's answer. Default 2 s.
    pub request_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            prefix: "fusion".into(),
            heartbeat: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
        }
    }
}

impl Cluster {
    /// Joins the replicas that share `url`'s NATS (JetStream on, 2.9 or
    /// later) and `options.prefix`. Fails when NATS cannot be reached
    /// now; once joined, a lost connection is retried for ever, and
    /// calls to devices on other replicas fail with
    /// `cluster_unavailable` meanwhile.
    pub async fn nats(url: &str, options: NatsOptions) -> Result<Cluster, async_nats::Error> {
        let prefix = &options.prefix;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("the NATS prefix {prefix:?} must be letters, digits, `-` or `_`").into());
        }
        Ok(Cluster {
            bus: Arc::new(Nats::connect(url, options).await?),
        })
    }
}

/// Declares the KV bucket's stream if it is missing and opens the bucket.
/// The stream is declared as a KV bucket's (`KV_<bucket>` on
/// `$KV.<bucket>.>`, one value per key, rollups, no deletes through the
/// API) because `create_key_value` first reads account fields that NATS
/// 2.9 does not send. Memory storage: it is routing state, which the
/// holders write again after a NATS restart.
async fn ensure_bucket(
    js: &async_nats::jetstream::Context,
    bucket: &str,
) -> Result<kv::Store, async_nats::Error> {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("fusion-host: which replica holds each device's stream".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::Memory,
        max_age: Duration::from_secs(3600),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(bucket).await?)
}

struct Nats {
    client: Client,
    js: async_nats::jetstream::Context,
    bucket: String,
    kv: kv::Store,
    prefix: String,
    replica: String,
    options: NatsOptions,
    /// The devices whose streams this replica holds.
    held: Mutex<HashMap<String, Held>>,
    inbound: OnceLock<mpsc::UnboundedSender<Inbound>>,
    /// Live events to publish, in order, by one task.
    events: OnceLock<mpsc::UnboundedSender<HostEvent>>,
    /// Ends every background task.
    stop: CancellationToken,
    /// Every background task, the per-device readers included.
    tasks: TaskTracker,
}

struct Held {
    owner: String,
    session_id: String,
    /// The KV revision this replica wrote last.
    revision: u64,
    /// Reads the device's subject; aborted on release.
    task: JoinHandle<()>,
}

/// A KV value: who holds the device's stream.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    replica: String,
    session_id: String,
    owner: String,
}

/// What a replica announces on `<prefix>.holders`: devices it took or
/// let go of, and on every heartbeat all it holds.
#[derive(Debug, Serialize, Deserialize)]
struct HolderNews {
    replica: String,
    devices: Vec<HolderNote>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HolderNote {
    device_id: String,
    owner: String,
    held: bool,
}

/// What a replica sends on `<prefix>.all`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Broadcast {
    /// Events in the order they happened; as many as were waiting to
    /// be sent, so a busy replica sends few messages.
    Events {
        origin: String,
        events: Vec<HostEvent>,
    },
    Revoked {
        device_id: String,
    },
}

/// How long a question about a task waits for the replica that has it: only
/// that one answers, so a task no replica has costs this long to refuse.
const TASK_QUESTION_TIMEOUT: Duration = Duration::from_secs(2);

/// What a replica sends on a device's subjects.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ToHolder {
    Call { call: Box<CallEvent>, caller: String },
    Cancel { call_id: String, reason: String },
    Done { call_id: String },
    Displace { session_id: String, by: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct RoutedResult {
    device_id: String,
    result: Box<CallResult>,
    /// Sent by the replica holding the stream, which has forgotten the
    /// call already.
    from_holder: bool,
}

fn unavailable(device_id: &str) -> Error {
    Error::ClusterUnavailable {
        device_id: device_id.to_string(),
    }
}

fn to_json(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

impl Nats {
    /// Connects (the prefix already checked) and opens the bucket.
    async fn connect(url: &str, options: NatsOptions) -> Result<Arc<Nats>, async_nats::Error> {
        let replica = crate::credentials::new_id("rep_");
        let client = async_nats::ConnectOptions::new()
            .name(format!("fusion-host-server {replica}"))
            .connect(url)
            .await?;
        let js = async_nats::jetstream::new(client.clone());
        let bucket = format!("{}_devices", options.prefix);
        let kv = ensure_bucket(&js, &bucket).await?;
        Ok(Arc::new(Nats {
            client,
            js,
            bucket,
            kv,
            prefix: options.prefix.clone(),
            replica,
            options,
            held: Mutex::new(HashMap::new()),
            inbound: OnceLock::new(),
            events: OnceLock::new(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// Runs `task` under the tracker until it ends or the bus stops.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        })
    }

    fn device_subject(&self, device_id: &str) -> String {
        format!("{}.dev.{device_id}", self.prefix)
    }

    fn send(&self, msg: Inbound) {
        if let Some(tx) = self.inbound.get() {
            let _ = tx.send(msg);
        }
    }

    async fn publish(&self, subject: String, payload: Bytes) {
        if let Err(e) = self.client.publish(subject, payload).await {
            tracing::warn!(error = %e, "could not publish to the other replicas");
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes this replica into the device's key over whatever revision
    /// is there; returns the new revision and the holder it replaced.
    async fn write_holder(&self, device_id: &str, value: &Holder) -> Result<(u64, Option<Holder>)> {
        let payload = to_json(value);
        for _ in 0..8 {
            let entry = self.kv.entry(device_id).await.map_err(|e| {
                tracing::warn!(error = %e, device_id, "could not read the device's holder");
                unavailable(device_id)
            })?;
            let written = match &entry {
                Some(e) => self
                    .kv
                    .update(device_id, payload.clone(), e.revision)
                    .await
                    .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
                None => self
                    .kv
                    .create(device_id, payload.clone())
                    .await
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
            };
            match written {
                Ok(revision) => {
                    let before = entry
                        .filter(|e| e.operation == kv::Operation::Put)
                        .and_then(|e| serde_json::from_slice(&e.value).ok());
                    return Ok((revision, before));
                }
                // Another replica wrote in between: read again.
                Err(true) => continue,
                Err(false) => return Err(unavailable(device_id)),
            }
        }
        Err(unavailable(device_id))
    }

    /// Reads one device's subject for as long as this replica holds it.
    fn serve_device(self: &Arc<Self>, device_id: String, mut sub: Subscriber) -> JoinHandle<()> {
        let this = Arc::clone(self);
        self.spawn(async move {
            while let Some(msg) = sub.next().await {
                let Ok(to_holder) = serde_json::from_slice::<ToHolder>(&msg.payload) else {
                    continue;
                };
                let device_id = device_id.clone();
                match to_holder {
                    ToHolder::Call { call, caller } => {
                        let (held, answer) = oneshot::channel();
                        this.send(Inbound::Call {
                            device_id,
                            call,
                            caller,
                            held,
                        });
                        let held = answer.await.unwrap_or(false);
                        if let Some(reply) = msg.reply {
                            let _ = this.client.publish(reply, to_json(&held)).await;
                        }
                    }
                    ToHolder::Cancel { call_id, reason } => this.send(Inbound::Cancel {
                        device_id,
                        call_id,
                        reason,
                    }),
                    ToHolder::Done { call_id } => this.send(Inbound::Done { device_id, call_id }),
                    ToHolder::Displace { session_id, by } => this.send(Inbound::Displace {
                        device_id,
                        session_id,
                        by,
                    }),
                }
            }
        })
    }

    /// Results for calls made here, routed from other replicas.
    async fn serve_results(self: Arc<Self>) {
        let subject = format!("{}.replica.{}.result", self.prefix, self.replica);
        let Ok(mut sub) = self.client.subscribe(subject).await else {
            tracing::error!("could not subscribe to routed results");
            return;
        };
        while let Some(msg) = sub.next().await {
            let Ok(routed) = serde_json::from_slice::<RoutedResult>(&msg.payload) else {
                continue;
            };
            let (ack, answer) = oneshot::channel();
            self.send(Inbound::Result {
                device_id: routed.device_id,
                result: routed.result,
                from_holder: routed.from_holder,
                ack,
            });
            let answer = answer.await.unwrap_or(Err(WireError::CallUnknown));
            if let Some(reply) = msg.reply {
                let _ = self.client.publish(reply, to_json(&answer)).await;
            }
        }
    }

    /// Questions about MCP tasks, which every replica hears and only the
    /// one that has the task answers.
    async fn serve_tasks(self: Arc<Self>) {
        let Ok(mut sub) = self.client.subscribe(format!("{}.tasks", self.prefix)).await else {
            tracing::error!("could not subscribe to questions about tasks");
            return;
        };
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply else { continue };
            let (answer, answered) = oneshot::channel();
            self.send(Inbound::Task {
                request: msg.payload.to_vec(),
                reply: answer,
            });
            if let Ok(Some(answer)) = answered.await {
                let _ = self.client.publish(reply, Bytes::from(answer)).await;
            }
        }
    }

    /// Events and revocations from the other replicas.
    async fn serve_broadcasts(self: Arc<Self>) {
        let Ok(mut sub) = self.client.subscribe(format!("{}.all", self.prefix)).await else {
            tracing::error!("could not subscribe to the replicas' broadcasts");
            return;
        };
        while let Some(msg) = sub.next().await {
            match serde_json::from_slice::<Broadcast>(&msg.payload) {
                Ok(Broadcast::Events { origin, events }) if origin != self.replica => {
                    for event in events {
                        self.send(Inbound::Event(event));
                    }
                }
                Ok(Broadcast::Revoked { device_id }) => self.send(Inbound::Revoked { device_id }),
                _ => {}
            }
        }
    }

    /// Follows who holds each device, from the holders' announcements
    /// and heartbeats on `<prefix>.holders`; a holder not heard from for
    /// three heartbeats (a replica killed, say) counts as gone.
    async fn follow_holders(self: Arc<Self>) {
        let stale = self.options.heartbeat * 3;
        let Ok(mut sub) = self.client.subscribe(format!("{}.holders", self.prefix)).await else {
            tracing::error!("could not subscribe to the replicas' holder announcements");
            return;
        };
        self.publish(format!("{}.holders.sync", self.prefix), Bytes::new())
            .await;
        // Device → (owner, replica, last heard).
        let mut seen: HashMap<String, (String, String, Instant)> = HashMap::new();
        let mut sweep = tokio::time::interval(self.options.heartbeat);
        loop {
            tokio::select! {
                msg = sub.next() => {
                    let Some(msg) = msg else { return };
                    let Ok(news) = serde_json::from_slice::<HolderNews>(&msg.payload) else { continue };
                    let now = Instant::now();
                    for device in news.devices {
                        let moved = seen
                            .get(&device.device_id)
                            .is_none_or(|(_, replica, _)| *replica != news.replica);
                        if device.held {
                            seen.insert(
                                device.device_id.clone(),
                                (device.owner.clone(), news.replica.clone(), now),
                            );
                            if moved {
                                self.send(Inbound::Holder {
                                    device_id: device.device_id,
                                    owner: device.owner,
                                    replica: Some(news.replica.clone()),
                                });
                            }
                        } else if !moved {
                            seen.remove(&device.device_id);
                            self.send(Inbound::Holder {
                                device_id: device.device_id,
                                owner: device.owner,
                                replica: None,
                            });
                        }
                    }
                }
                _ = sweep.tick() => {
                    let now = Instant::now();
                    let gone: Vec<String> = seen
                        .iter()
                        .filter(|(_, (_, _, at))| now.duration_since(*at) > stale)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for device_id in gone {
                        if let Some((owner, _, _)) = seen.remove(&device_id) {
                            self.send(Inbound::Holder { device_id, owner, replica: None });
                        }
                    }
                }
            }
        }
    }

    /// Tells every replica where devices are now.
    async fn announce(&self, devices: Vec<HolderNote>) {
        if devices.is_empty() {
            return;
        }
        let news = HolderNews {
            replica: self.replica.clone(),
            devices,
        };
        self.publish(format!("{}.holders", self.prefix), to_json(&news))
            .await;
    }

    /// Refreshes the keys of the devices held here. A key another replica
    /// took means this session was displaced (the message may have been
    /// lost while NATS was away); a key that vanished is written again.
    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.options.heartbeat);
        // A replica that starts asks the others to announce at once.
        let mut sync = self
            .client
            .subscribe(format!("{}.holders.sync", self.prefix))
            .await
            .ok();
        loop {
            let refresh = tokio::select! {
                _ = tick.tick() => true,
                Some(_) = async {
                    match &mut sync {
                        Some(sub) => sub.next().await,
                        None => std::future::pending().await,
                    }
                } => false,
            };
            let held: Vec<(String, String, String, u64)> = self
                .held()
                .iter()
                .map(|(id, h)| (id.clone(), h.owner.clone(), h.session_id.clone(), h.revision))
                .collect();
            for (device_id, owner, session_id, revision) in held.into_iter().filter(|_| refresh) {
                let value = Holder {
                    replica: self.replica.clone(),
                    session_id: session_id.clone(),
                    owner,
                };
                let refreshed = match self.kv.update(&device_id, to_json(&value), revision).await {
                    Ok(revision) => Some(revision),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        match self.kv.entry(&device_id).await {
                            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                                let other: Option<Holder> = serde_json::from_slice(&entry.value).ok();
                                match other {
                                    Some(o) if o.session_id != session_id => {
                                        self.send(Inbound::Displace {
                                            device_id: device_id.clone(),
                                            session_id: session_id.clone(),
                                            by: o.replica,
                                        });
                                        None
                                    }
                                    _ => Some(entry.revision),
                                }
                            }
                            // Gone (deleted): take it back.
                            Ok(_) => self.write_holder(&device_id, &value).await.ok().map(|(r, _)| r),
                            Err(_) => None,
                        }
                    }
                    // NATS away, or back without the bucket (restarted):
                    // declare it again and take the key back.
                    Err(_) if self.available() => match ensure_bucket(&self.js, &self.bucket).await {
                        Ok(_) => self.write_holder(&device_id, &value).await.ok().map(|(r, _)| r),
                        Err(_) => None,
                    },
                    Err(_) => None,
                };
                if let Some(revision) = refreshed
                    && let Some(h) = self.held().get_mut(&device_id)
                    && h.session_id == session_id
                {
                    h.revision = revision;
                }
            }
            let notes = self
                .held()
                .iter()
                .map(|(id, h)| HolderNote {
                    device_id: id.clone(),
                    owner: h.owner.clone(),
                    held: true,
                })
                .collect();
            self.announce(notes).await;
        }
    }
}

#[async_trait]
impl Bus for Arc<Nats> {
    fn replica(&self) -> &str {
        &self.replica
    }

    fn available(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn attach(&self, inbound: mpsc::UnboundedSender<Inbound>) {
        if self.inbound.set(inbound).is_err() {
            return;
        }
        let (events, mut outgoing) = mpsc::unbounded_channel::<HostEvent>();
        let _ = self.events.set(events);
        let (client, subject) = (self.client.clone(), format!("{}.all", self.prefix));
        let origin = self.replica.clone();
        self.spawn(async move {
            let mut batch = Vec::new();
            while outgoing.recv_many(&mut batch, 512).await > 0 {
                let msg = Broadcast::Events {
                    origin: origin.clone(),
                    events: std::mem::take(&mut batch),
                };
                // Live events are best effort, like the local broadcast.
                let _ = client.publish(subject.clone(), to_json(&msg)).await;
            }
        });
        self.spawn(Arc::clone(self).serve_results());
        self.spawn(Arc::clone(self).serve_broadcasts());
        self.spawn(Arc::clone(self).serve_tasks());
        self.spawn(Arc::clone(self).follow_holders());
        self.spawn(Arc::clone(self).heartbeat());
    }

    async fn claim(&self, device_id: &str, owner: &str, session_id: &str) -> Result<()> {
        // Subscribe (and flush) before announcing: a caller that sees the
        // new holder finds it listening.
        let sub = self
            .client
            .subscribe(self.device_subject(device_id))
            .await
            .map_err(|_| unavailable(device_id))?;
        self.client.flush().await.map_err(|_| unavailable(device_id))?;
        let task = self.serve_device(device_id.to_string(), sub);
        let value = Holder {
            replica: self.replica.clone(),
            session_id: session_id.to_string(),
            owner: owner.to_string(),
        };
        let (revision, before) = match self.write_holder(device_id, &value).await {
            Ok(written) => written,
            Err(e) => {
                task.abort();
                return Err(e);
            }
        };
        let replaced = self.held().insert(
            device_id.to_string(),
            Held {
                owner: owner.to_string(),
                session_id: session_id.to_string(),
                revision,
                task,
            },
        );
        if let Some(old) = replaced {
            old.task.abort();
        }
        if let Some(before) = before.filter(|b| b.session_id != session_id) {
            let displace = ToHolder::Displace {
                session_id: before.session_id,
                by: self.replica.clone(),
            };
            self.publish(self.device_subject(device_id), to_json(&displace))
                .await;
        }
        self.announce(vec![HolderNote {
            device_id: device_id.to_string(),
            owner: owner.to_string(),
            held: true,
        }])
        .await;
        Ok(())
    }

    async fn release(&self, device_id: &str, session_id: &str) {
        let held = {
            let mut held = self.held();
            match held.get(device_id) {
                Some(h) if h.session_id == session_id => held.remove(device_id),
                _ => None,
            }
        };
        let Some(held) = held else { return };
        held.task.abort();
        // Only if the key is still ours: a newer holder's stays.
        if self
            .kv
            .delete_expect_revision(device_id, Some(held.revision))
            .await
            .is_ok()
        {
            self.announce(vec![HolderNote {
                device_id: device_id.to_string(),
                owner: held.owner,
                held: false,
            }])
            .await;
        }
    }

    async fn send_call(&self, device_id: &str, call: &CallEvent) -> Result<Sent> {
        let request = async_nats::Request::new()
            .payload(to_json(&ToHolder::Call {
                call: Box::new(call.clone()),
                caller: self.replica.clone(),
            }))
            .timeout(Some(self.options.request_timeout));
        match self
            .client
            .send_request(self.device_subject(device_id), request)
            .await
        {
            Ok(reply) => Ok(if serde_json::from_slice(&reply.payload).unwrap_or(false) {
                Sent::Held
            } else {
                Sent::Nobody
            }),
            Err(e) => match e.kind() {
                async_nats::RequestErrorKind::NoResponders | async_nats::RequestErrorKind::TimedOut
                    if self.available() =>
                {
                    Ok(Sent::Nobody)
                }
                _ => Err(unavailable(device_id)),
            },
        }
    }

    async fn finish_call(&self, device_id: &str, call_id: &str, reason: Option<&str>) {
        let msg = match reason {
            Some(reason) => ToHolder::Cancel {
                call_id: call_id.to_string(),
                reason: reason.to_string(),
            },
            None => ToHolder::Done {
                call_id: call_id.to_string(),
            },
        };
        self.publish(self.device_subject(device_id), to_json(&msg)).await;
    }

    async fn revoked(&self, device_id: &str) {
        let msg = Broadcast::Revoked {
            device_id: device_id.to_string(),
        };
        self.publish(format!("{}.all", self.prefix), to_json(&msg)).await;
    }

    async fn route_result(
        &self,
        caller: &str,
        device_id: &str,
        result: &CallResult,
        from_holder: bool,
    ) -> Result<Option<Result<ResultAck, WireError>>> {
        let routed = RoutedResult {
            device_id: device_id.to_string(),
            result: Box::new(result.clone()),
            from_holder,
        };
        let request = async_nats::Request::new()
            .payload(to_json(&routed))
            .timeout(Some(self.options.request_timeout));
        let subject = format!("{}.replica.{caller}.result", self.prefix);
        match self.client.send_request(subject, request).await {
            Ok(reply) => Ok(Some(
                serde_json::from_slice(&reply.payload).unwrap_or(Err(WireError::CallUnknown)),
            )),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(None),
            Err(_) => Err(unavailable(device_id)),
        }
    }

    fn event(&self, event: &HostEvent) {
        if let Some(events) = self.events.get() {
            let _ = events.send(event.clone());
        }
    }

    async fn ask_task(&self, request: Vec<u8>) -> Option<Vec<u8>> {
        let request = async_nats::Request::new()
            .payload(Bytes::from(request))
            .timeout(Some(TASK_QUESTION_TIMEOUT.min(self.options.request_timeout)));
        let subject = format!("{}.tasks", self.prefix);
        match self.client.send_request(subject, request).await {
            Ok(reply) => Some(reply.payload.to_vec()),
            // Nobody has it (a timeout, since every replica listens), or
            // NATS is away: either way the task is not found.
            Err(_) => None,
        }
    }

    fn stop(&self) {
        self.tasks.close();
        self.stop.cancel();
    }

    async fn closed(&self) {
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Dispatcher, MemoryStore};

    /// NATS to test against, or why the test skips.
    fn nats_url(test: &str) -> Option<String> {
        let url = std::env::var("FUSION_TEST_NATS_URL").ok();
        if url.is_none() {
            eprintln!("{test}: skipped: set FUSION_TEST_NATS_URL to run it against NATS");
        }
        url
    }

    async fn joined(url: &str) -> (Cluster, Arc<Nats>) {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap();
        let prefix = format!("u{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>());
        let options = NatsOptions {
            prefix,
            ..NatsOptions::default()
        };
        let nats = Nats::connect(url, options).await.expect("NATS answers");
        let cluster = Cluster {
            bus: Arc::new(Arc::clone(&nats)),
        };
        (cluster, nats)
    }

    #[tokio::test]
    async fn close_ends_every_task_the_bus_started() {
        let Some(url) = nats_url("close_ends_every_task_the_bus_started") else {
            return;
        };
        let (cluster, nats) = joined(&url).await;
        let (tx, _rx) = mpsc::unbounded_channel();
        cluster.bus.attach(tx);
        cluster.bus.claim("dev_a", "alice", "ses_a").await.unwrap();
        // Events, results, broadcasts, questions about MCP tasks, holders,
        // heartbeat, and the device's reader.
        assert_eq!(nats.tasks.len(), 7);
        tokio::time::timeout(Duration::from_secs(5), cluster.close())
            .await
            .expect("the tasks end promptly");
        assert!(nats.tasks.is_empty());
    }

    #[tokio::test]
    async fn dropping_the_dispatcher_stops_the_bus() {
        let Some(url) = nats_url("dropping_the_dispatcher_stops_the_bus") else {
            return;
        };
        let (cluster, nats) = joined(&url).await;
        let config = Config {
            cluster: Some(cluster.clone()),
            ..Config::default()
        };
        let dispatcher = Dispatcher::new(Arc::new(MemoryStore::new()), config);
        assert_eq!(nats.tasks.len(), 6);
        drop(dispatcher);
        tokio::time::timeout(Duration::from_secs(5), cluster.bus.closed())
            .await
            .expect("the tasks end once the dispatcher is gone");
        assert!(nats.tasks.is_empty());
    }
}
