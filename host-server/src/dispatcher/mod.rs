//! The dispatcher: routes calls to connected devices and awaits results,
//! turns mutate calls into stored proposals, and applies the stored input
//! once a person approves.
//!
//! Per-device state is a small slot in one map behind a `std::sync::Mutex`
//! that is never held across an `.await`; an idle connected device costs a
//! slot, a channel and its SSE stream.

mod calls;
mod config;
mod devices;
mod proposals;
mod replicas;
mod sessions;
mod state;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use fusion_protocol::Class;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::credentials::EnrollLimiter;
use crate::events::HostEvent;
use crate::store::Store;

pub use calls::{CallOptions, CallOutcome, ToolOutput};
pub use config::{Config, MAX_HEARTBEAT};
pub(crate) use devices::check_device_fields;
pub use devices::{DeviceStatus, PairingCode};
use state::State;
pub(crate) use state::StreamMsg;

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
    /// How this replica answers the others' questions about MCP tasks.
    task_answers: Mutex<Option<replicas::TaskAnswers>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        replicas::detach(self);
    }
}

impl Dispatcher {
    /// A dispatcher over the app's store. A heartbeat above the protocol's
    /// ceiling ([`config::MAX_HEARTBEAT`], 15 s) is lowered to it, with a
    /// warning: devices count about three silent heartbeats as a dead
    /// connection, so a slower one would make them reconnect for nothing.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        let mut config = config;
        if config.heartbeat > config::MAX_HEARTBEAT || config.heartbeat.is_zero() {
            tracing::warn!(
                asked = ?config.heartbeat,
                used = ?config::MAX_HEARTBEAT,
                "the heartbeat must be between 1 ms and 15 s (docs/PROTOCOL.md); using 15 s"
            );
            config.heartbeat = config::MAX_HEARTBEAT;
        }
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
                task_answers: Mutex::new(None),
            }),
        };
        replicas::attach(&dispatcher);
        dispatcher
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The blob store, when files by handle are on.
    #[cfg(feature = "blobs")]
    pub fn blobs(&self) -> crate::error::Result<&crate::blobs::Blobs> {
        self.inner
            .config
            .blobs
            .as_ref()
            .ok_or(crate::error::Error::BlobsUnavailable)
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
        self.share_event(&event);
        // No receivers is normal: nobody has a page open.
        let _ = self.inner.events.send(event);
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
}
