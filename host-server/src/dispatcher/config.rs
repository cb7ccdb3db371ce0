//! How the dispatcher behaves: [`Config`] and its defaults.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::time::Clock;

/// The longest heartbeat the protocol allows: a device takes about three
/// heartbeats of silence for a dead connection.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(15);

/// How the dispatcher behaves. The defaults suit production; what only the
/// app knows it sets: [`Config::verification_uri`] (device login is off
/// without it), [`Config::trust_forwarded_for`] behind a proxy, and the
/// blob store and cluster when it uses them. See `docs/EMBEDDING.md`.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a call to an offline device waits for it to connect.
    /// Default 10 s: a device whose stream the server closed (a restart)
    /// retries within 1 s, so a restart shorter than ~9 s costs no call.
    pub offline_grace: Duration,
    /// How long a call waits for its result unless the caller says otherwise. Default 60 s.
    pub call_timeout: Duration,
    /// How often an idle stream gets a `: ping` comment. Default 10 s; at
    /// most [`MAX_HEARTBEAT`] (15 s, the protocol's promise): more is lowered
    /// to it.
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
