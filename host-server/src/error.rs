//! The dispatcher's error type and its one mapping to HTTP responses.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fusion_protocol::ErrorBody;

use crate::store::{ProposalStatus, StoreError};

/// Everything the dispatcher and the device routes can refuse or fail with.
///
/// A device or proposal the caller does not own is reported exactly like one
/// that does not exist.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such device for this user.
    #[error("device {device_id} was not found; check /devices for your paired devices")]
    DeviceNotFound {
        /// The id asked for.
        device_id: String,
    },
    /// The device did not connect within the offline grace.
    #[error("device {device_id} is offline; start fusion-host on that machine and try again")]
    DeviceOffline {
        /// The device.
        device_id: String,
    },
    /// The device was revoked.
    #[error("device {device_id} was revoked; pair it again with a new code from /devices")]
    DeviceRevoked {
        /// The device.
        device_id: String,
    },
    /// The device does not offer that tool.
    #[error("device {device_id} has no tool `{tool}`; it offers: {available}")]
    UnknownTool {
        /// The device.
        device_id: String,
        /// The tool asked for.
        tool: String,
        /// What it offers, comma-separated.
        available: String,
    },
    /// No result came back in time; the device was told to cancel.
    #[error("{tool} on device {device_id} did not answer within {}s; it was cancelled", .after.as_secs_f32())]
    Timeout {
        /// The device.
        device_id: String,
        /// The tool.
        tool: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The tool ran on the device and failed; its code is passed through.
    /// The message is the tool's own: the code travels beside it, in
    /// [`Error::code`], so it is not repeated in the text.
    #[error("{}", .0.message)]
    Tool(ErrorBody),
    /// No such proposal for this user.
    #[error("proposal {proposal_id} was not found")]
    ProposalNotFound {
        /// The id asked for.
        proposal_id: String,
    },
    /// The proposal was decided already.
    #[error("proposal {proposal_id} is already {}; a proposal is decided once", .status.as_str())]
    ProposalResolved {
        /// The proposal.
        proposal_id: String,
        /// Its current status.
        status: ProposalStatus,
    },
    /// The proposal expired before anyone decided.
    #[error("proposal {proposal_id} expired; ask the agent to plan the change again")]
    ProposalExpired {
        /// The proposal.
        proposal_id: String,
    },
    /// The pairing code is malformed, unknown or already used.
    #[error("{0}")]
    InvalidCode(&'static str),
    /// The pairing code's ten minutes are over.
    #[error("this pairing code has expired; mint a new one on /devices (codes last 10 minutes)")]
    CodeExpired,
    /// Too many enroll attempts.
    #[error("too many pairing attempts; wait {}s and try again", .retry_after.as_secs().max(1))]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// No device is asking with this user code (`/device`).
    #[error(
        "no device is asking with that code; check it against the code your device shows (8 letters like WDJB-MJHT)"
    )]
    UserCodeUnknown,
    /// The device's code expired before anyone decided.
    #[error("this code has expired; run `fusion-host login` on the device again for a new one")]
    UserCodeExpired,
    /// The request was decided already.
    #[error(
        "this device was {status} already; a code is decided once, so run `fusion-host login` again to ask anew"
    )]
    UserCodeDecided {
        /// `approved`, `denied` or `issued`.
        status: &'static str,
    },
    /// The bearer token is missing, malformed or unknown.
    #[error("this device's token is not known to the server; pair it again with a new code from /devices")]
    TokenUnknown,
    /// The bearer token belongs to a revoked device.
    #[error("this device was revoked; pair it again with a new code from /devices")]
    TokenRevoked,
    /// A result for a call the server is not waiting for.
    #[error("call {call_id} is unknown or already finished")]
    CallUnknown {
        /// The call id posted.
        call_id: String,
    },
    /// A result for another device's call. Between replicas only: a device
    /// is answered [`Error::CallUnknown`] instead.
    #[error("call {call_id} was not sent to this device")]
    CallNotYours {
        /// The call id posted.
        call_id: String,
    },
    /// No device route has this path.
    #[error("there is no device route {method} {path}; see docs/PROTOCOL.md")]
    RouteNotFound {
        /// The method asked for.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// The route exists but not with this method.
    #[error("{path} does not take {method}")]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// The request body is not what the route takes.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request body is over the limit.
    #[error("the request body is larger than the server accepts ({limit} bytes); send less")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Files by handle are not offered by this server.
    #[error("this server does not keep files; ask its operator to configure a blob store")]
    BlobsUnavailable,
    /// No such blob for this user (or it expired).
    #[error("blob {blob_id} was not found; it may have expired, or belong to someone else")]
    BlobNotFound {
        /// The id asked for.
        blob_id: String,
    },
    /// A file larger than the server keeps.
    #[error("a {size}-byte file is larger than this server keeps ({limit} bytes)")]
    BlobTooLarge {
        /// The size offered.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The owner's files would take more than their quota.
    #[error(
        "the files you keep on the server take {used} bytes of your {quota}; delete some or wait for them to expire"
    )]
    QuotaExceeded {
        /// Bytes in use.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// No such upload in progress (finished, or the server restarted).
    #[error("upload {upload_id} is not in progress; start the upload again")]
    UploadNotFound {
        /// The id asked for.
        upload_id: String,
    },
    /// A chunk that does not start where the upload is.
    #[error("{message}, but the upload has {received} bytes; send from there")]
    UploadOffset {
        /// Where the upload is.
        received: u64,
        /// What was wrong.
        message: String,
    },
    /// Completing an upload that has not received every byte.
    #[error("the upload has {received} of {size} bytes; send the rest first")]
    UploadIncomplete {
        /// Bytes received.
        received: u64,
        /// Bytes declared.
        size: u64,
    },
    /// The uploaded bytes do not hash to what the device said.
    #[error("the uploaded bytes hash to {actual}, not {expected}; the upload was discarded, start it again")]
    DigestMismatch {
        /// What the device said.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The device speaks a protocol version this server does not.
    #[error("protocol version {0} is not supported; this server speaks version {v}; update fusion-host", v = fusion_protocol::PROTOCOL_VERSION)]
    ProtocolUnsupported(String),
    /// The server is shutting down.
    #[error("the server is shutting down; try again shortly")]
    ShuttingDown,
    /// The device is held by another replica and this one cannot reach the
    /// others (NATS is down); it reconnects by itself.
    #[error(
        "the server cannot reach its other replicas right now to find device {device_id}; try again shortly"
    )]
    ClusterUnavailable {
        /// The device.
        device_id: String,
    },
    /// The app's store failed.
    #[error("the server could not reach its database; try again")]
    Store(#[from] StoreError),
    /// The blob store (or the staging folder) failed.
    #[error("the server could not store or read the file; try again, and tell its operator if it persists")]
    BlobStore(StoreError),
}

impl Error {
    /// The stable snake_case code.
    pub fn code(&self) -> &str {
        match self {
            Error::DeviceNotFound { .. } => "device_not_found",
            Error::DeviceOffline { .. } => "device_offline",
            Error::DeviceRevoked { .. } => "device_revoked",
            Error::UnknownTool { .. } => "unknown_tool",
            Error::Timeout { .. } => "timeout",
            Error::Tool(body) => &body.code,
            Error::ProposalNotFound { .. } => "proposal_not_found",
            Error::ProposalResolved { .. } => "proposal_resolved",
            Error::ProposalExpired { .. } => "proposal_expired",
            Error::InvalidCode(_) => "invalid_code",
            Error::CodeExpired => "code_expired",
            Error::RateLimited { .. } => "rate_limited",
            Error::UserCodeUnknown => "invalid_user_code",
            Error::UserCodeExpired => "user_code_expired",
            Error::UserCodeDecided { .. } => "user_code_used",
            Error::TokenUnknown => "token_unknown",
            Error::TokenRevoked => "token_revoked",
            Error::CallUnknown { .. } => "call_unknown",
            Error::CallNotYours { .. } => "call_not_yours",
            Error::RouteNotFound { .. } => "route_not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::InvalidRequest(_) => "invalid_request",
            Error::TooLarge { .. } => "too_large",
            Error::ProtocolUnsupported(_) => "protocol_unsupported",
            Error::BlobsUnavailable => "blobs_unavailable",
            Error::BlobNotFound { .. } => "blob_not_found",
            Error::BlobTooLarge { .. } => "too_large",
            Error::QuotaExceeded { .. } => "quota_exceeded",
            Error::UploadNotFound { .. } => "upload_not_found",
            Error::UploadOffset { .. } => "upload_offset",
            Error::UploadIncomplete { .. } => "upload_incomplete",
            Error::DigestMismatch { .. } => "digest_mismatch",
            Error::ShuttingDown => "shutting_down",
            Error::ClusterUnavailable { .. } => "cluster_unavailable",
            Error::Store(_) | Error::BlobStore(_) => "internal",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::DeviceNotFound { .. }
            | Error::UnknownTool { .. }
            | Error::ProposalNotFound { .. }
            | Error::CallUnknown { .. }
            | Error::RouteNotFound { .. }
            | Error::BlobsUnavailable
            | Error::BlobNotFound { .. }
            | Error::UploadNotFound { .. } => StatusCode::NOT_FOUND,
            Error::UploadOffset { .. } | Error::UploadIncomplete { .. } => StatusCode::CONFLICT,
            Error::DigestMismatch { .. } => StatusCode::BAD_REQUEST,
            Error::BlobTooLarge { .. } | Error::QuotaExceeded { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::DeviceOffline { .. } | Error::ShuttingDown | Error::ClusterUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::DeviceRevoked { .. } | Error::ProposalExpired { .. } => StatusCode::GONE,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Tool(body) if body.code == "conflict" => StatusCode::CONFLICT,
            Error::Tool(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::ProposalResolved { .. } | Error::UserCodeDecided { .. } => StatusCode::CONFLICT,
            Error::InvalidCode(_)
            | Error::CodeExpired
            | Error::UserCodeUnknown
            | Error::UserCodeExpired
            | Error::InvalidRequest(_)
            | Error::ProtocolUnsupported(_) => StatusCode::BAD_REQUEST,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::TokenUnknown | Error::TokenRevoked => StatusCode::UNAUTHORIZED,
            Error::CallNotYours { .. } => StatusCode::FORBIDDEN,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Store(_) | Error::BlobStore(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How long to wait before trying again, for a refusal that says
    /// (`rate_limited`); what the `Retry-After` header carries.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the same request may succeed later without changes.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::DeviceOffline { .. }
                | Error::Timeout { .. }
                | Error::RateLimited { .. }
                | Error::ShuttingDown
                | Error::ClusterUnavailable { .. }
                | Error::Store(_)
                | Error::BlobStore(_)
        )
    }

    /// The wire form; a device's error keeps its `details`.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            Error::Tool(body) => ErrorBody {
                message: self.to_string(),
                ..body.clone()
            },
            _ => ErrorBody::new(self.code(), self.to_string()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Store(e) | Error::BlobStore(e) = &self {
            tracing::error!(error = %e, "store failure");
        }
        let mut response = (self.status(), Json(self.to_body())).into_response();
        if let Some(retry_after) = self.retry_after() {
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// A result of the dispatcher.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_error_says_its_code_once() {
        let e = Error::Tool(ErrorBody::new(
            "outside_scope",
            "../etc is outside the allowed folders",
        ));
        assert_eq!(e.code(), "outside_scope");
        assert_eq!(e.to_string(), "../etc is outside the allowed folders");
    }

    /// Every code [`Error::code`] can give, read from its source: the
    /// compiler makes that match cover every variant, so a new variant's
    /// code is here without anyone listing it.
    fn codes_in_source() -> Vec<&'static str> {
        let source = include_str!("error.rs");
        let body = source
            .split("pub fn code(&self) -> &str {")
            .nth(1)
            .and_then(|rest| rest.split("\n    }\n").next())
            .expect("Error::code in error.rs");
        body.split("=> \"")
            .skip(1)
            .filter_map(|arm| arm.split('"').next())
            .collect()
    }

    /// `docs/PROTOCOL.md` names every code the dispatcher can answer with
    /// (`call_not_yours` passes only between replicas: a device hears
    /// `call_unknown`).
    #[test]
    fn protocol_md_names_every_code_in_the_source() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let codes = codes_in_source();
        assert!(codes.len() >= 30, "reading Error::code found only {codes:?}");
        for code in codes.into_iter().filter(|c| *c != "call_not_yours") {
            assert!(
                doc.contains(&format!("`{code}`")),
                "docs/PROTOCOL.md does not mention `{code}`"
            );
        }
    }

    /// Each code's status, as `docs/PROTOCOL.md` gives it.
    #[test]
    fn protocol_md_lists_every_code() {
        let doc = include_str!("../../docs/PROTOCOL.md")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let id = || "x".to_string();
        let all = [
            Error::DeviceNotFound { device_id: id() },
            Error::DeviceOffline { device_id: id() },
            Error::DeviceRevoked { device_id: id() },
            Error::UnknownTool {
                device_id: id(),
                tool: id(),
                available: id(),
            },
            Error::Timeout {
                device_id: id(),
                tool: id(),
                after: Duration::from_secs(1),
            },
            Error::ProposalNotFound { proposal_id: id() },
            Error::ProposalResolved {
                proposal_id: id(),
                status: ProposalStatus::Applied,
            },
            Error::ProposalExpired { proposal_id: id() },
            Error::InvalidCode("x"),
            Error::CodeExpired,
            Error::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            Error::UserCodeUnknown,
            Error::UserCodeExpired,
            Error::UserCodeDecided { status: "denied" },
            Error::TokenUnknown,
            Error::TokenRevoked,
            Error::CallUnknown { call_id: id() },
            // CallNotYours passes only between replicas; a device hears call_unknown.
            Error::InvalidRequest(id()),
            Error::RouteNotFound {
                method: id(),
                path: id(),
            },
            Error::MethodNotAllowed {
                method: id(),
                path: id(),
            },
            Error::TooLarge { limit: 1 },
            Error::ProtocolUnsupported(id()),
            Error::ShuttingDown,
            Error::ClusterUnavailable { device_id: id() },
            Error::BlobsUnavailable,
            Error::BlobNotFound { blob_id: id() },
            Error::QuotaExceeded { used: 1, quota: 1 },
            Error::UploadNotFound { upload_id: id() },
            Error::UploadOffset {
                received: 1,
                message: id(),
            },
            Error::UploadIncomplete { received: 1, size: 2 },
            Error::DigestMismatch {
                expected: id(),
                actual: id(),
            },
            Error::BlobTooLarge { size: 2, limit: 1 },
            Error::Store(StoreError::new("x")),
            Error::BlobStore(StoreError::new("x")),
        ];
        for e in all {
            let code = format!("`{}`", e.code());
            assert!(doc.contains(&code), "docs/PROTOCOL.md does not mention {code}");
            let status = format!("({})", e.status().as_u16());
            let row = format!("| {} | {code}", e.status().as_u16());
            assert!(
                doc.contains(&row) || doc.contains(&format!("{code} {status}")),
                "docs/PROTOCOL.md does not give {code} its status {}",
                e.status().as_u16()
            );
        }
    }
}
