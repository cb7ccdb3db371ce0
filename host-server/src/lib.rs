//! The fusion-host dispatcher, and the device-facing HTTP/SSE routes an axum
//! backend nests into its app.
//!
//! Devices dial out: each holds one Server-Sent Events stream (`GET /stream`)
//! and posts results back (`POST /result`). The app calls
//! [`Dispatcher::call`] from its own handlers; the dispatcher pushes the call
//! down the device's stream and awaits the result. A mutate tool comes back
//! as a stored [`ProposalRecord`]; [`Dispatcher::approve`] re-sends the
//! *stored* input in apply mode, so a client can never swap what gets applied.
//!
//! The crate is schema-agnostic: persistence is the [`Store`] trait, which the
//! app implements on its own tables. [`MemoryStore`] is for tests and demos.
//! The wire protocol is specified in `docs/PROTOCOL.md`.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::sync::Arc;
//!
//! use fusion_host_server::{CallOptions, Config, Dispatcher, MemoryStore, router};
//!
//! # async fn app() -> Result<(), Box<dyn std::error::Error>> {
//! let dispatcher = Dispatcher::new(Arc::new(MemoryStore::new()), Config::default());
//! let app = axum::Router::new().nest("/api/host", router(dispatcher.clone()));
//!
//! // In the app's own handler, for the signed-in user "alice":
//! let outcome = dispatcher
//!     .call("alice", "dev_0123", "list_directory", serde_json::json!({ "path": "." }), CallOptions::default())
//!     .await?;
//!
//! // On SIGTERM/Ctrl-C the app calls `dispatcher.shutdown()`: device streams
//! // end, so graceful shutdown does not wait on them.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!     .with_graceful_shutdown(dispatcher.stopped())
//!     .await?;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "blobs")]
pub mod blobs;
pub mod cluster;
mod credentials;
mod device_flow;
mod dispatcher;
mod error;
mod events;
#[cfg(feature = "mcp")]
pub mod mcp;
mod routes;
mod store;
mod time;

pub use credentials::{CODE_ALPHABET, CODE_LEN};
pub use device_flow::DeviceAuthorization;
pub use dispatcher::{
    CallOptions, CallOutcome, Config, DeviceStatus, Dispatcher, MAX_HEARTBEAT, PairingCode, ToolOutput,
};
pub use error::{Error, Result};
pub use events::HostEvent;
#[cfg(feature = "blobs")]
pub use routes::blob_response;
pub use routes::router;
pub use store::{
    CallLogEntry, DeviceAuthorizationRecord, DeviceAuthorizationStatus, DeviceRecord, LOGGED_PATHS,
    ManifestSummary, MemoryStore, PairingCodeRecord, PendingCallRecord, ProposalRecord, ProposalStatus,
    ProposalUpdate, Store, StoreError, StoreResult,
};
pub use time::{Clock, ManualClock};
