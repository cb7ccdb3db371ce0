//! The fusion-host device runtime: enrollment, the credentials file, the
//! outbound SSE dispatch loop, reconnects, and result posting.
//!
//! The device dials out and holds one Server-Sent Events stream; it opens no
//! port. Calls arrive on the stream, run on a blocking thread through the
//! [`fusion_tools::Toolbox`] inside the [`fusion_tools::Scope`], and their
//! results are posted back. See `docs/PROTOCOL.md` for the wire format.
//!
//! ```no_run
//! use fusion_host::{Credentials, HostOptions, Http, enroll, run_host};
//! use fusion_tools::{Access, Scope, Toolbox};
//!
//! # async fn device() -> Result<(), Box<dyn std::error::Error>> {
//! let server = "https://app.example.com";
//! let http = Http::new(server, None, "0.1.0")?;
//! let credentials = enroll(&http, server, "BCDF-GHJK", "survey-laptop", "0.1.0").await?;
//! let scope = Scope::single("/home/me/scans", Access::ReadWrite)?;
//! let host = run_host(HostOptions::new(http, credentials, Toolbox::builtin(), scope, "0.1.0"));
//! // ... on Ctrl-C:
//! host.shutdown();
//! let stopped = host.join().await?;
//! # Ok(())
//! # }
//! ```

mod activity;
mod client;
mod credentials;
mod error;
mod journal;
mod login;
#[cfg(feature = "mcp")]
pub mod mcp;
mod progress;
mod runtime;
mod transfer;

pub use activity::Activity;
pub use client::{DEVICE_PREFIX, Http, device_base, report_update};
pub use credentials::{CREDENTIALS_FILE, Credentials};
pub use error::{Error, Result};
pub use journal::APPLIED_JOURNAL_FILE;
pub use login::{LoginRequest, request_login, wait_for_approval};
pub use runtime::{
    ConnectionState, FAST_RECONNECT, HostHandle, HostOptions, Stopped, Stopper, enroll, run_host,
};
pub use transfer::{BlobHandle, DownloadInput, Downloaded, UploadInput};
