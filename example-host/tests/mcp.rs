//! `fusion-host mcp` as a child process, driven by the official Rust MCP
//! client over stdio.

use std::path::Path;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fusion-host");

async fn connect(folder: &Path, config: &Path) -> RunningService<RoleClient, ()> {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("mcp")
        .arg("--root")
        .arg(folder)
        .arg("--config-dir")
        .arg(config);
    ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap()
}

fn args(v: Value) -> CallToolRequestParams {
    let Value::Object(map) = v else {
        panic!("arguments are an object")
    };
    CallToolRequestParams::new("").with_arguments(map)
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, input: Value) -> CallToolResult {
    let mut params = args(input);
    params.name = tool.to_string().into();
    client.call_tool(params).await.unwrap()
}

#[tokio::test]
async fn tools_list_and_calls_over_stdio() {
    let folder = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("north.e57"), "scan").unwrap();
    let client = connect(folder.path(), config.path()).await;
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "fusion-host");

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "a stable order");
    assert!(
        names.contains(&"rename_batch") && names.contains(&"convert_e57_to_las"),
        "{names:?}"
    );
    for tool in &tools {
        assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
        assert!(tool.output_schema.is_some(), "{} has an outputSchema", tool.name);
    }
    let by_name = |n: &str| tools.iter().find(|t| t.name == n).unwrap();
    assert_eq!(
        by_name("read_file").annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
    assert_eq!(
        by_name("delete").annotations.as_ref().unwrap().destructive_hint,
        Some(true)
    );
    assert!(
        by_name("write_file").input_schema["properties"]
            .get("apply_token")
            .is_some()
    );
    assert!(
        by_name("read_file").input_schema["properties"]
            .get("apply_token")
            .is_none()
    );

    // A read: structured content and the same as text.
    let out = call(&client, "list_directory", json!({})).await;
    assert_eq!(out.is_error, Some(false));
    let structured = out.structured_content.clone().unwrap();
    assert_eq!(structured["entries"][0]["path"], "north.e57");
    let text = out.content[0].as_text().unwrap().text.clone();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), structured);

    // A tool error: isError, the code in the text and the structure.
    let out = call(&client, "read_file", json!({ "path": "../../etc/passwd" })).await;
    assert_eq!(out.is_error, Some(true));
    assert_eq!(out.structured_content.as_ref().unwrap()["code"], "outside_scope");
    assert!(
        out.content[0]
            .as_text()
            .unwrap()
            .text
            .starts_with("outside_scope: ")
    );

    // Unknown tools and malformed arguments are JSON-RPC errors.
    let mut params = args(json!({}));
    params.name = "rm_rf".into();
    let e = client.call_tool(params).await.unwrap_err().to_string();
    assert!(e.contains("unknown tool `rm_rf`"), "{e}");
    let mut params = args(json!({ "path": 3 }));
    params.name = "read_file".into();
    let e = client.call_tool(params).await.unwrap_err().to_string();
    assert!(e.contains("path"), "{e}");

    // A change: the plan and a token first, the change only with the token.
    let input = json!({ "path": "notes.txt", "content": "north wall\n" });
    let planned = call(&client, "write_file", input.clone()).await;
    let planned = planned.structured_content.unwrap();
    assert_eq!(planned["status"], "planned");
    assert!(planned["plan"]["diff"].as_str().unwrap().contains("+north wall"));
    assert!(
        !folder.path().join("notes.txt").exists(),
        "nothing written before the token"
    );
    let token = planned["apply_token"].as_str().unwrap().to_string();
    let mut other = input.clone();
    other["content"] = json!("something else\n");
    other["apply_token"] = json!(token);
    let mut params = args(other);
    params.name = "write_file".into();
    let e = client.call_tool(params).await.unwrap_err().to_string();
    assert!(e.contains("other input"), "{e}");
    let mut with_token = input.clone();
    with_token["apply_token"] = json!(token);
    // The token was bound to the first input and is not spent by a refused try.
    let applied = call(&client, "write_file", with_token.clone()).await;
    assert_eq!(
        applied.structured_content.as_ref().unwrap()["status"],
        "applied",
        "{applied:?}"
    );
    assert_eq!(
        std::fs::read_to_string(folder.path().join("notes.txt")).unwrap(),
        "north wall\n"
    );
    let mut params = args(with_token);
    params.name = "write_file".into();
    let e = client.call_tool(params).await.unwrap_err().to_string();
    assert!(e.contains("used already"), "{e}");

    // The precondition is re-verified when the token comes back.
    let input = json!({ "path": "notes.txt", "content": "v2\n" });
    let planned = call(&client, "write_file", input.clone())
        .await
        .structured_content
        .unwrap();
    std::fs::write(folder.path().join("notes.txt"), "changed meanwhile\n").unwrap();
    let mut with_token = input;
    with_token["apply_token"] = planned["apply_token"].clone();
    let out = call(&client, "write_file", with_token).await;
    assert_eq!(out.is_error, Some(true));
    assert_eq!(out.structured_content.unwrap()["code"], "conflict");
    client.cancel().await.unwrap();
}
