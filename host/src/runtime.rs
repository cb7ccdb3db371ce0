//! The device runtime: enroll once, then hold the stream, run calls, post
//! results, reconnect with backoff.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use fusion_tools::{
    CallEvent, CallResult, CancelEvent, Cancellation, ClosingEvent, Context, DeviceManifest, EnrollRequest,
    EnrollResponse, ErrorBody, HelloEvent, Mode, Scope, Toolbox,
};
use futures_util::{Stream, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activity::{Activity, Gate};
use crate::client::Http;
use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::journal::Journal;

/// Exchanges a pairing code for credentials (`POST /enroll`).
pub async fn enroll(
    http: &Http,
    server: &str,
    code: &str,
    name: &str,
    host_version: &str,
) -> Result<Credentials> {
    let request = EnrollRequest {
        code: code.to_string(),
        name: name.to_string(),
        platform: platform(),
        host_version: host_version.to_string(),
    };
    let response = match http.client.post(http.url("/enroll")).json(&request).send().await {
        Ok(r) => r,
        Err(e) => return Err(http.explain(e).await),
    };
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| Error::Unreachable {
        server: http.base.clone(),
        message: e.to_string(),
    })?;
    if status != 200 {
        return Err(match Error::from_response(&http.base, status, &body) {
            // On enroll, 401 cannot mean "revoked"; keep the server's words.
            Error::Revoked => Error::NotAServer {
                server: http.base.clone(),
                status,
            },
            other => other,
        });
    }
    let enrolled: EnrollResponse = serde_json::from_slice(&body).map_err(|_| Error::NotAServer {
        server: http.base.clone(),
        status,
    })?;
    Ok(Credentials {
        server: server.to_string(),
        device_id: enrolled.device_id,
        token: enrolled.token,
        owner: enrolled.owner,
        owner_label: enrolled.owner_label,
        name: enrolled.name.unwrap_or_else(|| name.to_string()),
        revoked: false,
    })
}

/// This machine's operating system and architecture, e.g. `linux-x86_64`:
/// what the server shows beside a device's name.
pub(crate) fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// How to run a device.
#[derive(Clone)]
pub struct HostOptions {
    /// The HTTP client for the server.
    pub http: Http,
    /// Who this device is.
    pub credentials: Credentials,
    /// The tools it offers.
    pub toolbox: Arc<Toolbox>,
    /// Where they may act.
    pub scope: Arc<Scope>,
    /// How many calls run at once. Default 4.
    pub concurrency: usize,
    /// The binary's version, sent in the manifest.
    pub host_version: String,
    /// Backoff between reconnects: first step and cap. Default 500 ms and 30 s.
    pub backoff: (Duration, Duration),
    /// How long shutdown waits for running calls before cancelling them. Default 5 s.
    pub shutdown_grace: Duration,
    /// After the server closed the stream itself (a restart, a deploy), how
    /// long reconnects stay fast, each within [`FAST_RECONNECT`] (jittered),
    /// before the exponential backoff takes over again. Default 30 s.
    pub fast_reconnect_window: Duration,
    /// A file that keeps the results of applied calls across restarts (next
    /// to the credentials), so an apply the server re-delivers after a crash
    /// is answered with its first result instead of being refused as a
    /// conflict. `None` keeps them in memory only. The binary uses
    /// [`APPLIED_JOURNAL_FILE`](crate::APPLIED_JOURNAL_FILE) in its configuration directory.
    pub applied_journal: Option<PathBuf>,
}

/// The ceiling of each reconnect delay right after the server closed the
/// stream itself: the first retry comes within this, uniformly jittered.
pub const FAST_RECONNECT: Duration = Duration::from_secs(1);

impl std::fmt::Debug for HostOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostOptions")
            .field("server", &self.http.base)
            .field("device_id", &self.credentials.device_id)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl HostOptions {
    /// Options with the defaults.
    pub fn new(
        http: Http,
        credentials: Credentials,
        toolbox: Toolbox,
        scope: Scope,
        host_version: &str,
    ) -> Self {
        // Every device can move files by handle to and from its server.
        let mut toolbox = toolbox;
        crate::transfer::add_transfer_tools(&mut toolbox, &http, &credentials.token);
        HostOptions {
            http,
            credentials,
            toolbox: Arc::new(toolbox),
            scope: Arc::new(scope),
            concurrency: 4,
            host_version: host_version.to_string(),
            backoff: (Duration::from_millis(500), Duration::from_secs(30)),
            shutdown_grace: Duration::from_secs(5),
            fast_reconnect_window: Duration::from_secs(30),
            applied_journal: None,
        }
    }
}

/// Where the device's connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Dialling the server.
    Connecting,
    /// Holding the stream.
    Connected {
        /// The server's id for this stream.
        session_id: String,
        /// How the server wants this device kept up to date, when it says.
        updates: Option<fusion_tools::UpdatePolicy>,
    },
    /// Waiting before the next attempt.
    Retrying {
        /// Why the last attempt ended.
        reason: String,
        /// How long until the next one.
        delay: Duration,
    },
    /// Stopped for good.
    Stopped,
}

/// How a device stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Calls still running at shutdown that had to be cancelled.
    pub cancelled_calls: usize,
}

/// A running device.
#[derive(Debug)]
pub struct HostHandle {
    recovered: Vec<fusion_tools::RenameRecovery>,
    activity: Activity,
    shutdown: CancellationToken,
    state: watch::Receiver<ConnectionState>,
    task: tokio::task::JoinHandle<Result<Stopped>>,
}

impl HostHandle {
    /// Rename batches a crash had interrupted, finished or rolled back before
    /// the first call was taken (each also logged as a warning).
    pub fn recovered(&self) -> &[fusion_tools::RenameRecovery] {
        &self.recovered
    }

    /// Asks the device to stop: no new calls, running ones get the shutdown
    /// grace, then are cancelled.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A handle that stops the device, usable after [`HostHandle::join`] took this one.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shutdown.clone())
    }

    /// What the device is doing, and a way to let it finish and take no
    /// more: for a restart that must not cut a call short.
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// The connection state, to watch.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Waits until the device stops: `Ok` after [`HostHandle::shutdown`],
    /// `Err` for a fatal error (revoked, replaced, untrusted certificate).
    pub async fn join(self) -> Result<Stopped> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(Error::Io {
                path: PathBuf::from("<runtime>"),
                source: std::io::Error::other(e),
            }),
        }
    }
}

/// Stops a running device; see [`HostHandle::stopper`].
#[derive(Debug, Clone)]
pub struct Stopper(CancellationToken);

impl Stopper {
    /// Same as [`HostHandle::shutdown`].
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

/// Starts the device on the current tokio runtime.
///
/// First it finishes or rolls back any rename batch a crash interrupted in
/// the allowed folders ([`fusion_tools::recover_renames`]; see
/// [`HostHandle::recovered`]), so no call ever sees a half-renamed folder.
pub fn run_host(options: HostOptions) -> HostHandle {
    let shutdown = CancellationToken::new();
    let (tx, state) = watch::channel(ConnectionState::Connecting);
    // Before any call: a folder holds all old names or all new ones.
    let recovered = fusion_tools::recover_renames(&options.scope);
    for recovery in &recovered {
        tracing::warn!("{recovery}");
    }
    let journal = Journal::open(options.applied_journal.clone());
    let mut finished = Finished::default();
    for result in journal.results() {
        finished.insert(result.clone());
    }
    let activity = Activity {
        running: Arc::new(Mutex::new(HashMap::new())),
        gate: Arc::new(Gate::default()),
    };
    let runtime = Runtime {
        options: Arc::new(options),
        shutdown: shutdown.clone(),
        state: tx,
        calls: TaskTracker::new(),
        running: Arc::clone(&activity.running),
        gate: Arc::clone(&activity.gate),
        finished: Arc::new(Mutex::new(finished)),
        journal: Arc::new(Mutex::new(journal)),
        last_event_id: Mutex::new(None),
    };
    let task = tokio::spawn(runtime.run());
    HostHandle {
        recovered,
        activity,
        shutdown,
        state,
        task,
    }
}

/// Results of recent calls by `call_id`: a re-delivered call is answered from
/// here, never run (or applied) twice.
#[derive(Default)]
struct Finished {
    results: HashMap<String, CallResult>,
    order: VecDeque<String>,
}

const FINISHED_KEEP: usize = 1024;

impl Finished {
    fn insert(&mut self, result: CallResult) {
        if self.order.len() >= FINISHED_KEEP
            && let Some(old) = self.order.pop_front()
        {
            self.results.remove(&old);
        }
        self.order.push_back(result.call_id.clone());
        self.results.insert(result.call_id.clone(), result);
    }
}

struct Runtime {
    options: Arc<HostOptions>,
    shutdown: CancellationToken,
    state: watch::Sender<ConnectionState>,
    calls: TaskTracker,
    running: Arc<Mutex<HashMap<String, Cancellation>>>,
    gate: Arc<Gate>,
    finished: Arc<Mutex<Finished>>,
    /// Applied calls' results, kept on disk.
    journal: Arc<Mutex<Journal>>,
    /// The SSE id of the last call received, sent back as `Last-Event-ID`.
    last_event_id: Mutex<Option<String>>,
}

/// Why a session ended without a fatal error.
enum SessionEnd {
    Shutdown,
    /// The connection ended or failed; reconnect.
    Lost {
        reason: String,
        /// A real event arrived on this session.
        healthy: bool,
        /// The server ended the stream itself or said it is shutting down:
        /// it is restarting, so come back quickly.
        server_closed: bool,
    },
}

impl Runtime {
    async fn run(self) -> Result<Stopped> {
        let (base, cap) = self.options.backoff;
        let mut backoff = Backoff::new(base, cap, self.options.fast_reconnect_window);
        let semaphore = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        let result = loop {
            let _ = self.state.send(ConnectionState::Connecting);
            match self.session(&semaphore).await {
                Ok(SessionEnd::Shutdown) => break Ok(()),
                Ok(SessionEnd::Lost {
                    reason,
                    healthy,
                    server_closed,
                }) => {
                    // Reset only after a real event: a server that accepts and
                    // drops at once must not be hammered.
                    if healthy {
                        backoff.reset();
                    }
                    if server_closed {
                        backoff.server_closed();
                    }
                    let delay = backoff.next();
                    tracing::info!(%reason, ?delay, "connection lost; reconnecting");
                    let _ = self.state.send(ConnectionState::Retrying { reason, delay });
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => break Ok(()),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let cancelled_calls = self.drain().await;
        let _ = self.state.send(ConnectionState::Stopped);
        result.map(|()| Stopped { cancelled_calls })
    }

    /// Stops taking calls; waits the grace for running ones, then cancels them.
    async fn drain(&self) -> usize {
        self.calls.close();
        if tokio::time::timeout(self.options.shutdown_grace, self.calls.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let running: Vec<Cancellation> = self
            .running
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        for c in &running {
            c.cancel();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.calls.wait()).await;
        tracing::warn!(cancelled = running.len(), "calls cancelled at shutdown");
        running.len()
    }

    async fn session(&self, semaphore: &Arc<Semaphore>) -> Result<SessionEnd> {
        let http = &self.options.http;
        let token = &self.options.credentials.token;
        let lost = |reason: String| {
            Ok(SessionEnd::Lost {
                reason,
                healthy: false,
                server_closed: false,
            })
        };

        let manifest = DeviceManifest {
            host_version: self.options.host_version.clone(),
            tools: self.options.toolbox.manifest().tools,
            roots: self.options.scope.root_infos(),
        };
        let put = http
            .client
            .put(http.url("/manifest"))
            .bearer_auth(token)
            .json(&manifest)
            .timeout(Duration::from_secs(30));
        match tokio::select! { r = put.send() => r, () = self.shutdown.cancelled() => return Ok(SessionEnd::Shutdown) }
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => return self.refused(r).await,
            Err(e) => return self.transport(e).await,
        }

        let mut get = http.client.get(http.url("/stream")).bearer_auth(token);
        if let Some(id) = self.last_event_id.lock().ok().and_then(|l| l.clone()) {
            get = get.header("last-event-id", id);
        }
        let response = match tokio::select! { r = get.send() => r, () = self.shutdown.cancelled() => return Ok(SessionEnd::Shutdown) }
        {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return self.refused(r).await,
            Err(e) => return self.transport(e).await,
        };
        let mut events = EventStream::new(response.bytes_stream());
        // Before `hello` says otherwise, assume the protocol's 15 s bound.
        let mut idle = Duration::from_secs(45);
        let mut healthy = false;
        loop {
            let next = tokio::select! {
                next = events.next(idle) => next,
                () = self.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                () = self.gate.released.notified() => {
                    // Calls held meanwhile come again on a new stream.
                    return Ok(SessionEnd::Lost {
                        reason: "calls were held; reconnecting to take them".into(),
                        healthy,
                        server_closed: true,
                    });
                }
            };
            let event = match next {
                Next::Event(event) => event,
                Next::Idle => {
                    return Ok(SessionEnd::Lost {
                        reason: format!("no data for {}s", idle.as_secs()),
                        healthy,
                        server_closed: false,
                    });
                }
                Next::End => {
                    return Ok(SessionEnd::Lost {
                        reason: "the server closed the stream".into(),
                        healthy,
                        server_closed: healthy,
                    });
                }
                Next::Failed(reason) => {
                    return Ok(SessionEnd::Lost {
                        reason,
                        healthy,
                        server_closed: false,
                    });
                }
            };
            healthy = true;
            match event.event.as_str() {
                "hello" => {
                    let Ok(hello) = serde_json::from_str::<HelloEvent>(&event.data) else {
                        return lost("the server's hello was unreadable".into());
                    };
                    idle = Duration::from_millis(hello.heartbeat_ms.saturating_mul(3))
                        .max(Duration::from_secs(1));
                    tracing::info!(session_id = %hello.session_id, "connected");
                    let _ = self.state.send(ConnectionState::Connected {
                        session_id: hello.session_id,
                        updates: hello.updates,
                    });
                }
                "call" => match serde_json::from_str::<CallEvent>(&event.data) {
                    Ok(call) if !event.id.is_empty() => {
                        if let Ok(mut last) = self.last_event_id.lock() {
                            *last = Some(event.id.clone());
                        }
                        self.start_call(call, semaphore);
                    }
                    Ok(call) => self.start_call(call, semaphore),
                    Err(e) => tracing::warn!(error = %e, "unreadable call event ignored"),
                },
                "cancel" => {
                    if let Ok(cancel) = serde_json::from_str::<CancelEvent>(&event.data)
                        && let Some(c) = self
                            .running
                            .lock()
                            .ok()
                            .and_then(|r| r.get(&cancel.call_id).cloned())
                    {
                        tracing::info!(call_id = %cancel.call_id, reason = %cancel.reason, "call cancelled by the server");
                        c.cancel();
                    }
                }
                "revoked" => {
                    let message = serde_json::from_str::<ClosingEvent>(&event.data)
                        .map(|c| c.message)
                        .unwrap_or_default();
                    tracing::warn!(%message, "device revoked");
                    return Err(Error::Revoked);
                }
                "replaced" => return Err(Error::Replaced),
                other => tracing::debug!(event = other, "unknown event ignored"),
            }
        }
    }

    /// A non-success response: fatal or transient.
    async fn refused(&self, response: reqwest::Response) -> Result<SessionEnd> {
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        fatal_or_retry(Error::from_response(&self.options.http.base, status, &body))
    }

    /// A transport failure: an untrusted certificate is fatal (retrying cannot
    /// fix it); anything else is a network problem to retry.
    async fn transport(&self, e: reqwest::Error) -> Result<SessionEnd> {
        fatal_or_retry(self.options.http.explain(e).await)
    }

    fn start_call(&self, call: CallEvent, semaphore: &Arc<Semaphore>) {
        if self.gate.held.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::info!(call_id = %call.call_id, tool = %call.tool, "call held for a restart; the server sends it again");
            return;
        }
        // Re-delivered after a reconnect: answer from memory, never run twice.
        if let Some(done) = self
            .finished
            .lock()
            .ok()
            .and_then(|f| f.results.get(&call.call_id).cloned())
        {
            let http = self.options.http.clone();
            let token = self.options.credentials.token.clone();
            self.calls
                .spawn(async move { post_result(&http, &token, &done).await });
            return;
        }
        let cancel = Cancellation::new();
        {
            let Ok(mut running) = self.running.lock() else {
                return;
            };
            if running.contains_key(&call.call_id) {
                return; // already running: its result will be posted when it ends
            }
            running.insert(call.call_id.clone(), cancel.clone());
        }
        let options = Arc::clone(&self.options);
        let running = Arc::clone(&self.running);
        let finished = Arc::clone(&self.finished);
        let journal = Arc::clone(&self.journal);
        let semaphore = Arc::clone(semaphore);
        self.calls.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let deadline = Instant::now() + Duration::from_millis(call.timeout_ms.max(1));
            let started = Instant::now();
            let (toolbox, scope, c) = (
                Arc::clone(&options.toolbox),
                Arc::clone(&options.scope),
                cancel.clone(),
            );
            let call_id = call.call_id.clone();
            tracing::info!(%call_id, tool = %call.tool, mode = call.mode.as_str(), "call");
            let id = call_id.clone();
            let (progress, posting) = crate::progress::poster(
                options.http.clone(),
                options.credentials.token.clone(),
                call_id.clone(),
            );
            let posting = tokio::spawn(posting);
            let outcome = tokio::task::spawn_blocking(move || {
                let cx = Context::new(&scope)
                    .with_cancellation(c)
                    .with_deadline(deadline)
                    .with_progress(progress);
                let outcome =
                    toolbox.call(&cx, &call.tool, call.mode, call.input, call.precondition.as_ref());
                let duration_ms = started.elapsed().as_millis() as u64;
                let result = match outcome {
                    Ok(out) => CallResult {
                        call_id: id,
                        ok: true,
                        truncated: out.truncated(),
                        output: Some(out.into_value()),
                        error: None,
                        duration_ms,
                    },
                    Err(e) => failure(&id, e.to_body(), duration_ms),
                };
                // On disk before the result leaves: an apply that took effect
                // is answered the same way even if this process dies now.
                if call.mode == Mode::Apply
                    && result.ok
                    && let Ok(mut journal) = journal.lock()
                {
                    journal.record(&result);
                }
                result
            })
            .await;
            // No progress after the result: the call is over.
            posting.abort();
            let result = outcome.unwrap_or_else(|panic| {
                failure(
                    &call_id,
                    ErrorBody::new("internal", format!("the tool crashed: {panic}")),
                    started.elapsed().as_millis() as u64,
                )
            });
            if let Ok(mut f) = finished.lock() {
                f.insert(result.clone());
            }
            if let Ok(mut r) = running.lock() {
                r.remove(&call_id);
            }
            post_result(&options.http, &options.credentials.token, &result).await;
        });
    }
}

/// The SSE events of a stream's body, with an idle timer that counts bytes,
/// not parsed events: the server's heartbeats are SSE comments, which the
/// parser drops, and a timer that never saw them would drop every idle
/// connection.
struct EventStream {
    events: Pin<Box<dyn Stream<Item = std::result::Result<eventsource_stream::Event, String>> + Send>>,
    last_data: Arc<Mutex<tokio::time::Instant>>,
}

/// What [`EventStream::next`] found.
enum Next {
    Event(eventsource_stream::Event),
    /// No byte for the idle time.
    Idle,
    /// The server ended the body.
    End,
    /// The body failed.
    Failed(String),
}

impl EventStream {
    fn new<B, E>(body: impl Stream<Item = std::result::Result<B, E>> + Send + 'static) -> Self
    where
        B: AsRef<[u8]> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let last_data = Arc::new(Mutex::new(tokio::time::Instant::now()));
        let seen = Arc::clone(&last_data);
        let events = body
            .inspect(move |_| {
                if let Ok(mut at) = seen.lock() {
                    *at = tokio::time::Instant::now();
                }
            })
            .eventsource()
            .map(|e| e.map_err(|e| e.to_string()));
        EventStream {
            events: Box::pin(events),
            last_data,
        }
    }

    /// The next event, unless no byte at all arrives for `idle`. Cancel-safe.
    async fn next(&mut self, idle: Duration) -> Next {
        loop {
            let last = self
                .last_data
                .lock()
                .map_or_else(|_| tokio::time::Instant::now(), |at| *at);
            tokio::select! {
                // Data that is there wins over a timer that is due.
                biased;
                next = self.events.next() => return match next {
                    Some(Ok(event)) => Next::Event(event),
                    Some(Err(e)) => Next::Failed(e),
                    None => Next::End,
                },
                () = tokio::time::sleep_until(last + idle) => {
                    let latest = self.last_data.lock().map_or(last, |at| *at);
                    if latest == last {
                        return Next::Idle;
                    }
                    // Bytes arrived meanwhile (a heartbeat): wait from then.
                }
            }
        }
    }
}

/// Stops for errors that reconnecting cannot fix; reconnects for the rest.
fn fatal_or_retry(e: Error) -> Result<SessionEnd> {
    if e.is_fatal() {
        Err(e)
    } else {
        Ok(SessionEnd::Lost {
            server_closed: e.code() == Some("shutting_down"),
            reason: e.to_string(),
            healthy: false,
        })
    }
}

fn failure(call_id: &str, error: ErrorBody, duration_ms: u64) -> CallResult {
    CallResult {
        call_id: call_id.to_string(),
        ok: false,
        output: None,
        error: Some(error),
        truncated: false,
        duration_ms,
    }
}

/// Posts a result, retrying transient failures a few times. Results are
/// idempotent per `call_id`, so a retry after a lost response is safe.
async fn post_result(http: &Http, token: &str, result: &CallResult) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        match http
            .client
            .post(http.url("/result"))
            .bearer_auth(token)
            .json(result)
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return,
            // The server stopped waiting (timeout, cancel) or it is not ours: nothing to retry.
            Ok(r) if r.status().is_client_error() && r.status() != 429 => {
                tracing::info!(call_id = %result.call_id, status = r.status().as_u16(), "result not accepted");
                return;
            }
            Ok(r) => {
                tracing::warn!(call_id = %result.call_id, status = r.status().as_u16(), attempt, "posting the result failed");
            }
            Err(e) => {
                tracing::warn!(call_id = %result.call_id, error = %e, attempt, "posting the result failed");
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

/// Capped exponential backoff with full jitter: each delay is uniform in
/// `[0, min(cap, base * 2^n))`.
///
/// After the server closed the stream itself, delays stay within
/// [`FAST_RECONNECT`] for the fast window: a restarting server is back in
/// seconds, and calls wait for the device only for the server's offline grace.
#[derive(Debug)]
struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    fast_window: Duration,
    fast_until: Option<tokio::time::Instant>,
}

impl Backoff {
    fn new(base: Duration, cap: Duration, fast_window: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
            fast_window,
            fast_until: None,
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
        self.fast_until = None;
    }

    /// The server ended the stream or said it is shutting down.
    fn server_closed(&mut self) {
        // A server that keeps closing gets one window, not one per close.
        if self.fast_until.is_none() {
            self.fast_until = Some(tokio::time::Instant::now() + self.fast_window);
        }
    }

    fn next(&mut self) -> Duration {
        let exponential = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        let fast = self
            .fast_until
            .is_some_and(|until| tokio::time::Instant::now() < until);
        let ceiling = if fast {
            exponential.min(FAST_RECONNECT)
        } else {
            exponential
        };
        self.attempt = self.attempt.saturating_add(1);
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        let fraction = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests;
