//! Who is asking: OAuth clients known by their Client ID Metadata Document
//! (the `client_id` is an https URL whose JSON document names the client and
//! its redirect URIs) or registered here (RFC 7591).
//!
//! A metadata document is fetched from a URL anyone can name, so the fetch
//! is fenced: https only, no redirects, no proxy, a few seconds, a few KiB,
//! and never an address on the app's own networks (loopback, private,
//! link-local; `--oauth-private-client-metadata` allows the first two for
//! development and tests).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oauth2::basic::BasicErrorResponseType;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;
use sqlx::Row;

use super::OAuthError;
use crate::auth::random_hex;
use crate::db::{Db, millis};

/// The largest metadata document read.
pub(crate) const MAX_DOCUMENT: usize = 16 * 1024;
/// How long fetching one may take in all.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most redirect URIs a client may have.
const MAX_REDIRECT_URIS: usize = 10;
/// The longest URL accepted as a client id or redirect URI.
const MAX_URL: usize = 2000;
/// The longest client name shown.
const MAX_NAME: usize = 100;
/// Registered clients that nobody signed in with are forgotten after this.
const UNUSED_REGISTRATION: Duration = Duration::from_secs(24 * 60 * 60);

/// A client as the consent page and the token endpoint see it.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// A metadata document's URL, or `fhc_…` for a registered client.
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) client_uri: Option<String>,
    /// Milliseconds since the epoch.
    pub(crate) created_at: i64,
}

impl Client {
    /// Whether the client is vouched for by a document at its own address
    /// (else it registered itself here and its name is only its claim).
    pub(crate) fn has_document(&self) -> bool {
        self.id.starts_with("https://")
    }

    /// The host its metadata document lives on, shown on the consent page.
    pub(crate) fn host(&self) -> Option<String> {
        Url::parse(&self.id)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    }

    /// The redirect URI a request names, if it is one of the client's.
    /// A loopback `http` redirect may use any port (RFC 8252 §7.3): native
    /// apps listen on whatever port is free.
    pub(crate) fn redirect_uri(&self, requested: Option<&str>) -> Option<String> {
        let Some(requested) = requested else {
            return match self.redirect_uris.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            };
        };
        let matches = |registered: &String| {
            registered == requested
                || match (Url::parse(registered), Url::parse(requested)) {
                    (Ok(mut a), Ok(mut b)) if a.scheme() == "http" && is_loopback_host(&a) => {
                        let _ = a.set_port(None);
                        let _ = b.set_port(None);
                        a == b
                    }
                    _ => false,
                }
        };
        self.redirect_uris
            .iter()
            .any(matches)
            .then(|| requested.to_string())
    }
}

fn is_loopback_host(url: &Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
}

/// Why a redirect URI is refused, or `None` when it is acceptable: https,
/// http on a loopback address (a native app's local listener), or a
/// private-use scheme (`com.example.app:/callback`, RFC 8252 §7.1); never
/// one that runs or embeds content, and never with a fragment.
pub(crate) fn redirect_uri_problem(uri: &str) -> Option<String> {
    if uri.len() > MAX_URL {
        return Some(format!("a redirect URI is longer than {MAX_URL} characters"));
    }
    let Ok(url) = Url::parse(uri) else {
        return Some(format!("`{uri}` is not an absolute URL"));
    };
    if url.fragment().is_some() {
        return Some(format!("`{uri}` has a fragment; redirect URIs may not"));
    }
    match url.scheme() {
        "https" => None,
        "http" if is_loopback_host(&url) => None,
        "http" => Some(format!(
            "`{uri}` is plain http on another computer; use https, or http on 127.0.0.1 for a local app"
        )),
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" | "ftp" | "ws" | "wss" => {
            Some(format!(
                "`{uri}` uses the `{}` scheme, which cannot be a redirect URI",
                url.scheme()
            ))
        }
        _ => None,
    }
}

fn clean_name(name: Option<&str>, fallback: &str) -> String {
    match name.map(str::trim) {
        Some(n) if !n.is_empty() && !n.chars().any(char::is_control) => n.chars().take(MAX_NAME).collect(),
        _ => fallback.to_string(),
    }
}

fn check_redirect_uris(uris: &[String]) -> Result<(), OAuthError> {
    if uris.is_empty() {
        return Err(OAuthError::named(
            "invalid_redirect_uri",
            "redirect_uris is empty; name where the browser returns after sign-in",
        ));
    }
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::named(
            "invalid_redirect_uri",
            format!(
                "{} redirect URIs; at most {MAX_REDIRECT_URIS} are kept",
                uris.len()
            ),
        ));
    }
    match uris.iter().find_map(|u| redirect_uri_problem(u)) {
        Some(problem) => Err(OAuthError::named("invalid_redirect_uri", problem)),
        None => Ok(()),
    }
}

/// `POST /oauth/register`'s body: RFC 7591 §2, the fields this server uses.
#[derive(Debug, Deserialize)]
pub(crate) struct Registration {
    #[serde(default)]
    redirect_uris: Vec<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
}

/// Registers a public client.
pub(crate) async fn register(db: &Db, r: Registration) -> Result<Client, OAuthError> {
    check_redirect_uris(&r.redirect_uris)?;
    if let Some(grants) = &r.grant_types
        && let Some(other) = grants
            .iter()
            .find(|g| !["authorization_code", "refresh_token"].contains(&g.as_str()))
    {
        return Err(OAuthError::named(
            "invalid_client_metadata",
            format!("grant type `{other}` is not supported; use authorization_code and refresh_token"),
        ));
    }
    if let Some(types) = &r.response_types
        && types.iter().any(|t| t != "code")
    {
        return Err(OAuthError::named(
            "invalid_client_metadata",
            "only the `code` response type is supported",
        ));
    }
    let now = millis(SystemTime::now());
    // Registration is open to anyone: forget the clients nobody used.
    sqlx::query(
        "DELETE FROM oauth_clients WHERE kind = 'registered' AND created_at < $1 \
         AND client_id NOT IN (SELECT client_id FROM oauth_grants)",
    )
    .bind(now - UNUSED_REGISTRATION.as_millis() as i64)
    .execute(&db.pool)
    .await?;
    let client = Client {
        id: format!("fhc_{}", random_hex(16)),
        name: clean_name(r.client_name.as_deref(), "An MCP client"),
        redirect_uris: r.redirect_uris,
        client_uri: r
            .client_uri
            .filter(|u| u.starts_with("https://") && u.len() <= MAX_URL),
        created_at: now,
    };
    save(db, &client, "registered").await?;
    Ok(client)
}

async fn save(db: &Db, client: &Client, kind: &str) -> Result<(), OAuthError> {
    let uris = serde_json::to_string(&client.redirect_uris).unwrap_or_default();
    sqlx::query(
        "INSERT INTO oauth_clients (client_id, name, redirect_uris, client_uri, kind, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (client_id) DO UPDATE SET name = $2, redirect_uris = $3, client_uri = $4, updated_at = $6",
    )
    .bind(&client.id)
    .bind(&client.name)
    .bind(uris)
    .bind(&client.client_uri)
    .bind(kind)
    .bind(client.created_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// A client as last fetched or registered.
pub(crate) async fn stored(db: &Db, id: &str) -> Result<Option<Client>, OAuthError> {
    let row = sqlx::query(
        "SELECT client_id, name, redirect_uris, client_uri, created_at FROM oauth_clients WHERE client_id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let uris: String = row.try_get("redirect_uris")?;
    Ok(Some(Client {
        id: row.try_get("client_id")?,
        name: row.try_get("name")?,
        redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
        client_uri: row.try_get("client_uri")?,
        created_at: row.try_get("created_at")?,
    }))
}

/// The client a `client_id` names: its metadata document fetched now (and
/// kept, for the consent's answer and the token endpoint), or a registered
/// client. The error is for the person's browser, never the redirect URI:
/// until the client is known, nothing it names can be trusted.
pub(crate) async fn resolve(db: &Db, fetcher: &Fetcher, client_id: &str) -> Result<Client, OAuthError> {
    if !client_id.starts_with("https://") {
        return stored(db, client_id)
            .await?
            .filter(|c| !c.has_document())
            .ok_or_else(|| {
                OAuthError::new(
                    BasicErrorResponseType::InvalidClient,
                    format!(
                        "client_id `{client_id}` is neither registered here nor an https URL of a client \
                         metadata document"
                    ),
                )
            });
    }
    let document = fetcher.fetch(client_id).await?;
    let client = Client {
        id: client_id.to_string(),
        name: clean_name(
            document.client_name.as_deref(),
            &Url::parse(client_id)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default(),
        ),
        redirect_uris: document.redirect_uris,
        client_uri: document
            .client_uri
            .filter(|u| u.starts_with("https://") && u.len() <= MAX_URL),
        created_at: millis(SystemTime::now()),
    };
    save(db, &client, "metadata_document").await?;
    Ok(client)
}

/// A Client ID Metadata Document: the fields this server reads.
#[derive(Debug, Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    token_endpoint_auth_method: Option<String>,
    client_secret: Option<serde_json::Value>,
}

/// Fetches client metadata documents, fenced as the module says.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    http: reqwest::Client,
    private_allowed: bool,
}

impl Fetcher {
    pub(crate) fn new(private_allowed: bool) -> anyhow::Result<Fetcher> {
        let http = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(FETCH_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("fusion-host-web/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(PublicOnly { private_allowed }))
            .build()?;
        Ok(Fetcher {
            http,
            private_allowed,
        })
    }

    async fn fetch(&self, client_id: &str) -> Result<Document, OAuthError> {
        let refuse = |why: String| OAuthError::new(BasicErrorResponseType::InvalidClient, why);
        let url = Url::parse(client_id)
            .ok()
            .filter(|_| client_id.len() <= MAX_URL)
            .ok_or_else(|| refuse(format!("client_id `{client_id}` is not a URL")))?;
        if url.path() == "/"
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(refuse(format!(
                "client_id `{client_id}` must be an https URL with a path, and no fragment or user name"
            )));
        }
        // A literal address is never resolved, so it is checked here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !reachable(ip, self.private_allowed)
        {
            return Err(refuse(format!(
                "client_id `{client_id}` names an address on a private network; its metadata document \
                 must be on the public internet"
            )));
        }
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                refuse(format!(
                    "the client metadata document at {client_id} could not be fetched: {}",
                    describe(&e)
                ))
            })?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(refuse(format!(
                "the client metadata document at {client_id} answered HTTP {}; it must answer 200 with JSON",
                response.status().as_u16()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            refuse(format!(
                "the client metadata document at {client_id} broke off: {}",
                describe(&e)
            ))
        })? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT {
                return Err(refuse(format!(
                    "the client metadata document at {client_id} is larger than {} KiB",
                    MAX_DOCUMENT / 1024
                )));
            }
        }
        let document: Document = serde_json::from_slice(&body).map_err(|e| {
            refuse(format!(
                "the client metadata document at {client_id} is not a client's metadata: {e}"
            ))
        })?;
        if document.client_id != client_id {
            return Err(refuse(format!(
                "the client metadata document at {client_id} names another client_id (`{}`)",
                document.client_id
            )));
        }
        if document.client_secret.is_some()
            || document
                .token_endpoint_auth_method
                .as_deref()
                .is_some_and(|m| m != "none")
        {
            return Err(refuse(format!(
                "the client metadata document at {client_id} asks for a client secret; this server takes \
                 public clients (token_endpoint_auth_method none) that prove themselves with PKCE"
            )));
        }
        check_redirect_uris(&document.redirect_uris).map_err(|e| {
            refuse(format!(
                "the client metadata document at {client_id}: {}",
                e.description()
            ))
        })?;
        Ok(document)
    }
}

/// What went wrong in a fetch, without the URL again.
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut message = if e.is_timeout() {
        "it took too long".to_string()
    } else if e.is_connect() {
        "no connection".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// Resolves names to public addresses only.
#[derive(Debug)]
struct PublicOnly {
    private_allowed: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let private_allowed = self.private_allowed;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| reachable(a.ip(), private_allowed))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to addresses on a private network").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Whether the app may connect to `ip` for a client's document.
fn reachable(ip: IpAddr, private_allowed: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let never = v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                // Shared address space (carrier-grade NAT), benchmarking.
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19));
            let private = v4.is_loopback() || v4.is_private();
            !never && (private_allowed || !private)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return reachable(IpAddr::V4(v4), private_allowed);
            }
            let first = v6.segments()[0];
            let never = v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                // NAT64 and 6to4 wrap IPv4 addresses that may be private.
                || (first == 0x0064 && v6.segments()[1] == 0xff9b)
                || first == 0x2002;
            let private = v6.is_loopback() || (first & 0xfe00) == 0xfc00;
            !never && (private_allowed || !private)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_allowed() {
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(reachable(ip.parse().unwrap(), false), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!reachable(ip.parse().unwrap(), false), "{ip} is private");
            assert!(
                reachable(ip.parse().unwrap(), true),
                "{ip} allowed for development"
            );
        }
        for ip in [
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "fe80::1",
            "64:ff9b::a00:1",
            "224.0.0.1",
            "::",
        ] {
            assert!(!reachable(ip.parse().unwrap(), true), "{ip} is never fetched");
        }
    }

    #[test]
    fn redirect_uris_that_cannot_leak_a_code() {
        for ok in [
            "https://app.example.com/callback",
            "http://127.0.0.1:33418/callback",
            "http://localhost/cb",
            "com.example.app:/oauth",
        ] {
            assert_eq!(redirect_uri_problem(ok), None, "{ok}");
        }
        for bad in [
            "http://example.com/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://app.example.com/cb#x",
            "/relative",
        ] {
            assert!(redirect_uri_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn a_loopback_redirect_may_change_its_port_and_nothing_else() {
        let client = Client {
            id: "fhc_1".into(),
            name: "x".into(),
            redirect_uris: vec![
                "http://127.0.0.1:8000/callback".into(),
                "https://a.example/cb".into(),
            ],
            client_uri: None,
            created_at: 0,
        };
        assert!(
            client
                .redirect_uri(Some("http://127.0.0.1:51234/callback"))
                .is_some()
        );
        assert!(
            client
                .redirect_uri(Some("http://127.0.0.1:51234/other"))
                .is_none()
        );
        assert!(client.redirect_uri(Some("https://a.example/cb")).is_some());
        assert!(client.redirect_uri(Some("https://a.example:8443/cb")).is_none());
        assert!(
            client.redirect_uri(None).is_none(),
            "two registered: the request must name one"
        );
    }
}
