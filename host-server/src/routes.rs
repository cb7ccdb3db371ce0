//! The device-facing routes: `POST /enroll`, `POST /device/code` and
//! `POST /device/token` (RFC 8628), `PUT /manifest`, `GET /stream` (SSE),
//! `POST /result`, `POST /update`. Nest them under any prefix (`/api/host` by default).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Form, Json, Router};
use fusion_protocol::{
    CallProgress, CallResult, DeviceManifest, EnrollRequest, EnrollResponse, HelloEvent, PROTOCOL_HEADER,
    PROTOCOL_VERSION, ResultAck, UpdateReport,
};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::credentials::{token_device_id, token_matches};
use crate::device_flow::{CodeForm, OAuthError, TokenForm};
use crate::dispatcher::{Dispatcher, StreamMsg};
use crate::error::Error;
use crate::store::DeviceRecord;

/// The device routes, ready to `.nest("/api/host", ...)` into the app.
///
/// Serve the app with `into_make_service_with_connect_info::<SocketAddr>()`
/// so enroll attempts are rate-limited per client address.
pub fn router(dispatcher: Dispatcher) -> Router {
    let limit = dispatcher.config().max_body_bytes;
    Router::new()
        .route("/enroll", post(enroll))
        .route("/device/code", post(device_code))
        .route("/device/token", post(device_token))
        .route("/manifest", put(manifest))
        .route("/stream", get(stream))
        .route("/result", post(result))
        .route("/update", post(update_report))
        .route("/progress", post(progress_report))
        .merge(blob_routes())
        // Every answer is `{code, message}`, wrong paths and methods too.
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            Error::MethodNotAllowed {
                method: method.to_string(),
                path: uri.path().to_string(),
            }
        })
        .fallback(|method: Method, uri: Uri| async move {
            Error::RouteNotFound {
                method: method.to_string(),
                path: uri.path().to_string(),
            }
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(dispatcher)
}

async fn enroll(
    State(dispatcher): State<Dispatcher>,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Body(req): Body<EnrollRequest>,
) -> Result<Json<EnrollResponse>, Error> {
    check_protocol(&headers)?;
    let addr = dispatcher.client_addr(connect_info.map(|Extension(ConnectInfo(a))| a), &headers);
    dispatcher.enroll(addr, req).await.map(Json)
}

async fn device_code(
    State(dispatcher): State<Dispatcher>,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Result<Response, OAuthError> {
    let Form(form) = form.map_err(|e| OAuthError::invalid_request(e.body_text()))?;
    let addr = dispatcher.client_addr(connect_info.map(|Extension(ConnectInfo(a))| a), &headers);
    dispatcher.request_device_code(addr, form).await
}

async fn device_token(
    State(dispatcher): State<Dispatcher>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, OAuthError> {
    let Form(form) = form.map_err(|e| OAuthError::invalid_request(e.body_text()))?;
    dispatcher.exchange_device_code(form).await
}

#[cfg(not(feature = "blobs"))]
fn blob_routes() -> Router<Dispatcher> {
    Router::new()
}

/// Files by handle: `POST /uploads`, `GET|PUT|DELETE /uploads/{id}`,
/// `POST /uploads/{id}/complete`, `GET /blobs/{id}`, `GET /blobs/{id}/meta`.
#[cfg(feature = "blobs")]
fn blob_routes() -> Router<Dispatcher> {
    use axum::extract::{Path, Query};

    use crate::blobs::{BeginUpload, BlobMeta, UploadStatus};

    #[derive(serde::Deserialize)]
    struct Offset {
        offset: u64,
    }
    #[derive(serde::Deserialize)]
    struct Complete {
        sha256: String,
    }
    async fn begin(
        State(d): State<Dispatcher>,
        AuthedBody(device, req): AuthedBody<BeginUpload>,
    ) -> Result<Json<UploadStatus>, Error> {
        d.blobs()?.begin(&device.owner, req, d.now()).await.map(Json)
    }
    async fn status(
        State(d): State<Dispatcher>,
        AuthedDevice(device): AuthedDevice,
        Path(id): Path<String>,
    ) -> Result<Json<UploadStatus>, Error> {
        d.blobs()?.status(&device.owner, &id).map(Json)
    }
    async fn chunk(
        State(d): State<Dispatcher>,
        AuthedDevice(device): AuthedDevice,
        Path(id): Path<String>,
        at: Result<Query<Offset>, axum::extract::rejection::QueryRejection>,
        body: axum::body::Body,
    ) -> Result<Json<UploadStatus>, Error> {
        // Every device route answers {code, message}, a bad query too.
        let Query(at) = at.map_err(|_| {
            Error::InvalidRequest(
                "`offset` must be given as a whole number of bytes, the upload's `received` so far: \
                 PUT /uploads/{id}?offset=N"
                    .into(),
            )
        })?;
        d.blobs()?
            .write(&device.owner, &id, at.offset, body.into_data_stream())
            .await
            .map(Json)
    }
    async fn discard(
        State(d): State<Dispatcher>,
        AuthedDevice(device): AuthedDevice,
        Path(id): Path<String>,
    ) -> Result<axum::http::StatusCode, Error> {
        d.blobs()?.discard(&device.owner, &id)?;
        Ok(axum::http::StatusCode::NO_CONTENT)
    }
    async fn complete(
        State(d): State<Dispatcher>,
        Path(id): Path<String>,
        AuthedBody(device, req): AuthedBody<Complete>,
    ) -> Result<Json<BlobMeta>, Error> {
        d.blobs()?
            .complete(&device.owner, &id, &req.sha256, d.now())
            .await
            .map(Json)
    }
    async fn meta(
        State(d): State<Dispatcher>,
        AuthedDevice(device): AuthedDevice,
        Path(id): Path<String>,
    ) -> Result<Json<BlobMeta>, Error> {
        d.blobs()?.meta(&device.owner, &id, d.now()).await.map(Json)
    }
    async fn content(
        State(d): State<Dispatcher>,
        AuthedDevice(device): AuthedDevice,
        Path(id): Path<String>,
    ) -> Result<Response, Error> {
        let (meta, stream) = d.blobs()?.open(&device.owner, &id, d.now()).await?;
        Ok(blob_response(&meta, stream))
    }
    Router::new()
        .route("/uploads", post(begin))
        .route(
            "/uploads/{id}",
            get(status)
                .put(chunk)
                .delete(discard)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/uploads/{id}/complete", post(complete))
        .route("/blobs/{id}", get(content))
        .route("/blobs/{id}/meta", get(meta))
}

/// A blob's bytes as a response, always a download: its length and SHA-256
/// in headers, `Content-Disposition: attachment` with a name that survives
/// any file name, `application/octet-stream`, `nosniff` and a sandboxing CSP.
///
/// The media type a device declared is metadata (`GET /blobs/{id}/meta`),
/// never a reason to render: a device can upload anything under any name,
/// and a page it uploaded must not run in the app's origin.
#[cfg(feature = "blobs")]
pub fn blob_response(
    meta: &crate::blobs::BlobMeta,
    stream: impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
) -> Response {
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_DISPOSITION, attachment(&meta.name));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&meta.sha256) {
        headers.insert(HeaderName::from_static("x-content-sha256"), v);
    }
    response
}

/// `attachment` with an ASCII `filename` and the exact name as RFC 6266's
/// `filename*` (UTF-8, percent-encoded), so no name can break the header.
#[cfg(feature = "blobs")]
fn attachment(name: &str) -> HeaderValue {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // RFC 5987's attr-char, less what is unreserved there.
    const ATTR: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if !matches!(c, '"' | '\\' | '%' | ';') => c,
            _ => '_',
        })
        .collect();
    let ascii = if ascii.trim_matches(['.', '_', ' ']).is_empty() {
        "download".to_string()
    } else {
        ascii
    };
    let value = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR)
    );
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("attachment; filename=\"download\""))
}

async fn manifest(
    State(dispatcher): State<Dispatcher>,
    AuthedBody(device, manifest): AuthedBody<DeviceManifest>,
) -> Result<StatusCode, Error> {
    dispatcher.set_manifest(&device, manifest).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_report(
    State(dispatcher): State<Dispatcher>,
    AuthedBody(device, report): AuthedBody<UpdateReport>,
) -> Result<StatusCode, Error> {
    dispatcher.report_update(&device, report).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn progress_report(
    State(dispatcher): State<Dispatcher>,
    AuthedBody(device, progress): AuthedBody<CallProgress>,
) -> Result<StatusCode, Error> {
    dispatcher.report_progress(&device, progress)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn result(
    State(dispatcher): State<Dispatcher>,
    AuthedBody(device, result): AuthedBody<CallResult>,
) -> Result<Json<ResultAck>, Error> {
    dispatcher.deliver(&device.id, result).await.map(Json)
}

async fn stream(
    State(dispatcher): State<Dispatcher>,
    AuthedDevice(device): AuthedDevice,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if dispatcher.shutdown_token().is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        // Every unanswered call is re-sent on a new stream, so the id is only informative.
        tracing::debug!(device_id = %device.id, last_event_id = last, "device resumed");
    }
    let heartbeat = dispatcher.config().heartbeat;
    let updates = dispatcher.update_policy(&device).await;
    let (session_id, rx) = dispatcher.connect(&device);
    let hello = HelloEvent {
        device_id: device.id.clone(),
        session_id: session_id.clone(),
        heartbeat_ms: heartbeat.as_millis() as u64,
        protocol_version: PROTOCOL_VERSION,
        updates,
    };
    let session = SessionGuard {
        dispatcher: dispatcher.clone(),
        device_id: device.id.clone(),
        session_id,
    };
    dispatcher.join_replicas(&device, &session.session_id).await?;
    let events = device_stream(
        session,
        rx,
        dispatcher.shutdown_token(),
        json_event("hello", None, &hello),
    );
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat).text("ping"));
    let headers = [
        (
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    Ok((headers, sse).into_response())
}

/// The SSE events of one session: `hello`, then whatever the dispatcher
/// sends, until `revoked`/`replaced`, server shutdown, or the client leaves.
fn device_stream(
    session: SessionGuard,
    rx: mpsc::UnboundedReceiver<StreamMsg>,
    shutdown: CancellationToken,
    hello: Event,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct St {
        // Dropped with the stream: the device goes offline then.
        _session: SessionGuard,
        rx: mpsc::UnboundedReceiver<StreamMsg>,
        shutdown: CancellationToken,
        hello: Option<Event>,
        closing: bool,
    }
    let state = St {
        _session: session,
        rx,
        shutdown,
        hello: Some(hello),
        closing: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if let Some(hello) = st.hello.take() {
            return Some((Ok(hello), st));
        }
        if st.closing {
            return None;
        }
        let msg = tokio::select! {
            msg = st.rx.recv() => msg?,
            () = st.shutdown.cancelled() => return None,
        };
        let event = match msg {
            StreamMsg::Call(id, call) => json_event("call", Some(id), &*call),
            StreamMsg::Cancel(cancel) => json_event("cancel", None, &cancel),
            StreamMsg::Revoked(closing) => {
                st.closing = true;
                json_event("revoked", None, &closing)
            }
            StreamMsg::Replaced(closing) => {
                st.closing = true;
                json_event("replaced", None, &closing)
            }
        };
        Some((Ok(event), st))
    })
}

fn json_event(name: &str, id: Option<u64>, data: &impl serde::Serialize) -> Event {
    let event = Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_default());
    match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    }
}

/// Marks the device offline when its stream ends, unless a newer stream
/// has replaced it already.
struct SessionGuard {
    dispatcher: Dispatcher,
    device_id: String,
    session_id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.dispatcher.disconnect(&self.device_id, &self.session_id);
    }
}

/// Refuses a device that says it speaks another protocol version. A device
/// that sends no version is taken to speak version 1.
fn check_protocol(headers: &HeaderMap) -> Result<(), Error> {
    match headers
        .get(PROTOCOL_HEADER)
        .map(|v| v.to_str().unwrap_or("?").trim())
    {
        None => Ok(()),
        Some(v) if v == PROTOCOL_VERSION.to_string() => Ok(()),
        Some(v) => Err(Error::ProtocolUnsupported(v.to_string())),
    }
}

/// A request authenticated by its device token.
struct AuthedDevice(DeviceRecord);

impl FromRequestParts<Dispatcher> for AuthedDevice {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, dispatcher: &Dispatcher) -> Result<Self, Error> {
        check_protocol(&parts.headers)?;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::TokenUnknown)?;
        let device_id = token_device_id(token).ok_or(Error::TokenUnknown)?;
        // A connected device's results are checked against its live stream's
        // record: no store read per result.
        let device = match dispatcher.live_device(device_id) {
            Some(live) => live,
            None => dispatcher
                .store()
                .device(device_id)
                .await?
                .ok_or(Error::TokenUnknown)?,
        };
        if !token_matches(token, &device.token_hash) {
            return Err(Error::TokenUnknown);
        }
        if device.revoked_at.is_some() {
            return Err(Error::TokenRevoked);
        }
        Ok(AuthedDevice(device))
    }
}

/// `Json<T>` whose rejections are answered in this crate's error format
/// (`invalid_request`, or `too_large` with 413).
struct Body<T>(T);

/// A device's request body and the device, authenticated *after* the body
/// is read. A refusal sent while the client is still uploading (a revoked
/// device's 60 KB manifest) makes the server close a socket with unread
/// data, which some TCP stacks (Windows) turn into a reset: the device then
/// sees "connection reset" instead of "revoked" and retries forever. The body
/// is bounded by the router's body limit.
struct AuthedBody<T>(DeviceRecord, T);

impl<T: DeserializeOwned> FromRequest<Dispatcher> for AuthedBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, dispatcher: &Dispatcher) -> Result<Self, Error> {
        let (mut parts, body) = req.into_parts();
        let bytes =
            match axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), dispatcher).await
            {
                Ok(bytes) => bytes,
                Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(Error::TooLarge {
                        limit: dispatcher.config().max_body_bytes,
                    });
                }
                Err(rejection) => return Err(Error::InvalidRequest(rejection.body_text())),
            };
        let AuthedDevice(device) = AuthedDevice::from_request_parts(&mut parts, dispatcher).await?;
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let Body(value) = Body::<T>::from_request(request, dispatcher).await?;
        Ok(AuthedBody(device, value))
    }
}

impl<T: DeserializeOwned> FromRequest<Dispatcher> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, dispatcher: &Dispatcher) -> Result<Self, Error> {
        match Json::<T>::from_request(req, dispatcher).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Error::TooLarge {
                limit: dispatcher.config().max_body_bytes,
            }),
            Err(JsonRejection::JsonDataError(e)) => Err(Error::InvalidRequest(e.body_text())),
            Err(rejection) => Err(Error::InvalidRequest(rejection.body_text())),
        }
    }
}

#[cfg(all(test, feature = "blobs"))]
mod tests {
    /// Any name a device sends becomes a header: the exact name in
    /// `filename*`, a safe ASCII one beside it, never no header at all.
    #[test]
    fn every_name_is_an_attachment() {
        for (name, ascii, exact) in [
            ("scan.e57", "scan.e57", "scan.e57"),
            ("north site.las", "north site.las", "north%20site.las"),
            ("report\u{1}\".html", "report__.html", "report%01%22.html"),
            ("évora;x%.laz", "_vora_x_.laz", "%C3%A9vora%3Bx%25.laz"),
            ("..", "download", ".."),
            ("出力", "download", "%E5%87%BA%E5%8A%9B"),
            (
                "a\r\nSet-Cookie: x=y",
                "a__Set-Cookie: x=y",
                "a%0D%0ASet-Cookie%3A%20x%3Dy",
            ),
        ] {
            let header = super::attachment(name);
            assert_eq!(
                header.to_str().unwrap(),
                format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}"),
                "{name:?}"
            );
        }
    }
}
