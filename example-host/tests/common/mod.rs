//! The real dispatcher served on 127.0.0.1:0 by the test, and `fusion-host`
//! processes that are killed when a test ends without stopping them.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::process::Child;
use std::sync::Arc;

use fusion_host_server::{Config, Dispatcher, MemoryStore, router};

pub const BIN: &str = env!("CARGO_BIN_EXE_fusion-host");

pub struct Server {
    pub url: String,
    pub dispatcher: Dispatcher,
}

pub async fn server() -> Server {
    server_with(Config::default()).await
}

pub async fn server_with(config: Config) -> Server {
    let dispatcher = Dispatcher::new(Arc::new(MemoryStore::new()), config);
    let app = axum::Router::new().nest("/api/host", router(dispatcher.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    Server { url, dispatcher }
}

/// A `fusion-host` process that is killed when the test ends without
/// stopping it (a failed assertion): an orphan would hold the test's output
/// pipes open and the test run would never end.
pub struct Running(pub Option<Child>);

impl Running {
    #[cfg(target_os = "linux")]
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// The process, no longer killed on drop.
    pub fn take(mut self) -> Child {
        self.0.take().expect("a running child")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
