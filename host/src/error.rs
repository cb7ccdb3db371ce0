//! The device runtime's error type.

use std::path::PathBuf;

use fusion_tools::ErrorBody;

/// Everything the device runtime can fail with. Messages say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server's certificate chain ends at an issuer this device does not trust.
    #[error(
        "the server's certificate is issued by \"{issuer}\", which this device does not trust; \
         if your organisation runs its own certificate authority, pass its root certificate with \
         --ca-cert FILE (or FUSION_HOST_CA_CERT), or install it in the system trust store"
    )]
    UntrustedIssuer {
        /// The issuer's distinguished name, as the certificate states it.
        issuer: String,
    },
    /// Another TLS failure (expired certificate, wrong host name, ...).
    #[error("TLS with {server} failed: {message}")]
    Tls {
        /// The server URL.
        server: String,
        /// What rustls reported.
        message: String,
    },
    /// The server address is not an `http://` or `https://` URL.
    #[error("`{server}` is not a server address: {message}")]
    BadServerUrl {
        /// The address as given.
        server: String,
        /// What is wrong and what to type instead.
        message: String,
    },
    /// The server could not be reached.
    #[error(
        "cannot reach {server}: {message}; check the address and the network (and HTTPS_PROXY if you use one)"
    )]
    Unreachable {
        /// The server URL.
        server: String,
        /// What failed.
        message: String,
    },
    /// The server answered with an error body.
    #[error("{message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The stable code (`invalid_code`, `token_revoked`, ...).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server answered something that is not the protocol (a proxy's
    /// login page, a different service).
    #[error("{server} did not answer as a fusion-host server (HTTP {status}); check the server address")]
    NotAServer {
        /// The server URL.
        server: String,
        /// HTTP status.
        status: u16,
    },
    /// This device was revoked, or its token is unknown: it must be paired again.
    #[error("this device was revoked — pair it again with a new code from /devices")]
    Revoked,
    /// Another process connected with this device's credentials and took over.
    #[error(
        "another fusion-host connected with this device's credentials and replaced this one; this one stops"
    )]
    Replaced,
    /// The person denied this device's login on the server.
    #[error(
        "the login was denied on the server; nothing was saved. Run `fusion-host login` again if that was a mistake"
    )]
    LoginDenied,
    /// Nobody approved the login code in time.
    #[error("nobody approved the code in time; run `fusion-host login` again for a new one")]
    LoginExpired,
    /// The device is not enrolled.
    #[error(
        "this device is not paired yet; run `fusion-host enroll --server URL --code CODE` with a code from /devices"
    )]
    NotEnrolled,
    /// The credentials file is unreadable or malformed.
    #[error("cannot use the credentials file {}: {message}; run `fusion-host logout` and pair again", .path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The extra CA bundle could not be read.
    #[error("cannot read the CA certificate bundle {}: {message}", .path.display())]
    CaBundle {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Local I/O failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether reconnecting cannot help (the device must be re-paired or
    /// reconfigured), as opposed to a network blip.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Unreachable { .. } => false,
            Error::Server { status, .. } => !(*status == 429 || *status >= 500),
            Error::NotAServer { status, .. } => !(*status == 429 || *status >= 500),
            _ => true,
        }
    }

    /// The stable code of a server error, if this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Builds the error for a non-success response body.
    pub(crate) fn from_response(server: &str, status: u16, body: &[u8]) -> Error {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) if status == 401 => {
                if b.code == "token_revoked" || b.code == "token_unknown" {
                    Error::Revoked
                } else {
                    Error::Server {
                        status,
                        code: b.code,
                        message: b.message,
                    }
                }
            }
            Ok(b) => Error::Server {
                status,
                code: b.code,
                message: b.message,
            },
            Err(_) => Error::NotAServer {
                server: server.to_string(),
                status,
            },
        }
    }
}

/// A result of the device runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;
