//! OAuth clients' metadata documents over real TLS, for the tests of
//! signing in to `/mcp`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::json;

use super::App;

/// Client metadata documents on `https://localhost:PORT/…`, signed by a CA
/// the app is told to trust (`SSL_CERT_FILE`).
pub struct Documents {
    pub url: String,
    ca_file: PathBuf,
    docs: Arc<Mutex<HashMap<String, (u16, String)>>>,
    _dir: tempfile::TempDir,
}

impl Documents {
    pub async fn start() -> Documents {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "OAuth Test Root CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let docs: Arc<Mutex<HashMap<String, (u16, String)>>> = Arc::default();
        let served = Arc::clone(&docs);
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let found = served.lock().unwrap().get(uri.path()).cloned();
            async move {
                match found {
                    Some((status, body)) => (
                        StatusCode::from_u16(status).unwrap(),
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    ),
                    None => (
                        StatusCode::NOT_FOUND,
                        [(axum::http::header::CONTENT_TYPE, "text/plain")],
                        "no such document".to_string(),
                    ),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        Documents {
            url: format!("https://localhost:{port}"),
            ca_file,
            docs,
            _dir: dir,
        }
    }

    /// Serves `body` at `path`; returns the document's URL, the client id.
    pub fn put(&self, path: &str, status: u16, body: String) -> String {
        self.docs.lock().unwrap().insert(path.into(), (status, body));
        format!("{}{path}", self.url)
    }

    /// A well-formed document for a client named `name` at `path` that
    /// returns to `redirect`.
    pub fn client(&self, path: &str, name: &str, redirect: &str) -> String {
        let id = format!("{}{path}", self.url);
        let doc = json!({
            "client_id": id,
            "client_name": name,
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        });
        self.put(path, 200, doc.to_string())
    }

    /// The app, trusting this CA, with documents allowed on loopback.
    pub fn app(&self, private_allowed: bool) -> App {
        let args: &[&str] = if private_allowed {
            &["--oauth-private-client-metadata"]
        } else {
            &[]
        };
        App::start_with_env(None, args, &[("SSL_CERT_FILE", self.ca_file.to_str().unwrap())])
    }
}
