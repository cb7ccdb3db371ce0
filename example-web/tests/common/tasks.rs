//! A 2026-07-28 MCP client that follows tasks (the tasks extension), and
//! what its tests do with tasks.

use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient};

use super::App;

/// A 2026-07-28 client that follows tasks (the tasks extension).
#[derive(Clone)]
pub struct Follower;

impl ClientHandler for Follower {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("follower", "0"),
        )
    }
}

/// A client of `app`'s `/mcp` with `token`.
pub async fn follower(app: &App, token: &str) -> RunningService<RoleClient, Follower> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.url)).auth_header(token);
    rmcp::service::serve_client_with_lifecycle(
        Follower,
        StreamableHttpClientTransport::from_config(config),
        rmcp::service::ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await
    .unwrap()
}

/// Polls a task until `done` says so, within 20 s.
pub async fn poll(
    client: &RunningService<RoleClient, Follower>,
    id: &str,
    done: impl Fn(&rmcp::model::DetailedTask) -> bool,
) -> rmcp::model::DetailedTask {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let task = client
            .peer()
            .get_task(rmcp::model::GetTaskParams::new(id))
            .await
            .unwrap()
            .task;
        if done(&task) || std::time::Instant::now() > deadline {
            return task;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The id of the task a call answered with.
pub fn task_of(response: rmcp::model::CallToolResponse) -> String {
    match response {
        rmcp::model::CallToolResponse::Task(created) => created.task.task_id,
        other => panic!("a task, not {other:?}"),
    }
}
