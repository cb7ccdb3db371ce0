//! The device authorization flow (RFC 8628), beside pairing codes: a device
//! asks for a code (`POST /device/code`), a signed-in person approves it on
//! the app's `/device` page ([`Dispatcher::approve_device`]), and the
//! device's next poll (`POST /device/token`) gets its token.
//!
//! The wire shapes are OAuth's: form-encoded requests, RFC 8628 §3.2's
//! authorization response, RFC 6749 §5.1's token response (with the
//! [`DeviceGrant`] fields beside `access_token`) and §5.2's error body.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fusion_protocol::{DEVICE_CLIENT_ID, DEVICE_CODE_GRANT_TYPE, DeviceGrant, PROTOCOL_VERSION};
use oauth2::basic::{BasicErrorResponseType, BasicTokenType};
use oauth2::{AccessToken, DeviceCodeErrorResponse, DeviceCodeErrorResponseType, StandardTokenResponse};
use serde::{Deserialize, Serialize};

use crate::credentials::{new_id, new_pairing_code, normalize_code, random_hex, sha256_hex};
use crate::dispatcher::{Dispatcher, check_device_fields};
use crate::error::{Error, Result};
use crate::store::{DeviceAuthorizationRecord, DeviceAuthorizationStatus};

/// `POST /device/code`, form-encoded: RFC 8628 §3.1 plus what the device
/// says about itself.
#[derive(Debug, Deserialize)]
pub(crate) struct CodeForm {
    client_id: Option<String>,
    name: Option<String>,
    platform: Option<String>,
    host_version: Option<String>,
}

/// `POST /device/code` answer, RFC 8628 §3.2.
#[derive(Debug, Serialize)]
struct CodeResponse {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: String,
    expires_in: u64,
    interval: u64,
}

/// `POST /device/token`, form-encoded: RFC 8628 §3.4.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    device_code: Option<String>,
    client_id: Option<String>,
}

/// [`DeviceGrant`] as OAuth extra token fields.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
struct GrantFields(DeviceGrant);

impl oauth2::ExtraTokenFields for GrantFields {}

/// A device authorization request as the `/device` page shows it, so the
/// person approving sees what is asking before they decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceAuthorization {
    /// The user code, `XXXX-XXXX`.
    pub user_code: String,
    /// The name the device asks to be shown under.
    pub name: String,
    /// Its operating system and architecture.
    pub platform: String,
    /// Its binary's version.
    pub host_version: String,
    /// The address it asked from.
    pub address: Option<String>,
    /// When it asked.
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: SystemTime,
    /// When its code stops working.
    #[serde(with = "crate::time::rfc3339")]
    pub expires_at: SystemTime,
    /// Where it is: `pending` until someone decides.
    pub status: DeviceAuthorizationStatus,
    /// Whether its code expired before anyone decided.
    pub expired: bool,
}

/// An OAuth error answer: RFC 6749 §5.2's `{error, error_description}`.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    body: DeviceCodeErrorResponse,
    retry_after: Option<Duration>,
}

impl OAuthError {
    fn new(error: DeviceCodeErrorResponseType, description: impl Into<String>) -> Self {
        let status = match &error {
            DeviceCodeErrorResponseType::Basic(BasicErrorResponseType::InvalidClient) => {
                StatusCode::UNAUTHORIZED
            }
            DeviceCodeErrorResponseType::Basic(BasicErrorResponseType::Extension(e))
                if e == "server_error" =>
            {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError {
            status,
            body: DeviceCodeErrorResponse::new(error, Some(description.into()), None),
            retry_after: None,
        }
    }

    fn basic(error: BasicErrorResponseType, description: impl Into<String>) -> Self {
        Self::new(DeviceCodeErrorResponseType::Basic(error), description)
    }

    /// A malformed request: a missing or unreadable field.
    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::basic(BasicErrorResponseType::InvalidRequest, description)
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        match e {
            Error::RateLimited { retry_after } => OAuthError {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(retry_after),
                ..Self::basic(
                    BasicErrorResponseType::Extension("rate_limited".into()),
                    Error::RateLimited { retry_after }.to_string(),
                )
            },
            Error::InvalidRequest(message) => Self::invalid_request(message),
            other => {
                if let Error::Store(e) = &other {
                    tracing::error!(error = %e, "store failure");
                }
                Self::basic(
                    BasicErrorResponseType::Extension("server_error".into()),
                    other.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (self.status, no_store(), Json(self.body)).into_response();
        if let Some(after) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// RFC 6749 §5.1: token answers are never cached.
fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

fn check_client(client_id: Option<&str>) -> Result<(), OAuthError> {
    match client_id {
        Some(DEVICE_CLIENT_ID) => Ok(()),
        Some(other) => Err(OAuthError::basic(
            BasicErrorResponseType::InvalidClient,
            format!("client_id `{other}` is not known here; fusion-host devices send `{DEVICE_CLIENT_ID}`"),
        )),
        None => Err(OAuthError::invalid_request(format!(
            "client_id is missing; fusion-host devices send `{DEVICE_CLIENT_ID}`"
        ))),
    }
}

impl Dispatcher {
    /// `POST /device/code`: stores a new request and answers its codes.
    pub(crate) async fn request_device_code(
        &self,
        addr: Option<IpAddr>,
        form: CodeForm,
    ) -> Result<Response, OAuthError> {
        check_client(form.client_id.as_deref())?;
        let Some(verification_uri) = self.config().verification_uri.clone() else {
            return Err(OAuthError::basic(
                BasicErrorResponseType::UnsupportedGrantType,
                "this server does not offer device login; pair with a code from /devices instead",
            ));
        };
        let (name, platform, host_version) = (
            form.name.unwrap_or_default(),
            form.platform.unwrap_or_default(),
            form.host_version.unwrap_or_default(),
        );
        check_device_fields(&name, &platform, &host_version).map_err(OAuthError::invalid_request)?;
        // Every request counts: nothing here is a correct guess to give back.
        let _counted = self
            .request_limiter()
            .attempt(addr)
            .map_err(|retry_after| Error::RateLimited { retry_after })?;
        let user_code = new_pairing_code();
        let device_code = random_hex(32);
        let now = self.now();
        let config = self.config();
        let record = DeviceAuthorizationRecord {
            id: new_id("da_"),
            device_code_hash: sha256_hex(&device_code),
            user_code_hash: sha256_hex(&normalize_code(&user_code).unwrap_or_default()),
            name: name.trim().to_string(),
            platform,
            host_version,
            address: addr.map(|a| a.to_string()),
            created_at: now,
            expires_at: now + config.device_code_ttl,
            status: DeviceAuthorizationStatus::Pending,
            decided_by: None,
            decided_at: None,
            interval_secs: config.device_poll_interval.as_secs().max(1) as u32,
            last_polled_at: None,
        };
        self.store()
            .create_device_authorization(record.clone())
            .await
            .map_err(Error::from)?;
        tracing::info!(name = %record.name, "device authorization requested");
        let body = CodeResponse {
            device_code,
            verification_uri_complete: format!("{verification_uri}?user_code={user_code}"),
            user_code,
            verification_uri,
            expires_in: config.device_code_ttl.as_secs(),
            interval: u64::from(record.interval_secs),
        };
        // The device code is a secret: never cached.
        Ok((no_store(), Json(body)).into_response())
    }

    /// `POST /device/token`: `authorization_pending` until someone decides,
    /// `slow_down` for a poll sooner than the interval, then the token once.
    pub(crate) async fn exchange_device_code(&self, form: TokenForm) -> Result<Response, OAuthError> {
        check_client(form.client_id.as_deref())?;
        if form.grant_type.as_deref() != Some(DEVICE_CODE_GRANT_TYPE) {
            return Err(OAuthError::basic(
                BasicErrorResponseType::UnsupportedGrantType,
                format!("grant_type must be {DEVICE_CODE_GRANT_TYPE}"),
            ));
        }
        let Some(device_code) = form.device_code.filter(|c| !c.is_empty()) else {
            return Err(OAuthError::invalid_request("device_code is missing"));
        };
        let invalid_grant = |message: &str| OAuthError::basic(BasicErrorResponseType::InvalidGrant, message);
        let Some(record) = self
            .store()
            .device_authorization_by_device_code(&sha256_hex(&device_code))
            .await
            .map_err(Error::from)?
        else {
            return Err(invalid_grant(
                "this device code is not known; run `fusion-host login` again",
            ));
        };
        let now = self.now();
        let mut update = DeviceAuthorizationRecord {
            last_polled_at: Some(now),
            ..record.clone()
        };
        match record.status {
            DeviceAuthorizationStatus::Denied => Err(OAuthError::new(
                DeviceCodeErrorResponseType::AccessDenied,
                "the request was denied on the server",
            )),
            DeviceAuthorizationStatus::Issued => Err(invalid_grant(
                "this device code was used already; run `fusion-host login` again",
            )),
            _ if now >= record.expires_at => Err(OAuthError::new(
                DeviceCodeErrorResponseType::ExpiredToken,
                "nobody approved the code in time; run `fusion-host login` again for a new one",
            )),
            DeviceAuthorizationStatus::Pending => {
                let interval = Duration::from_secs(u64::from(record.interval_secs));
                // A quarter of slack: polls wait the interval, but arrive
                // with the network's jitter.
                let too_soon = record
                    .last_polled_at
                    .and_then(|last| now.duration_since(last).ok())
                    .is_some_and(|since| since < interval * 3 / 4);
                if too_soon {
                    update.interval_secs += 5;
                }
                // Lost only to a concurrent decision; the next poll sees it.
                self.store()
                    .update_device_authorization(DeviceAuthorizationStatus::Pending, &update)
                    .await
                    .map_err(Error::from)?;
                Err(if too_soon {
                    OAuthError::new(
                        DeviceCodeErrorResponseType::SlowDown,
                        format!("poll at most every {} s", update.interval_secs),
                    )
                } else {
                    OAuthError::new(
                        DeviceCodeErrorResponseType::AuthorizationPending,
                        "waiting for someone to approve the code",
                    )
                })
            }
            DeviceAuthorizationStatus::Approved => {
                update.status = DeviceAuthorizationStatus::Issued;
                let issued = self
                    .store()
                    .update_device_authorization(DeviceAuthorizationStatus::Approved, &update)
                    .await
                    .map_err(Error::from)?;
                let owner = record.decided_by.as_deref().filter(|_| issued).ok_or_else(|| {
                    invalid_grant("this device code was used already; run `fusion-host login` again")
                })?;
                let (device, token, owner_label) = self
                    .pair_device(owner, &record.name, &record.platform, &record.host_version)
                    .await?;
                let grant = DeviceGrant {
                    name: Some(device.name),
                    device_id: device.id,
                    owner: device.owner,
                    owner_label,
                    server_time: crate::time::format(now),
                    protocol_version: PROTOCOL_VERSION,
                };
                let body = StandardTokenResponse::new(
                    AccessToken::new(token),
                    BasicTokenType::Bearer,
                    GrantFields(grant),
                );
                Ok((no_store(), Json(body)).into_response())
            }
        }
    }

    /// The request whose user code is `user_code`, for the `/device` page
    /// to show `owner` (the signed-in person) before anyone decides.
    /// Lookups are rate-limited per client address and per account, with a
    /// global backstop on wrong codes (RFC 8628 §5.1); a code that is found
    /// gives its count back.
    pub async fn device_authorization(
        &self,
        owner: &str,
        addr: Option<IpAddr>,
        user_code: &str,
    ) -> Result<DeviceAuthorization> {
        let (record, code) = self.find_by_user_code(Some(owner), addr, user_code).await?;
        Ok(self.view(&record, &code))
    }

    /// Approves the pending request with `user_code`: the device's next
    /// poll gets a token for a device `owner` owns. A request that was
    /// denied, approved or has expired cannot be approved.
    pub async fn approve_device(
        &self,
        owner: &str,
        addr: Option<IpAddr>,
        user_code: &str,
    ) -> Result<DeviceAuthorization> {
        self.decide_device(owner, addr, user_code, DeviceAuthorizationStatus::Approved)
            .await
    }

    /// Denies the pending request with `user_code`: the device's next poll
    /// gets `access_denied`, and the request can never be approved.
    pub async fn deny_device(
        &self,
        owner: &str,
        addr: Option<IpAddr>,
        user_code: &str,
    ) -> Result<DeviceAuthorization> {
        self.decide_device(owner, addr, user_code, DeviceAuthorizationStatus::Denied)
            .await
    }

    async fn decide_device(
        &self,
        owner: &str,
        addr: Option<IpAddr>,
        user_code: &str,
        to: DeviceAuthorizationStatus,
    ) -> Result<DeviceAuthorization> {
        let (record, code) = self.find_by_user_code(Some(owner), addr, user_code).await?;
        let now = self.now();
        let decided = |record: &DeviceAuthorizationRecord| Error::UserCodeDecided {
            status: record.status.as_str(),
        };
        if record.status != DeviceAuthorizationStatus::Pending {
            return Err(decided(&record));
        }
        if now >= record.expires_at {
            return Err(Error::UserCodeExpired);
        }
        let update = DeviceAuthorizationRecord {
            status: to,
            decided_by: Some(owner.to_string()),
            decided_at: Some(now),
            ..record.clone()
        };
        if !self
            .store()
            .update_device_authorization(DeviceAuthorizationStatus::Pending, &update)
            .await?
        {
            let (now_is, _) = self.find_by_user_code(Some(owner), addr, user_code).await?;
            return Err(decided(&now_is));
        }
        tracing::info!(owner, name = %record.name, status = to.as_str(), "device authorization decided");
        Ok(self.view(&update, &code))
    }

    /// The request and its normalized user code.
    async fn find_by_user_code(
        &self,
        owner: Option<&str>,
        addr: Option<IpAddr>,
        typed: &str,
    ) -> Result<(DeviceAuthorizationRecord, String)> {
        let limited = |retry_after| Error::RateLimited { retry_after };
        let by_account = owner
            .map(|o| self.user_code_account_limiter().attempt_as(o.to_string()))
            .transpose()
            .map_err(limited)?;
        let attempt = self.user_code_limiter().attempt(addr).map_err(limited)?;
        let code = normalize_code(typed).ok_or(Error::UserCodeUnknown)?;
        let record = self
            .store()
            .device_authorization_by_user_code(&sha256_hex(&code))
            .await?
            .ok_or(Error::UserCodeUnknown)?;
        attempt.succeeded();
        if let Some(by_account) = by_account {
            by_account.succeeded();
        }
        Ok((record, code))
    }

    fn view(&self, record: &DeviceAuthorizationRecord, code: &str) -> DeviceAuthorization {
        DeviceAuthorization {
            user_code: format!("{}-{}", &code[..4], &code[4..]),
            name: record.name.clone(),
            platform: record.platform.clone(),
            host_version: record.host_version.clone(),
            address: record.address.clone(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            status: record.status,
            expired: record.status == DeviceAuthorizationStatus::Pending && self.now() >= record.expires_at,
        }
    }
}
