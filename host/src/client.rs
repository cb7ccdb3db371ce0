//! The HTTP client the device uses: rustls with the OS trust store plus an
//! optional extra CA bundle, TCP keepalive, no total timeout (the stream is
//! long-lived), proxies from `HTTPS_PROXY`/`NO_PROXY`. And the diagnosis that
//! turns "unknown issuer" into the issuer's name.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusion_tools::{PROTOCOL_HEADER, PROTOCOL_VERSION};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, Result};

/// The path all device routes live under on the server.
pub const DEVICE_PREFIX: &str = "/api/host";

/// A configured client for one server.
#[derive(Debug, Clone)]
pub struct Http {
    pub(crate) client: reqwest::Client,
    /// The device routes' base, e.g. `https://app.example.com/api/host`.
    pub(crate) base: String,
}

/// The device routes' base URL for a server address: the app's public URL
/// with `/api/host` appended unless it is there already.
pub fn device_base(server: &str) -> String {
    let trimmed = server.trim().trim_end_matches('/');
    if trimmed.ends_with(DEVICE_PREFIX) {
        trimmed.to_string()
    } else {
        format!("{trimmed}{DEVICE_PREFIX}")
    }
}

impl Http {
    /// A client for `server`, trusting the OS store plus the certificates in
    /// `ca_cert` (a PEM bundle). There is deliberately no way to skip verification.
    pub fn new(server: &str, ca_cert: Option<&Path>, host_version: &str) -> Result<Http> {
        check_server_url(server)?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_native_certs(true)
            .user_agent(format!("fusion-host/{host_version}"))
            .connect_timeout(Duration::from_secs(15))
            .tcp_keepalive(Duration::from_secs(30))
            .default_headers(
                [(
                    reqwest::header::HeaderName::from_static(PROTOCOL_HEADER),
                    reqwest::header::HeaderValue::from(PROTOCOL_VERSION),
                )]
                .into_iter()
                .collect(),
            );
        if let Some(path) = ca_cert {
            let bad = |message: String| Error::CaBundle {
                path: path.to_path_buf(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("it contains no PEM certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| Error::Tls {
            server: server.to_string(),
            message: e.to_string(),
        })?;
        Ok(Http {
            client,
            base: device_base(server),
        })
    }

    /// The underlying HTTP client (for diagnostics).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The device routes' base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of a device route.
    pub(crate) fn url(&self, route: &str) -> String {
        format!("{}{route}", self.base)
    }

    /// Turns a transport error into an actionable one. An unknown issuer is
    /// diagnosed by a second handshake that records the presented chain.
    pub async fn explain(&self, e: reqwest::Error) -> Error {
        match find_rustls_error(&e) {
            Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                let issuer = presented_issuer(&self.base)
                    .await
                    .unwrap_or_else(|| "an unknown certificate authority".into());
                Error::UntrustedIssuer { issuer }
            }
            Some(other) => Error::Tls {
                server: self.base.clone(),
                message: other.to_string(),
            },
            None => Error::Unreachable {
                server: self.base.clone(),
                message: root_cause(&e),
            },
        }
    }
}

/// Refuses an address that is not an absolute `http(s)://` URL, saying what
/// to type instead (a bare `host:port` is the usual slip).
fn check_server_url(server: &str) -> Result<()> {
    let server = server.trim();
    let bad = |message: String| {
        Err(Error::BadServerUrl {
            server: server.to_string(),
            message,
        })
    };
    if !server.contains("://") {
        let local =
            server.starts_with("127.") || server.starts_with("localhost") || server.starts_with("[::1]");
        let scheme = if local { "http" } else { "https" };
        return bad(format!(
            "it needs http:// or https:// in front, e.g. {scheme}://{server}; copy the address shown on /devices"
        ));
    }
    match reqwest::Url::parse(server) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") => bad(format!(
            "the scheme is `{}`; use http:// or https://",
            url.scheme()
        )),
        Ok(url) if url.host_str().is_none_or(str::is_empty) => {
            bad("it names no host; use e.g. https://app.example.com".into())
        }
        Ok(_) => Ok(()),
        Err(e) => bad(format!("{e}; use e.g. https://app.example.com")),
    }
}

/// The innermost message of an error chain, for people.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut current = e.source();
    while let Some(inner) = current {
        last = inner.to_string();
        current = inner.source();
    }
    last
}

/// Finds a rustls error in a reqwest error's chain. `io::Error` hides its
/// payload from `source()`, so it is opened explicitly.
fn find_rustls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            // Continue *at* the payload: it may be another io::Error.
            current = Some(inner);
            continue;
        }
        current = err.source();
    }
    None
}

/// Connects to the server once more, only to read the certificate chain it
/// presents, and returns the issuer of the last certificate in it (the one a
/// trusted root would have to vouch for). The verifier used here rejects every
/// certificate, so nothing is ever sent over this connection.
async fn presented_issuer(base: &str) -> Option<String> {
    let url = reqwest::Url::parse(base).ok()?;
    let host = url.host_str()?.to_string();
    let port = url.port_or_known_default()?;
    let captured = Arc::new(Mutex::new(Vec::new()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture {
            chain: Arc::clone(&captured),
            provider,
        }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(host.clone()).ok()?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .ok()?
    .ok()?;
    let _ = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await;
    let chain = captured.lock().ok()?.clone();
    let last = chain.last()?;
    let (_, cert) = x509_parser::parse_x509_certificate(last).ok()?;
    Some(cert.issuer().to_string())
}

/// Records the presented chain and refuses it.
#[derive(Debug)]
struct Capture {
    chain: Arc<Mutex<Vec<Vec<u8>>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            chain.push(end_entity.to_vec());
            chain.extend(intermediates.iter().map(|c| c.to_vec()));
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Tells the server how an automatic update goes (`POST /update`), for its
/// activity log and the owner's page. A server that does not know the
/// route (an older one) or cannot be reached is not an error worth
/// stopping an update for: the outcome is returned for the log.
pub async fn report_update(http: &Http, token: &str, report: &fusion_tools::UpdateReport) -> Result<()> {
    let response = http
        .client
        .post(http.url("/update"))
        .bearer_auth(token)
        .json(report)
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap_or_default();
            Err(Error::from_response(&http.base, status, &body))
        }
        Err(e) => Err(http.explain(e).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_base_appends_the_prefix_once() {
        assert_eq!(
            device_base("https://app.example.com"),
            "https://app.example.com/api/host"
        );
        assert_eq!(
            device_base("https://app.example.com/"),
            "https://app.example.com/api/host"
        );
        assert_eq!(
            device_base("https://app.example.com/api/host/"),
            "https://app.example.com/api/host"
        );
    }

    #[test]
    fn a_server_address_without_a_scheme_says_what_to_type() {
        let e = Http::new("127.0.0.1:8080", None, "0").unwrap_err();
        assert!(matches!(e, Error::BadServerUrl { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("`127.0.0.1:8080`"), "{text}");
        assert!(text.contains("http://127.0.0.1:8080"), "{text}");
        assert!(!text.contains("relative URL"), "{text}");
        let e = Http::new("app.example.com", None, "0").unwrap_err();
        assert!(e.to_string().contains("https://app.example.com"), "{e}");
        let e = Http::new("ftp://app.example.com", None, "0").unwrap_err();
        assert!(e.to_string().contains("`ftp`"), "{e}");
        assert!(Http::new("https://app.example.com", None, "0").is_ok());
        assert!(Http::new(" http://[::1]:8080/ ", None, "0").is_ok());
    }

    #[test]
    fn a_bad_ca_bundle_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let e = Http::new("https://x.test", Some(&path), "0").unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
        let e = Http::new("https://x.test", Some(&dir.path().join("missing.pem")), "0").unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
