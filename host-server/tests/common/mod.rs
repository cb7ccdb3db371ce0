//! A real server on 127.0.0.1:0, and devices that talk to it over HTTP/SSE.
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eventsource_stream::Eventsource;
use fusion_host_server::{Clock, Config, Dispatcher, ManualClock, MemoryStore, router};
use fusion_tools::{
    Access, CallEvent, CallResult, Context, DeviceManifest, EnrollResponse, ErrorBody, Mode, Scope, Toolbox,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub addr: SocketAddr,
    pub dispatcher: Dispatcher,
    pub store: Arc<MemoryStore>,
    pub clock: ManualClock,
}

impl Server {
    pub async fn start() -> Server {
        Self::with(|_| {}).await
    }

    pub async fn with(configure: impl FnOnce(&mut Config)) -> Server {
        let (clock, handle) = Clock::manual(SystemTime::now());
        let mut config = Config {
            offline_grace: Duration::from_millis(300),
            clock,
            ..Config::default()
        };
        configure(&mut config);
        let store = Arc::new(MemoryStore::new());
        let dispatcher = Dispatcher::new(store.clone(), config);
        let app = axum::Router::new().nest("/api/host", router(dispatcher.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .await
                .unwrap();
        });
        Server {
            addr,
            dispatcher,
            store,
            clock: handle,
        }
    }

    /// Starts `dispatcher.call(owner, device, tool, input)` in the background.
    pub fn spawn_call(
        &self,
        owner: &str,
        device_id: &str,
        tool: &str,
        input: Value,
        options: fusion_host_server::CallOptions,
    ) -> tokio::task::JoinHandle<fusion_host_server::Result<fusion_host_server::CallOutcome>> {
        let (d, owner, id, tool) = (
            self.dispatcher.clone(),
            owner.to_string(),
            device_id.to_string(),
            tool.to_string(),
        );
        tokio::spawn(async move { d.call(&owner, &id, &tool, input, options).await })
    }

    /// `stat` of a device's folder, as `owner`: the call most tests need.
    pub async fn stat(
        &self,
        owner: &str,
        device_id: &str,
    ) -> fusion_host_server::Result<fusion_host_server::CallOutcome> {
        let options = fusion_host_server::CallOptions::default();
        self.dispatcher
            .call(owner, device_id, "stat", json!({ "path": "." }), options)
            .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api/host{path}", self.addr)
    }

    pub async fn post_enroll(&self, code: &str) -> reqwest::Response {
        self.post_enroll_from(code, None).await
    }

    pub async fn post_enroll_from(&self, code: &str, local: Option<IpAddr>) -> reqwest::Response {
        let client = reqwest::Client::builder().local_address(local).build().unwrap();
        client
            .post(self.url("/enroll"))
            .json(&json!({ "code": code, "name": "survey-laptop", "platform": "linux-x86_64", "host_version": "0.1.0" }))
            .send()
            .await
            .unwrap()
    }

    /// Mints a code for `owner` and enrolls with it: the device's token.
    pub async fn enroll(&self, owner: &str) -> EnrollResponse {
        let code = self.dispatcher.mint_pairing_code(owner).await.unwrap();
        let response = self.post_enroll(&code.code).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// The built-in tools' manifest, as a real device would send it.
pub fn manifest() -> DeviceManifest {
    DeviceManifest {
        host_version: "0.1.0".into(),
        tools: Toolbox::builtin().manifest().tools,
        roots: Vec::new(),
    }
}

pub fn client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    headers.insert("fusion-host-protocol", "1".parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

#[derive(Debug, Clone)]
pub struct Ev {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl Ev {
    pub fn call(&self) -> CallEvent {
        assert_eq!(self.event, "call", "{self:?}");
        serde_json::from_value(self.data.clone()).unwrap()
    }
}

/// A device the test drives by hand.
pub struct ScriptedDevice {
    pub token: String,
    pub device_id: String,
    pub client: reqwest::Client,
    base: String,
    events: mpsc::UnboundedReceiver<Option<Ev>>,
    pub headers: reqwest::header::HeaderMap,
}

impl ScriptedDevice {
    /// Sends the manifest and opens the stream; returns once `hello` arrived.
    pub async fn connect(server: &Server, enrolled: &EnrollResponse) -> ScriptedDevice {
        Self::connect_with(server, enrolled, None).await
    }

    pub async fn connect_with(
        server: &Server,
        enrolled: &EnrollResponse,
        last_event_id: Option<&str>,
    ) -> ScriptedDevice {
        let client = client(&enrolled.token);
        let put = client
            .put(server.url("/manifest"))
            .json(&manifest())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 204);
        let mut request = client.get(server.url("/stream"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        let headers = response.headers().clone();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = response.bytes_stream().eventsource();
            while let Some(Ok(e)) = stream.next().await {
                let data = serde_json::from_str(&e.data).unwrap_or(Value::Null);
                if tx
                    .send(Some(Ev {
                        event: e.event,
                        id: e.id,
                        data,
                    }))
                    .is_err()
                {
                    return;
                }
            }
            let _ = tx.send(None); // the stream ended
        });
        let mut device = ScriptedDevice {
            token: enrolled.token.clone(),
            device_id: enrolled.device_id.clone(),
            client,
            base: server.url(""),
            events,
            headers,
        };
        let hello = device.next().await.expect("hello");
        assert_eq!(hello.event, "hello");
        device
    }

    /// The next event, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<Ev> {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no event within 10 s")
            .flatten()
    }

    /// Asserts nothing arrives for a while.
    pub async fn quiet(&mut self, for_: Duration) {
        if let Ok(Some(Some(ev))) = tokio::time::timeout(for_, self.events.recv()).await {
            panic!("unexpected event {ev:?}");
        }
    }

    pub async fn post_result(&self, result: &CallResult) -> reqwest::Response {
        self.client
            .post(format!("{}/result", self.base))
            .json(result)
            .send()
            .await
            .unwrap()
    }

    pub async fn answer(&self, call: &CallEvent, output: Value) -> reqwest::Response {
        self.post_result(&ok(&call.call_id, output)).await
    }

    /// `POST /progress` for `call`: `done` of `total` `message`.
    pub async fn progress(
        &self,
        call: &CallEvent,
        done: u64,
        total: u64,
        message: &str,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}/progress", self.base))
            .json(&serde_json::json!({ "call_id": call.call_id, "done": done, "total": total, "message": message }))
            .send()
            .await
            .unwrap()
    }
}

pub fn ok(call_id: &str, output: Value) -> CallResult {
    CallResult {
        call_id: call_id.into(),
        ok: true,
        output: Some(output),
        error: None,
        truncated: false,
        duration_ms: 1,
    }
}

/// A device that runs the real built-in tools on a folder, answering every
/// call like `fusion-host` would.
pub struct ToolDevice {
    pub dir: tempfile::TempDir,
    pub task: tokio::task::JoinHandle<()>,
}

impl ToolDevice {
    pub async fn start(server: &Server, enrolled: &EnrollResponse) -> ToolDevice {
        let dir = tempfile::tempdir().unwrap();
        let root: PathBuf = dir.path().to_path_buf();
        let mut device = ScriptedDevice::connect(server, enrolled).await;
        let task = tokio::spawn(async move {
            let scope = Arc::new(Scope::single(&root, Access::ReadWrite).unwrap());
            while let Some(ev) = device.next().await {
                if ev.event != "call" {
                    continue;
                }
                let call = ev.call();
                let scope = Arc::clone(&scope);
                let call2 = call.clone();
                let result = tokio::task::spawn_blocking(move || run(&scope, &call2))
                    .await
                    .unwrap();
                device.post_result(&result).await;
            }
        });
        ToolDevice { dir, task }
    }
}

pub fn run(scope: &Scope, call: &CallEvent) -> CallResult {
    let cx = Context::new(scope);
    let outcome = Toolbox::builtin().call(
        &cx,
        &call.tool,
        call.mode,
        call.input.clone(),
        call.precondition.as_ref(),
    );
    match outcome {
        Ok(out) => CallResult {
            call_id: call.call_id.clone(),
            ok: true,
            truncated: out.truncated(),
            output: Some(out.into_value()),
            error: None,
            duration_ms: 1,
        },
        Err(e) => CallResult {
            call_id: call.call_id.clone(),
            ok: false,
            output: None,
            error: Some(ErrorBody::new(e.code().as_str(), e.to_string())),
            truncated: false,
            duration_ms: 1,
        },
    }
}

pub fn is_mode(call: &CallEvent, mode: Mode) -> bool {
    call.mode == mode
}
