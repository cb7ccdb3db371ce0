//! The dispatcher: routes calls to connected devices and awaits results,
//! turns mutate calls into stored proposals, and applies the stored input
//! once a person approves.
//!
//! Per-device state is a small slot in one map behind a `std::sync::Mutex`
//! that is never held across an `.await`; an idle connected device costs a
//! slot, a channel and its SSE stream.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use fusion_protocol::{
    CallEvent, CallResult, CancelEvent, Class, ClosingEvent, DeviceManifest, EnrollRequest, EnrollResponse,
    ErrorBody, Mode, PROTOCOL_VERSION, Plan, Precondition, ResultAck,
};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Inbound, Sent, WireError};
use crate::credentials::{EnrollLimiter, new_id, new_pairing_code, new_token, normalize_code, sha256_hex};
use crate::error::{Error, Result};
use crate::events::HostEvent;
use crate::store::{
    CallLogEntry, DeviceRecord, ManifestSummary, PairingCodeRecord, PendingCallRecord, ProposalRecord,
    ProposalStatus, ProposalUpdate, Store, input_paths,
};
use crate::time::Clock;

/// How the dispatcher behaves. `Config::default()` is what production wants.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a call to an offline device waits for it to connect.
    /// Default 10 s: a device whose stream the server closed (a restart)
    /// retries within 1 s, so a restart shorter than ~9 s costs no call.
    pub offline_grace: Duration,
    /// How long a call waits for its result unless the caller says otherwise. Default 60 s.
    pub call_timeout: Duration,
    /// How often an idle stream gets a `: ping` comment. Default 10 s (the protocol promises ≤ 15 s).
    pub heartbeat: Duration,
    /// How long a pairing code works. Default 10 minutes.
    pub pairing_ttl: Duration,
    /// How long a proposal can be approved. Default 24 hours.
    pub proposal_ttl: Duration,
    /// The largest request body the device routes accept. Default 8 MiB.
    pub max_body_bytes: usize,
    /// The enroll rate-limit window. Default 1 minute.
    pub enroll_window: Duration,
    /// Enroll attempts per client address (an IPv6 /64 counts as one) per
    /// window. Default 10.
    pub enroll_per_address: u32,
    /// Wrong codes across all addresses per window before the backstop
    /// engages: then only addresses that have not tried yet in the window get
    /// a code checked (one each). Default 60.
    pub enroll_global_failures: u32,
    /// How long a device authorization request (`POST /device/code`) can be
    /// approved. Default 15 minutes.
    pub device_code_ttl: Duration,
    /// How often a device may poll `POST /device/token`. Default 5 s (RFC
    /// 8628's default); polling faster gets `slow_down`, which adds 5 s.
    pub device_poll_interval: Duration,
    /// The app's page where a signed-in person approves a device, e.g.
    /// `https://app.example.com/device`: the `verification_uri` a device
    /// shows. `None` (the default) turns the device flow off: then
    /// `POST /device/code` answers `unsupported_grant_type`.
    pub verification_uri: Option<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy
    /// that sets it). Default false: the socket's peer address.
    pub trust_forwarded_for: bool,
    /// Wall time, for expiry. Default: the system clock.
    pub clock: Clock,
    /// Files by handle (`POST /uploads`, `GET /blobs/{id}`). Default none:
    /// those routes answer `blobs_unavailable`.
    #[cfg(feature = "blobs")]
    pub blobs: Option<crate::blobs::Blobs>,
    /// Replicas sharing devices (`docs/CLUSTER.md`). Default none: every
    /// device streams to this process. A cluster needs a [`Store`] that
    /// keeps pending calls and is shared by the replicas.
    pub cluster: Option<Cluster>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            offline_grace: Duration::from_secs(10),
            call_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_secs(10),
            pairing_ttl: Duration::from_secs(10 * 60),
            proposal_ttl: Duration::from_secs(24 * 60 * 60),
            max_body_bytes: 8 * 1024 * 1024,
            enroll_window: Duration::from_secs(60),
            enroll_per_address: 10,
            enroll_global_failures: 60,
            device_code_ttl: Duration::from_secs(15 * 60),
            device_poll_interval: Duration::from_secs(5),
            verification_uri: None,
            trust_forwarded_for: false,
            clock: Clock::system(),
            #[cfg(feature = "blobs")]
            blobs: None,
            cluster: None,
        }
    }
}

/// Options for one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Overrides [`Config::call_timeout`].
    pub timeout: Option<Duration>,
    /// Who asked, when it is not the owner themself (an agent run, say).
    pub requested_by: Option<String>,
}

/// What [`Dispatcher::call`] returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallOutcome {
    /// A read or action tool's result.
    Output(ToolOutput),
    /// A mutate tool's stored proposal, waiting for approval.
    Proposal(Box<ProposalRecord>),
}

/// A tool's successful result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolOutput {
    /// The call's id.
    pub call_id: String,
    /// The tool's structured output.
    pub output: Value,
    /// Whether a bound cut it short.
    pub truncated: bool,
    /// How long the tool ran on the device.
    pub duration_ms: u64,
}

/// A freshly minted pairing code. Show it once; only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairingCode {
    /// `XXXX-XXXX`.
    pub code: String,
    /// When it stops working.
    #[serde(with = "crate::time::rfc3339")]
    pub expires_at: SystemTime,
}

/// A device as the owner's UI shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceStatus {
    /// The stored device.
    #[serde(flatten)]
    pub device: DeviceRecord,
    /// Whether it holds a stream right now.
    pub online: bool,
    /// What its latest manifest says (folders, tool names), if it ever sent
    /// one; [`Dispatcher::manifest`] gives the whole manifest.
    pub manifest: Option<ManifestSummary>,
}

/// `name`, or `name (2)`, `name (3)`, … whichever `taken` does not have: a
/// machine paired again under the same host name stays distinguishable.
pub(crate) fn distinct_name(name: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == name) {
        return name.to_string();
    }
    (2..)
        .map(|n| format!("{name} ({n})"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| name.to_string())
}

/// Checks what a device says about itself when it asks to be paired: each
/// field 1 to 200 characters.
pub(crate) fn check_device_fields(name: &str, platform: &str, host_version: &str) -> Result<(), String> {
    for (field, value) in [
        ("name", name),
        ("platform", platform),
        ("host_version", host_version),
    ] {
        if value.trim().is_empty() || value.len() > 200 {
            return Err(format!("{field} must be 1 to 200 characters"));
        }
    }
    Ok(())
}

/// What the call path needs from a manifest: each tool's class. Devices of
/// the same build share one index.
type ToolIndex = BTreeMap<String, Class>;

/// The dispatcher. Cheap to clone; every clone shares the same state.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    config: Config,
    state: Mutex<State>,
    events: broadcast::Sender<HostEvent>,
    limiter: EnrollLimiter,
    /// User codes typed on `/device`.
    user_code_limiter: EnrollLimiter,
    /// User-code lookups per signed-in account: one account typing codes
    /// from many addresses is bounded too.
    user_code_account_limiter: EnrollLimiter<String>,
    /// Device authorization requests.
    request_limiter: EnrollLimiter,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct State {
    slots: HashMap<String, Slot>,
    /// Distinct tool indexes; slots hold `Arc`s into this.
    indexes: Vec<Arc<ToolIndex>>,
    pending: HashMap<String, Pending>,
    /// Calls whose result was delivered, so a repeated POST is acknowledged
    /// (idempotency) instead of refused. Pruned by age and count.
    finished: HashMap<String, String>,
    finished_order: VecDeque<(Instant, String)>,
    /// Calls made on other replicas and pushed to streams held here: call
    /// id → (device, calling replica), so their results go straight back.
    routed: HashMap<String, (String, String)>,
}

/// How long, and how many, delivered call ids are remembered.
const FINISHED_TTL: Duration = Duration::from_secs(10 * 60);
const FINISHED_MAX: usize = 100_000;

struct Slot {
    owner: String,
    session: Option<Session>,
    /// The replica holding the device's stream, when another one does.
    remote: Option<String>,
    online: watch::Sender<bool>,
    tools: Option<Arc<ToolIndex>>,
    next_event_id: u64,
    /// Calls sent (or waiting to be sent) and not yet answered, by event id:
    /// re-delivered on every new stream.
    outstanding: BTreeMap<u64, CallEvent>,
}

struct Session {
    id: String,
    tx: mpsc::UnboundedSender<StreamMsg>,
    /// The device as it authenticated for this stream. While the stream is
    /// live, its calls and results are checked against this copy instead of
    /// a store read each; revocation ends the session and with it the copy.
    device: DeviceRecord,
}

/// What the dispatcher pushes to one device's SSE stream.
#[derive(Debug)]
pub(crate) enum StreamMsg {
    Call(u64, Box<CallEvent>),
    Cancel(CancelEvent),
    /// Sent last, then the stream closes.
    Revoked(ClosingEvent),
    /// Sent last, then the stream closes.
    Replaced(ClosingEvent),
}

struct Pending {
    device_id: String,
    tx: oneshot::Sender<Result<CallResult>>,
}

impl Dispatcher {
    /// A dispatcher over the app's store.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        let limiter = || {
            EnrollLimiter::new(
                config.enroll_window,
                config.enroll_per_address,
                config.enroll_global_failures,
            )
        };
        let (limiter, user_code_limiter, request_limiter) = (limiter(), limiter(), limiter());
        let user_code_account_limiter =
            EnrollLimiter::new(config.enroll_window, config.enroll_per_address, u32::MAX);
        let (events, _) = broadcast::channel(1024);
        let dispatcher = Dispatcher {
            inner: Arc::new(Inner {
                store,
                config,
                state: Mutex::new(State::default()),
                events,
                limiter,
                user_code_limiter,
                user_code_account_limiter,
                request_limiter,
                shutdown: CancellationToken::new(),
            }),
        };
        if let Some(cluster) = &dispatcher.inner.config.cluster {
            let (tx, rx) = mpsc::unbounded_channel();
            cluster.bus.attach(tx);
            tokio::spawn(serve_inbound(Arc::downgrade(&dispatcher.inner), rx));
        }
        dispatcher
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The blob store, when files by handle are on.
    #[cfg(feature = "blobs")]
    pub fn blobs(&self) -> Result<&crate::blobs::Blobs> {
        self.inner.config.blobs.as_ref().ok_or(Error::BlobsUnavailable)
    }

    /// The app's store, for listing proposals and the call log.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Live events (devices online/offline, calls, proposals) for UIs. Filter
    /// by [`HostEvent::owner`]; a slow receiver misses events, never blocks.
    pub fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.inner.events.subscribe()
    }

    /// Ends every device stream and refuses new calls. Call it when the server
    /// shuts down, so graceful shutdown does not wait on open streams.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Resolves once [`Dispatcher::shutdown`] has been called; hand it to
    /// `axum::serve(...).with_graceful_shutdown(...)`.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        self.inner.shutdown.clone().cancelled_owned()
    }

    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn user_code_limiter(&self) -> &EnrollLimiter {
        &self.inner.user_code_limiter
    }

    pub(crate) fn user_code_account_limiter(&self) -> &EnrollLimiter<String> {
        &self.inner.user_code_account_limiter
    }

    pub(crate) fn request_limiter(&self) -> &EnrollLimiter {
        &self.inner.request_limiter
    }

    pub(crate) fn emit(&self, event: HostEvent) {
        if let Some(cluster) = &self.inner.config.cluster {
            cluster.bus.event(&event);
        }
        // No receivers is normal: nobody has a page open.
        let _ = self.inner.events.send(event);
    }

    fn cluster(&self) -> Option<&Cluster> {
        self.inner.config.cluster.as_ref()
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.inner.config.clock.now()
    }

    /// The client address that rate limits count: the socket's peer, or the
    /// first `X-Forwarded-For` hop when [`Config::trust_forwarded_for`] is set.
    /// For an app's own pages that take codes (`/device`).
    pub fn client_addr(
        &self,
        peer: Option<std::net::SocketAddr>,
        headers: &axum::http::HeaderMap,
    ) -> Option<IpAddr> {
        if self.inner.config.trust_forwarded_for {
            let forwarded = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        peer.map(|p| p.ip())
    }

    /// Mints a pairing code for `owner`, valid for [`Config::pairing_ttl`].
    pub async fn mint_pairing_code(&self, owner: &str) -> Result<PairingCode> {
        let code = new_pairing_code();
        let now = self.now();
        let expires_at = now + self.inner.config.pairing_ttl;
        let normal = normalize_code(&code).unwrap_or_default();
        self.inner
            .store
            .create_pairing_code(PairingCodeRecord {
                code_hash: sha256_hex(&normal),
                owner: owner.to_string(),
                created_at: now,
                expires_at,
                used_at: None,
            })
            .await?;
        Ok(PairingCode { code, expires_at })
    }

    /// Exchanges a pairing code for a device token (`POST /enroll`).
    pub(crate) async fn enroll(&self, addr: Option<IpAddr>, req: EnrollRequest) -> Result<EnrollResponse> {
        check_device_fields(&req.name, &req.platform, &req.host_version).map_err(Error::InvalidRequest)?;
        // Counted before the lookup: concurrent guesses cannot overrun the limit.
        let attempt = self
            .inner
            .limiter
            .attempt(addr)
            .map_err(|retry_after| Error::RateLimited { retry_after })?;
        let Some(code) = normalize_code(&req.code) else {
            return Err(Error::InvalidCode(
                "that is not a pairing code: a code is 8 letters like BCDF-GHJK; copy it from /devices",
            ));
        };
        let now = self.now();
        let Some(record) = self
            .inner
            .store
            .consume_pairing_code(&sha256_hex(&code), now)
            .await?
        else {
            return Err(Error::InvalidCode(
                "this pairing code is not known; check it, or mint a new one on /devices",
            ));
        };
        if record.used_at.is_some() {
            return Err(Error::InvalidCode(
                "this pairing code was already used; mint a new one on /devices",
            ));
        }
        if now >= record.expires_at {
            return Err(Error::CodeExpired);
        }
        attempt.succeeded();
        let (device, token, owner_label) = self
            .pair_device(&record.owner, &req.name, &req.platform, &req.host_version)
            .await?;
        Ok(EnrollResponse {
            name: Some(device.name),
            device_id: device.id,
            token,
            owner: device.owner,
            owner_label,
            server_time: crate::time::format(now),
            protocol_version: PROTOCOL_VERSION,
        })
    }

    /// Creates `owner`'s new device with a fresh token; returns it, the
    /// token (shown once) and how the owner is named to people.
    pub(crate) async fn pair_device(
        &self,
        owner: &str,
        name: &str,
        platform: &str,
        host_version: &str,
    ) -> Result<(DeviceRecord, String, Option<String>)> {
        let now = self.now();
        let device_id = new_id("dev_");
        let token = new_token(&device_id);
        let taken = self.names_in_use(owner, None).await?;
        let device = DeviceRecord {
            id: device_id,
            owner: owner.to_string(),
            name: distinct_name(name.trim(), &taken),
            platform: platform.to_string(),
            host_version: host_version.to_string(),
            token_hash: sha256_hex(&token),
            created_at: now,
            last_seen: Some(now),
            revoked_at: None,
        };
        self.inner.store.create_device(device.clone()).await?;
        tracing::info!(device_id = %device.id, owner = %device.owner, "device enrolled");
        self.emit(HostEvent::DeviceEnrolled {
            owner: device.owner.clone(),
            device_id: device.id.clone(),
            name: device.name.clone(),
        });
        let label = self.inner.store.owner_label(owner).await?;
        Ok((device, token, label))
    }

    /// The device record of a live stream, if the device has one.
    pub(crate) fn live_device(&self, device_id: &str) -> Option<DeviceRecord> {
        let state = self.state();
        state
            .slots
            .get(device_id)?
            .session
            .as_ref()
            .map(|s| s.device.clone())
    }

    /// The owner's device, or `DeviceNotFound` for anyone else's.
    async fn owned_device(&self, owner: &str, device_id: &str) -> Result<DeviceRecord> {
        let device = match self.live_device(device_id) {
            Some(live) => Some(live),
            None => self.inner.store.device(device_id).await?,
        };
        match device {
            Some(d) if d.owner == owner => Ok(d),
            _ => Err(Error::DeviceNotFound {
                device_id: device_id.to_string(),
            }),
        }
    }

    /// The owner's devices with their live state and what their manifests
    /// say: two store queries, whatever the number of devices.
    pub async fn devices(&self, owner: &str) -> Result<Vec<DeviceStatus>> {
        let devices = self.inner.store.devices(owner).await?;
        let mut summaries = self.inner.store.manifest_summaries(owner).await?;
        let state = self.state();
        Ok(devices
            .into_iter()
            .map(|device| DeviceStatus {
                online: state.slots.get(&device.id).is_some_and(Slot::is_online),
                manifest: summaries.remove(&device.id),
                device,
            })
            .collect())
    }

    /// One of the owner's devices, with its live state and its whole latest
    /// manifest (tools with their schemas, folders), or `DeviceNotFound` for
    /// anyone else's. Read from the store, so `last_seen` is current.
    pub async fn device(
        &self,
        owner: &str,
        device_id: &str,
    ) -> Result<(DeviceStatus, Option<DeviceManifest>)> {
        let device = match self.inner.store.device(device_id).await? {
            Some(d) if d.owner == owner => d,
            _ => {
                return Err(Error::DeviceNotFound {
                    device_id: device_id.to_string(),
                });
            }
        };
        let manifest = self.inner.store.manifest(device_id).await?;
        let status = DeviceStatus {
            online: self.is_online(&device.id),
            manifest: manifest.as_ref().map(ManifestSummary::from),
            device,
        };
        Ok((status, manifest))
    }

    /// Whether the device holds a stream right now (to any replica).
    pub fn is_online(&self, device_id: &str) -> bool {
        self.state().slots.get(device_id).is_some_and(Slot::is_online)
    }

    /// The names of `owner`'s devices that are not revoked, but `except`'s.
    async fn names_in_use(&self, owner: &str, except: Option<&str>) -> Result<Vec<String>> {
        Ok(self
            .inner
            .store
            .devices(owner)
            .await?
            .into_iter()
            .filter(|d| d.revoked_at.is_none() && Some(d.id.as_str()) != except)
            .map(|d| d.name)
            .collect())
    }

    /// Renames the owner's device (1 to 200 characters, trimmed). A name
    /// another of their devices has gets ` (2)`, ` (3)`, … so two stay
    /// distinguishable. Returns the name given.
    pub async fn rename_device(&self, owner: &str, device_id: &str, name: &str) -> Result<String> {
        let device = self.owned_device(owner, device_id).await?;
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::InvalidRequest("name must be 1 to 200 characters".into()));
        }
        let taken = self.names_in_use(owner, Some(&device.id)).await?;
        let name = distinct_name(name, &taken);
        self.inner.store.rename_device(device_id, &name).await?;
        {
            let mut state = self.state();
            if let Some(session) = state.slots.get_mut(device_id).and_then(|s| s.session.as_mut()) {
                session.device.name.clone_from(&name);
            }
        }
        self.emit(HostEvent::DeviceRenamed {
            owner: device.owner,
            device_id: device_id.to_string(),
            name: name.clone(),
        });
        Ok(name)
    }

    /// Revokes the owner's device: its token stops working and a live stream
    /// gets `revoked` and is closed at once. Calls waiting on it fail.
    pub async fn revoke(&self, owner: &str, device_id: &str) -> Result<()> {
        let device = self.owned_device(owner, device_id).await?;
        self.inner.store.revoke_device(device_id, self.now()).await?;
        self.close_revoked(device_id);
        if let Some(cluster) = self.cluster() {
            // The replica holding the stream closes it; every replica fails
            // the calls it waits on.
            cluster.bus.revoked(device_id).await;
            for call in self.inner.store.pending_calls(device_id).await? {
                self.inner.store.remove_pending_call(&call.call_id).await?;
            }
        }
        tracing::info!(device_id, "device revoked");
        self.emit(HostEvent::DeviceRevoked {
            owner: device.owner,
            device_id: device_id.to_string(),
        });
        Ok(())
    }

    /// Sends `revoked` on the device's stream if it is here and closes it,
    /// and fails the calls waiting on it here.
    fn close_revoked(&self, device_id: &str) {
        let failed: Vec<Pending> = {
            let mut state = self.state();
            if let Some(slot) = state.slots.get_mut(device_id) {
                if let Some(session) = slot.session.take() {
                    let _ = session.tx.send(StreamMsg::Revoked(ClosingEvent {
                        message: "this device was revoked; pair it again with a new code from /devices"
                            .into(),
                    }));
                }
                slot.remote = None;
                slot.online.send_replace(false);
                slot.outstanding.clear();
            }
            state.routed.retain(|_, (device, _)| device != device_id);
            let ids: Vec<String> = state
                .pending
                .iter()
                .filter(|(_, p)| p.device_id == device_id)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| state.pending.remove(id)).collect()
        };
        for pending in failed {
            let _ = pending.tx.send(Err(Error::DeviceRevoked {
                device_id: device_id.to_string(),
            }));
        }
    }

    /// Calls `tool` on the owner's device. A read or action tool's result comes
    /// back as [`CallOutcome::Output`]; a mutate tool is planned on the device
    /// and stored as a pending [`CallOutcome::Proposal`].
    pub async fn call(
        &self,
        owner: &str,
        device_id: &str,
        tool: &str,
        input: Value,
        options: CallOptions,
    ) -> Result<CallOutcome> {
        let device = self.owned_device(owner, device_id).await?;
        if device.revoked_at.is_some() {
            return Err(Error::DeviceRevoked { device_id: device.id });
        }
        let timeout = options.timeout.unwrap_or(self.inner.config.call_timeout);
        let tools = self.tools_of(&device).await?;
        let class = *tools.get(tool).ok_or_else(|| Error::UnknownTool {
            device_id: device.id.clone(),
            tool: tool.to_string(),
            available: tools.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
        })?;
        let mode = if class == Class::Mutate {
            Mode::Plan
        } else {
            Mode::Run
        };
        // A plan's log line names the proposal it becomes.
        let proposal_id = (mode == Mode::Plan).then(|| new_id("prop_"));
        let result = self
            .dispatch(
                &device,
                tool,
                mode,
                input.clone(),
                None,
                proposal_id.clone(),
                options.requested_by.as_deref().unwrap_or(owner),
                timeout,
            )
            .await?;
        let output = ok_output(result)?;
        if mode == Mode::Run {
            return Ok(CallOutcome::Output(output));
        }
        let plan: Plan = serde_json::from_value(output.output).map_err(|e| {
            Error::Tool(ErrorBody::new(
                "invalid_plan",
                format!("the device returned a plan this server cannot read: {e}"),
            ))
        })?;
        let now = self.now();
        let proposal = ProposalRecord {
            id: proposal_id.unwrap_or_else(|| new_id("prop_")),
            owner: owner.to_string(),
            device_id: device.id.clone(),
            tool: tool.to_string(),
            input,
            plan,
            requested_by: options.requested_by.unwrap_or_else(|| owner.to_string()),
            created_at: now,
            expires_at: now + self.inner.config.proposal_ttl,
            status: ProposalStatus::Pending,
            decided_by: None,
            decided_at: None,
            output: None,
            error: None,
        };
        self.inner.store.create_proposal(proposal.clone()).await?;
        self.emit(HostEvent::ProposalCreated {
            owner: owner.to_string(),
            proposal_id: proposal.id.clone(),
            device_id: device.id,
            tool: tool.to_string(),
            summary: proposal.plan.summary.clone(),
        });
        Ok(CallOutcome::Proposal(Box::new(proposal)))
    }

    /// The device's tool classes: from its live manifest, else its stored
    /// one, else the one it sends if it connects within the offline grace.
    async fn tools_of(&self, device: &DeviceRecord) -> Result<Arc<ToolIndex>> {
        let mut online = {
            let mut state = self.state();
            let slot = state.slot(&device.id, &device.owner);
            if let Some(tools) = &slot.tools {
                return Ok(Arc::clone(tools));
            }
            slot.online.subscribe()
        };
        if let Some(manifest) = self.inner.store.manifest(&device.id).await? {
            return Ok(self.state().index_tools(&device.id, &device.owner, &manifest));
        }
        let _ = tokio::time::timeout(self.inner.config.offline_grace, online.wait_for(|on| *on)).await;
        // The manifest is sent right after the stream opens; give it the same grace.
        let deadline = Instant::now() + self.inner.config.offline_grace;
        loop {
            if let Some(tools) = self.state().slots.get(&device.id).and_then(|s| s.tools.clone()) {
                return Ok(tools);
            }
            if Instant::now() >= deadline || !*online.borrow() {
                return Err(Error::DeviceOffline {
                    device_id: device.id.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Approves the owner's pending proposal and applies the *stored* input
    /// with the stored precondition. Returns the proposal as it ends up
    /// (`applied`, with the output); a failed apply (a `conflict`, the device
    /// offline) marks it `failed` and returns the error.
    pub async fn approve(&self, owner: &str, proposal_id: &str) -> Result<ProposalRecord> {
        let proposal = self.decide(owner, proposal_id, ProposalStatus::Approved).await?;
        let timeout = self.inner.config.call_timeout;
        let applied = async {
            let device = self.owned_device(owner, &proposal.device_id).await?;
            if device.revoked_at.is_some() {
                return Err(Error::DeviceRevoked { device_id: device.id });
            }
            let result = self
                .dispatch(
                    &device,
                    &proposal.tool,
                    Mode::Apply,
                    proposal.input.clone(),
                    Some(proposal.plan.precondition.clone()),
                    Some(proposal.id.clone()),
                    &proposal.requested_by,
                    timeout,
                )
                .await?;
            ok_output(result)
        }
        .await;
        let (status, output, error) = match &applied {
            Ok(out) => (ProposalStatus::Applied, Some(out.output.clone()), None),
            Err(e) => (ProposalStatus::Failed, None, Some(e.to_body())),
        };
        let update = ProposalUpdate {
            status,
            decided_by: None,
            decided_at: None,
            output,
            error,
        };
        self.inner
            .store
            .transition_proposal(proposal_id, ProposalStatus::Approved, update)
            .await?;
        self.emit(HostEvent::ProposalResolved {
            owner: owner.to_string(),
            proposal_id: proposal_id.to_string(),
            status,
        });
        applied?;
        self.owned_proposal(owner, proposal_id).await
    }

    /// Rejects the owner's pending proposal.
    pub async fn reject(&self, owner: &str, proposal_id: &str) -> Result<ProposalRecord> {
        let proposal = self.decide(owner, proposal_id, ProposalStatus::Rejected).await?;
        self.emit(HostEvent::ProposalResolved {
            owner: owner.to_string(),
            proposal_id: proposal.id.clone(),
            status: ProposalStatus::Rejected,
        });
        Ok(proposal)
    }

    /// Moves a pending proposal to `to` exactly once (compare-and-set in the
    /// store, so two approvers racing cannot both win).
    async fn decide(&self, owner: &str, proposal_id: &str, to: ProposalStatus) -> Result<ProposalRecord> {
        let proposal = self.owned_proposal(owner, proposal_id).await?;
        if proposal.status != ProposalStatus::Pending {
            return Err(Error::ProposalResolved {
                proposal_id: proposal.id,
                status: proposal.status,
            });
        }
        let now = self.now();
        let store = &self.inner.store;
        if now >= proposal.expires_at {
            let update = ProposalUpdate {
                status: ProposalStatus::Expired,
                decided_by: None,
                decided_at: None,
                output: None,
                error: None,
            };
            store
                .transition_proposal(proposal_id, ProposalStatus::Pending, update)
                .await?;
            return Err(Error::ProposalExpired {
                proposal_id: proposal.id,
            });
        }
        let update = ProposalUpdate {
            status: to,
            decided_by: Some(owner.to_string()),
            decided_at: Some(now),
            output: None,
            error: None,
        };
        if !store
            .transition_proposal(proposal_id, ProposalStatus::Pending, update)
            .await?
        {
            let status = store
                .proposal(proposal_id)
                .await?
                .map_or(ProposalStatus::Pending, |p| p.status);
            return Err(Error::ProposalResolved {
                proposal_id: proposal.id,
                status,
            });
        }
        self.owned_proposal(owner, proposal_id).await
    }

    async fn owned_proposal(&self, owner: &str, proposal_id: &str) -> Result<ProposalRecord> {
        match self.inner.store.proposal(proposal_id).await? {
            Some(p) if p.owner == owner => Ok(p),
            _ => Err(Error::ProposalNotFound {
                proposal_id: proposal_id.to_string(),
            }),
        }
    }

    /// Sends one call down the device's stream and waits for its result,
    /// logging it and emitting start/finish events.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        device: &DeviceRecord,
        tool: &str,
        mode: Mode,
        input: Value,
        precondition: Option<Precondition>,
        proposal_id: Option<String>,
        requested_by: &str,
        timeout: Duration,
    ) -> Result<CallResult> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let call_id = new_id("call_");
        let started_at = self.now();
        let started = Instant::now();
        let owner = device.owner.clone();
        self.emit(HostEvent::CallStarted {
            owner: owner.clone(),
            device_id: device.id.clone(),
            call_id: call_id.clone(),
            tool: tool.to_string(),
            mode,
        });
        let paths = input_paths(&input);
        let call = CallEvent {
            call_id: call_id.clone(),
            tool: tool.to_string(),
            mode,
            input,
            timeout_ms: timeout.as_millis() as u64,
            // The device is told which proposal it applies; a plan's id is
            // only for the log (the proposal exists once the plan is back).
            proposal_id: proposal_id.clone().filter(|_| mode == Mode::Apply),
            precondition,
        };
        let result = self.send_and_wait(device, call, timeout).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let error_code = match &result {
            Ok(r) if r.ok => None,
            Ok(r) => Some(
                r.error
                    .as_ref()
                    .map_or_else(|| "tool_failed".to_string(), |e| e.code.clone()),
            ),
            Err(e) => Some(e.code().to_string()),
        };
        self.emit(HostEvent::CallFinished {
            owner: owner.clone(),
            device_id: device.id.clone(),
            call_id: call_id.clone(),
            tool: tool.to_string(),
            mode,
            ok: error_code.is_none(),
            error_code: error_code.clone(),
            duration_ms,
        });
        let entry = CallLogEntry {
            call_id,
            owner,
            device_id: device.id.clone(),
            tool: tool.to_string(),
            mode,
            requested_by: requested_by.to_string(),
            paths,
            proposal_id,
            started_at,
            duration_ms,
            error_code,
        };
        if let Err(e) = self.inner.store.log_call(entry).await {
            // The call itself succeeded or failed on its own terms; a lost log line must not change that.
            tracing::error!(error = %e, "could not write the call log");
        }
        result
    }

    async fn send_and_wait(
        &self,
        device: &DeviceRecord,
        call: CallEvent,
        timeout: Duration,
    ) -> Result<CallResult> {
        let (call_id, tool) = (call.call_id.clone(), call.tool.clone());
        let call_id = call_id.as_str();
        let (tx, rx) = oneshot::channel();
        if let Some(cluster) = self.cluster() {
            if !cluster.bus.available() && !self.holds(&device.id) {
                return Err(Error::ClusterUnavailable {
                    device_id: device.id.clone(),
                });
            }
            // Kept until answered: a device that reconnects to another
            // replica still gets it, and its result finds this replica.
            self.inner
                .store
                .save_pending_call(PendingCallRecord {
                    call_id: call_id.to_string(),
                    device_id: device.id.clone(),
                    caller: cluster.replica().to_string(),
                    call: call.clone(),
                    created_at: self.now(),
                })
                .await?;
        }
        let routed = call.clone();
        let (event_id, mut online) = {
            let mut state = self.state();
            state.pending.insert(
                call_id.to_string(),
                Pending {
                    device_id: device.id.clone(),
                    tx,
                },
            );
            let slot = state.slot(&device.id, &device.owner);
            slot.next_event_id += 1;
            let event_id = slot.next_event_id;
            slot.outstanding.insert(event_id, call.clone());
            if let Some(session) = &slot.session {
                let _ = session.tx.send(StreamMsg::Call(event_id, Box::new(call)));
            }
            (event_id, slot.online.subscribe())
        };
        let mut guard = CallGuard {
            dispatcher: self,
            device_id: &device.id,
            call_id,
            event_id,
            reason: "caller_gone",
            done: false,
        };
        if let Some(cluster) = self.cluster() {
            self.route(cluster, device, &routed, &mut online).await?;
        } else if !*online.borrow_and_update() {
            let grace = self.inner.config.offline_grace;
            if !matches!(
                tokio::time::timeout(grace, online.wait_for(|on| *on)).await,
                Ok(Ok(_))
            ) {
                return Err(Error::DeviceOffline {
                    device_id: device.id.clone(),
                });
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => {
                guard.done = true;
                result
            }
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => {
                guard.reason = "timeout";
                Err(Error::Timeout {
                    device_id: device.id.clone(),
                    tool,
                    after: timeout,
                })
            }
        }
    }

    /// Whether this replica holds the device's stream.
    fn holds(&self, device_id: &str) -> bool {
        self.state()
            .slots
            .get(device_id)
            .is_some_and(|s| s.session.is_some())
    }

    /// Gets a call to the device wherever it streams: here (the slot's
    /// outstanding calls are pushed on connect), or through the replica
    /// holding it. Waits up to the offline grace for it to be somewhere.
    async fn route(
        &self,
        cluster: &Cluster,
        device: &DeviceRecord,
        call: &CallEvent,
        online: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + self.inner.config.offline_grace;
        loop {
            if self.holds(&device.id) {
                return Ok(());
            }
            // Asked even when no holder was announced yet: a replica that
            // started a moment ago has not heard the heartbeats.
            if cluster.bus.send_call(&device.id, call).await? == Sent::Held {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::DeviceOffline {
                    device_id: device.id.clone(),
                });
            }
            // A holder that just went away, or one this replica has not
            // heard of yet: look again when it changes, or shortly.
            let wait = (deadline - now).min(Duration::from_millis(250));
            online.mark_unchanged();
            let _ = tokio::time::timeout(wait, online.changed()).await;
        }
    }

    /// Delivers a device's result (`POST /result`). Idempotent per call id.
    /// A result for a call made on another replica goes there.
    pub(crate) async fn deliver(&self, device_id: &str, result: CallResult) -> Result<ResultAck> {
        // A result for another device's call is answered as for an unknown
        // call: telling the device it exists would let it probe for calls.
        self.deliver_any(device_id, result).await.map_err(|e| match e {
            Error::CallNotYours { call_id } => {
                tracing::warn!(
                    device_id,
                    call_id,
                    "a device posted a result for another device's call"
                );
                Error::CallUnknown { call_id }
            }
            e => e,
        })
    }

    async fn deliver_any(&self, device_id: &str, result: CallResult) -> Result<ResultAck> {
        if let Some(ack) = self.deliver_here(device_id, &result, true)? {
            return Ok(ack);
        }
        let call_id = result.call_id.clone();
        let Some(cluster) = self.cluster() else {
            return Err(Error::CallUnknown { call_id });
        };
        // Its caller: known here if this replica pushed it, else in the store.
        let routed = self.state().routed.get(&call_id).cloned();
        let (device, caller) = match routed {
            Some(routed) => routed,
            None => match self.inner.store.pending_call(&call_id).await? {
                Some(row) => (row.device_id, row.caller),
                None => return Err(Error::CallUnknown { call_id }),
            },
        };
        if device != device_id {
            return Err(Error::CallNotYours { call_id });
        }
        let from_holder = {
            let mut state = self.state();
            state.routed.remove(&call_id);
            state.slots.get_mut(device_id).is_some_and(|slot| {
                slot.outstanding.retain(|_, c| c.call_id != call_id);
                slot.session.is_some()
            })
        };
        match cluster
            .bus
            .route_result(&caller, device_id, &result, from_holder)
            .await?
        {
            Some(Ok(ack)) => Ok(ack),
            Some(Err(WireError { code })) if code == "call_not_yours" => Err(Error::CallNotYours { call_id }),
            Some(Err(_)) => Err(Error::CallUnknown { call_id }),
            None => {
                // The replica that made the call is gone, and its caller
                // with it: nobody waits.
                tracing::warn!(
                    call_id,
                    device_id,
                    "a result arrived for a call whose replica is gone"
                );
                self.inner.store.remove_pending_call(&call_id).await?;
                Ok(ResultAck { accepted: false })
            }
        }
    }

    /// Delivers a result to a caller waiting on this replica; `None` when
    /// no call here knows it. `tell_holder`: the replica holding the
    /// stream may still have the call queued, and is told it is done.
    fn deliver_here(
        &self,
        device_id: &str,
        result: &CallResult,
        tell_holder: bool,
    ) -> Result<Option<ResultAck>> {
        let mut state = self.state();
        let call_id = result.call_id.clone();
        match state.pending.get(&call_id) {
            Some(p) if p.device_id != device_id => return Err(Error::CallNotYours { call_id }),
            Some(_) => {}
            None => {
                return match state.finished.get(&call_id) {
                    Some(owner_device) if owner_device == device_id => {
                        Ok(Some(ResultAck { accepted: false }))
                    }
                    Some(_) => Err(Error::CallNotYours { call_id }),
                    None => Ok(None),
                };
            }
        }
        let Some(pending) = state.pending.remove(&call_id) else {
            return Ok(None);
        };
        let mut held_here = false;
        if let Some(slot) = state.slots.get_mut(device_id) {
            slot.outstanding.retain(|_, c| c.call_id != call_id);
            held_here = slot.session.is_some();
        }
        state.remember_finished(call_id.clone(), device_id);
        drop(state);
        if let Some(cluster) = self.cluster() {
            let (bus, store, device_id) = (
                Arc::clone(&cluster.bus),
                Arc::clone(&self.inner.store),
                device_id.to_string(),
            );
            tokio::spawn(async move {
                if let Err(e) = store.remove_pending_call(&call_id).await {
                    tracing::warn!(error = %e, call_id, "could not forget an answered call");
                }
                if !held_here && tell_holder {
                    bus.finish_call(&device_id, &call_id, None).await;
                }
            });
        }
        let _ = pending.tx.send(Ok(result.clone()));
        Ok(Some(ResultAck { accepted: true }))
    }

    /// Records the device's manifest (`PUT /manifest`).
    pub(crate) async fn set_manifest(&self, device: &DeviceRecord, manifest: DeviceManifest) -> Result<()> {
        self.inner.store.save_manifest(&device.id, &manifest).await?;
        self.inner.store.touch_device(&device.id, self.now()).await?;
        self.state().index_tools(&device.id, &device.owner, &manifest);
        Ok(())
    }

    /// Opens a stream for the device: replaces an older one, then queues
    /// every call it was sent but has not answered.
    pub(crate) fn connect(&self, device: &DeviceRecord) -> (String, mpsc::UnboundedReceiver<StreamMsg>) {
        let session_id = new_id("ses_");
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut state = self.state();
            let slot = state.slot(&device.id, &device.owner);
            let new = Session {
                id: session_id.clone(),
                tx,
                device: device.clone(),
            };
            if let Some(old) = slot.session.replace(new) {
                let _ = old.tx.send(StreamMsg::Replaced(ClosingEvent {
                    message: "a newer connection from this device replaced this one".into(),
                }));
            }
            if let Some(session) = &slot.session {
                for (event_id, call) in &slot.outstanding {
                    let _ = session
                        .tx
                        .send(StreamMsg::Call(*event_id, Box::new(call.clone())));
                }
            }
            slot.online.send_replace(true);
        }
        tracing::info!(device_id = %device.id, session_id, "device connected");
        self.emit(HostEvent::DeviceOnline {
            owner: device.owner.clone(),
            device_id: device.id.clone(),
        });
        (session_id, rx)
    }

    /// Announces the new session to the other replicas (displacing a stream
    /// another one held) and queues the calls the store still has for the
    /// device, made on any replica. Without a cluster, nothing to do. With
    /// NATS away the stream still works for calls made here.
    pub(crate) async fn join_cluster(&self, device: &DeviceRecord, session_id: &str) -> Result<()> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        if let Err(e) = cluster.bus.claim(&device.id, &device.owner, session_id).await {
            tracing::warn!(device_id = %device.id, error = %e, "could not announce the device to the other replicas");
        }
        // A call older than its caller could wait (the offline grace, then
        // its timeout) has nobody waiting: its replica died. It is deleted,
        // not sent: a device back after a day gets no day-old call.
        let now = self.now();
        let mut calls = Vec::new();
        for pending in self.inner.store.pending_calls(&device.id).await? {
            let waited = Duration::from_millis(pending.call.timeout_ms) + self.inner.config.offline_grace;
            if pending.created_at + waited > now {
                calls.push(pending);
            } else {
                tracing::info!(call_id = %pending.call_id, device_id = %device.id, "a call nobody waits for any more is dropped");
                self.inner.store.remove_pending_call(&pending.call_id).await?;
            }
        }
        let mut state = self.state();
        let State { slots, routed, .. } = &mut *state;
        let Some(slot) = slots.get_mut(&device.id) else {
            return Ok(());
        };
        for pending in calls {
            let call_id = pending.call.call_id.clone();
            if slot.push_once(pending.call) && pending.caller != cluster.replica() {
                routed.insert(call_id, (device.id.clone(), pending.caller));
            }
        }
        Ok(())
    }

    /// Closes the device's session if it is still the current one.
    pub(crate) fn disconnect(&self, device_id: &str, session_id: &str) {
        if let Some(cluster) = self.cluster() {
            let (bus, device_id, session_id) = (
                Arc::clone(&cluster.bus),
                device_id.to_string(),
                session_id.to_string(),
            );
            tokio::spawn(async move { bus.release(&device_id, &session_id).await });
        }
        let owner = {
            let mut state = self.state();
            let Some(slot) = state.slots.get_mut(device_id) else {
                return;
            };
            if slot.session.as_ref().is_none_or(|s| s.id != session_id) {
                return;
            }
            slot.session = None;
            let online = slot.is_online();
            slot.online.send_replace(online);
            slot.owner.clone()
        };
        tracing::info!(device_id, session_id, "device disconnected");
        self.emit(HostEvent::DeviceOffline {
            owner,
            device_id: device_id.to_string(),
        });
        let store = Arc::clone(&self.inner.store);
        let (device_id, now) = (device_id.to_string(), self.now());
        tokio::spawn(async move {
            if let Err(e) = store.touch_device(&device_id, now).await {
                tracing::warn!(error = %e, "could not record the device's last-seen time");
            }
        });
    }
}

fn ok_output(result: CallResult) -> Result<ToolOutput> {
    if !result.ok {
        let error = result.error.unwrap_or_else(|| {
            ErrorBody::new("tool_failed", "the device reported a failure without details")
        });
        return Err(Error::Tool(error));
    }
    Ok(ToolOutput {
        call_id: result.call_id,
        output: result.output.unwrap_or(Value::Null),
        truncated: result.truncated,
        duration_ms: result.duration_ms,
    })
}

impl Slot {
    fn is_online(&self) -> bool {
        self.session.is_some() || self.remote.is_some()
    }

    /// Queues a call and pushes it to the stream, unless it is queued
    /// already (it can reach the holder both from the store and by request).
    fn push_once(&mut self, call: CallEvent) -> bool {
        if self.outstanding.values().any(|c| c.call_id == call.call_id) {
            return self.session.is_some();
        }
        let Some(session) = &self.session else {
            return false;
        };
        self.next_event_id += 1;
        let event_id = self.next_event_id;
        let _ = session.tx.send(StreamMsg::Call(event_id, Box::new(call.clone())));
        self.outstanding.insert(event_id, call);
        true
    }
}

/// Handles what other replicas send, for as long as the dispatcher lives.
async fn serve_inbound(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Inbound>) {
    while let Some(msg) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        Dispatcher { inner }.inbound(msg);
    }
}

impl Dispatcher {
    fn inbound(&self, msg: Inbound) {
        match msg {
            Inbound::Call {
                device_id,
                call,
                caller,
                held,
            } => {
                let mut state = self.state();
                let call_id = call.call_id.clone();
                let pushed = state
                    .slots
                    .get_mut(&device_id)
                    .is_some_and(|slot| slot.push_once(*call));
                if pushed {
                    state.routed.insert(call_id, (device_id, caller));
                }
                drop(state);
                let _ = held.send(pushed);
            }
            Inbound::Cancel {
                device_id,
                call_id,
                reason,
            } => {
                let mut state = self.state();
                state.routed.remove(&call_id);
                if let Some(slot) = state.slots.get_mut(&device_id) {
                    slot.outstanding.retain(|_, c| c.call_id != call_id);
                    if let Some(session) = &slot.session {
                        let _ = session
                            .tx
                            .send(StreamMsg::Cancel(CancelEvent { call_id, reason }));
                    }
                }
            }
            Inbound::Done { device_id, call_id } => {
                let mut state = self.state();
                state.routed.remove(&call_id);
                if let Some(slot) = state.slots.get_mut(&device_id) {
                    slot.outstanding.retain(|_, c| c.call_id != call_id);
                }
            }
            Inbound::Displace {
                device_id,
                session_id,
                by,
            } => {
                let mut state = self.state();
                if let Some(slot) = state.slots.get_mut(&device_id)
                    && slot.session.as_ref().is_some_and(|s| s.id == session_id)
                    && let Some(old) = slot.session.take()
                {
                    tracing::info!(
                        device_id,
                        session_id,
                        replica = by,
                        "device moved to another replica"
                    );
                    let _ = old.tx.send(StreamMsg::Replaced(ClosingEvent {
                        message: "a newer connection from this device replaced this one".into(),
                    }));
                    slot.remote = Some(by);
                    slot.online.send_replace(true);
                }
            }
            Inbound::Revoked { device_id } => self.close_revoked(&device_id),
            Inbound::Result {
                device_id,
                result,
                from_holder,
                ack,
            } => {
                let answer = match self.deliver_here(&device_id, &result, !from_holder) {
                    Ok(Some(a)) => Ok(a),
                    Ok(None) => Err(WireError {
                        code: "call_unknown".into(),
                    }),
                    Err(e) => Err(WireError {
                        code: e.code().to_string(),
                    }),
                };
                let _ = ack.send(answer);
            }
            Inbound::Holder {
                device_id,
                owner,
                replica,
            } => {
                let here = self.cluster().map(Cluster::replica);
                let remote = replica.filter(|r| Some(r.as_str()) != here);
                let mut state = self.state();
                let slot = state.slot(&device_id, &owner);
                if remote.is_some() && slot.remote != remote {
                    // A new stream elsewhere may have sent a new manifest.
                    slot.tools = None;
                }
                slot.remote = remote;
                let online = slot.is_online();
                slot.online.send_replace(online);
            }
            Inbound::Event(event) => {
                let _ = self.inner.events.send(event);
            }
        }
    }
}

impl State {
    fn slot(&mut self, device_id: &str, owner: &str) -> &mut Slot {
        self.slots.entry(device_id.to_string()).or_insert_with(|| Slot {
            owner: owner.to_string(),
            session: None,
            remote: None,
            online: watch::Sender::new(false),
            tools: None,
            next_event_id: 0,
            outstanding: BTreeMap::new(),
        })
    }

    /// Indexes a manifest's tool classes into the device's slot, sharing an
    /// identical index another device already has.
    fn index_tools(&mut self, device_id: &str, owner: &str, manifest: &DeviceManifest) -> Arc<ToolIndex> {
        let index: ToolIndex = manifest.tools.iter().map(|t| (t.name.clone(), t.class)).collect();
        self.indexes.retain(|i| Arc::strong_count(i) > 1);
        let shared = match self.indexes.iter().find(|i| ***i == index) {
            Some(i) => Arc::clone(i),
            None => {
                let i = Arc::new(index);
                self.indexes.push(Arc::clone(&i));
                i
            }
        };
        self.slot(device_id, owner).tools = Some(Arc::clone(&shared));
        shared
    }

    fn remember_finished(&mut self, call_id: String, device_id: &str) {
        let now = Instant::now();
        while let Some((at, _)) = self.finished_order.front() {
            if now.duration_since(*at) < FINISHED_TTL && self.finished_order.len() < FINISHED_MAX {
                break;
            }
            if let Some((_, id)) = self.finished_order.pop_front() {
                self.finished.remove(&id);
            }
        }
        self.finished.insert(call_id.clone(), device_id.to_string());
        self.finished_order.push_back((now, call_id));
    }
}

/// Cleans up a call that ends without a result (timeout, device offline, the
/// caller's future dropped): forgets it and tells the device to cancel.
struct CallGuard<'a> {
    dispatcher: &'a Dispatcher,
    device_id: &'a str,
    call_id: &'a str,
    event_id: u64,
    reason: &'static str,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.dispatcher.state();
        state.pending.remove(self.call_id);
        let mut held_here = false;
        if let Some(slot) = state.slots.get_mut(self.device_id) {
            slot.outstanding.remove(&self.event_id);
            if let Some(session) = &slot.session {
                held_here = true;
                let _ = session.tx.send(StreamMsg::Cancel(CancelEvent {
                    call_id: self.call_id.to_string(),
                    reason: self.reason.to_string(),
                }));
            }
        }
        drop(state);
        if let Some(cluster) = self.dispatcher.cluster()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (bus, store) = (Arc::clone(&cluster.bus), Arc::clone(&self.dispatcher.inner.store));
            let (device_id, call_id, reason) =
                (self.device_id.to_string(), self.call_id.to_string(), self.reason);
            runtime.spawn(async move {
                if let Err(e) = store.remove_pending_call(&call_id).await {
                    tracing::warn!(error = %e, call_id, "could not forget a cancelled call");
                }
                if !held_here {
                    bus.finish_call(&device_id, &call_id, Some(reason)).await;
                }
            });
        }
    }
}
