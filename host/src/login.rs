//! Device login: the device authorization grant (RFC 8628). The device asks
//! the server for a code ([`request_login`]), a person approves it on the
//! app's verification page, and [`wait_for_approval`] polls until the token
//! comes, at the server's interval and 5 s slower after each `slow_down`.
//!
//! The OAuth client is the `oauth2` crate's; the polling rules are its
//! implementation of RFC 8628 §3.5.

use std::future::Future;
use std::time::Duration;

use fusion_tools::{DEVICE_CLIENT_ID, DeviceGrant};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    ClientId, DeviceAuthorizationUrl, DeviceCodeErrorResponseType, EndpointNotSet, EndpointSet,
    ErrorResponse, RequestTokenError, StandardDeviceAuthorizationResponse, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::client::Http;
use crate::credentials::Credentials;
use crate::error::{Error, Result};

/// [`DeviceGrant`] as OAuth extra token fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
struct GrantFields(DeviceGrant);

impl oauth2::ExtraTokenFields for GrantFields {}

type DeviceClient = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<GrantFields, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A started login: what to show the person, and what to poll with.
#[derive(Debug)]
pub struct LoginRequest {
    /// The code to type on the verification page, `XXXX-XXXX`.
    pub user_code: String,
    /// The page to open, e.g. `https://app.example.com/device`.
    pub verification_uri: String,
    /// The same page with the code filled in, when the server gives one.
    pub verification_uri_complete: Option<String>,
    /// How long the code works.
    pub expires_in: Duration,
    response: StandardDeviceAuthorizationResponse,
}

impl LoginRequest {
    /// The link to show and open: the one with the code filled in when
    /// there is one.
    pub fn link(&self) -> &str {
        self.verification_uri_complete
            .as_deref()
            .unwrap_or(&self.verification_uri)
    }

    /// The minimum time between polls the server asked for.
    pub fn interval(&self) -> Duration {
        self.response.interval()
    }
}

fn client(http: &Http) -> Result<DeviceClient> {
    let url = |route: &str| http.url(route);
    let bad = |e: oauth2::url::ParseError| Error::BadServerUrl {
        server: http.base.clone(),
        message: e.to_string(),
    };
    Ok(oauth2::Client::new(ClientId::new(DEVICE_CLIENT_ID.to_string()))
        .set_device_authorization_url(DeviceAuthorizationUrl::new(url("/device/code")).map_err(bad)?)
        .set_token_uri(TokenUrl::new(url("/device/token")).map_err(bad)?))
}

/// Turns an OAuth client failure into this crate's errors: the person's
/// "deny" and an expired code get their own, the server's other words are
/// kept, a transport failure is explained.
async fn explain<T: ErrorResponse + 'static>(
    http: &Http,
    e: RequestTokenError<oauth2::HttpClientError<reqwest::Error>, T>,
    describe: impl Fn(&T) -> (String, Option<String>),
) -> Error {
    match e {
        RequestTokenError::ServerResponse(body) => {
            let (code, description) = describe(&body);
            match code.as_str() {
                "access_denied" => Error::LoginDenied,
                "expired_token" => Error::LoginExpired,
                _ => Error::Server {
                    status: 400,
                    message: description.unwrap_or_else(|| format!("the server refused the login: {code}")),
                    code,
                },
            }
        }
        RequestTokenError::Request(oauth2::HttpClientError::Reqwest(e)) => http.explain(*e).await,
        RequestTokenError::Request(other) => Error::Unreachable {
            server: http.base.clone(),
            message: other.to_string(),
        },
        RequestTokenError::Parse(_, body) => Error::NotAServer {
            server: http.base.clone(),
            status: if body.is_empty() { 0 } else { 200 },
        },
        RequestTokenError::Other(message) => Error::Unreachable {
            server: http.base.clone(),
            message,
        },
    }
}

/// Asks the server for a login code for a device called `name`.
pub async fn request_login(http: &Http, name: &str, host_version: &str) -> Result<LoginRequest> {
    let client = client(http)?;
    let platform = crate::runtime::platform();
    let response: StandardDeviceAuthorizationResponse = match client
        .exchange_device_code()
        .add_extra_param("name", name)
        .add_extra_param("platform", platform)
        .add_extra_param("host_version", host_version)
        .request_async(&http.client)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Err(explain(http, e, |b: &BasicErrorResponse| {
                (b.error().to_string(), b.error_description().cloned())
            })
            .await);
        }
    };
    Ok(LoginRequest {
        user_code: response.user_code().secret().clone(),
        verification_uri: response.verification_uri().to_string(),
        verification_uri_complete: response.verification_uri_complete().map(|u| u.secret().clone()),
        expires_in: response.expires_in(),
        response,
    })
}

/// Polls until a person approves the login (the device's credentials),
/// denies it ([`Error::LoginDenied`]) or lets it expire
/// ([`Error::LoginExpired`]). `sleep` waits between polls: the server's
/// interval, 5 s longer after each `slow_down`.
pub async fn wait_for_approval<S, F>(
    http: &Http,
    server: &str,
    name: &str,
    request: &LoginRequest,
    sleep: S,
) -> Result<Credentials>
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let client = client(http)?;
    let token = match client
        .exchange_device_access_token(&request.response)
        .request_async(&http.client, sleep, None)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            return Err(explain(http, e, |b: &oauth2::DeviceCodeErrorResponse| {
                let code = match b.error() {
                    DeviceCodeErrorResponseType::Basic(basic) => basic.to_string(),
                    other => other.to_string(),
                };
                (code, b.error_description().cloned())
            })
            .await);
        }
    };
    let GrantFields(grant) = token.extra_fields().clone();
    Ok(Credentials {
        server: server.to_string(),
        device_id: grant.device_id,
        token: token.access_token().secret().clone(),
        owner: grant.owner,
        owner_label: grant.owner_label,
        name: grant.name.unwrap_or_else(|| name.to_string()),
        revoked: false,
    })
}
