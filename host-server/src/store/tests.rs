use super::*;

#[test]
fn input_paths_are_the_path_fields_at_any_depth() {
    let input = serde_json::json!({
        "renames": [{ "from": "a.e57", "to": "b.e57" }, { "from": "c.e57", "to": "b.e57" }],
        "pattern": "*.e57",
        "content": "not a path",
    });
    assert_eq!(input_paths(&input), ["a.e57", "b.e57", "c.e57"]);
    assert_eq!(input_paths(&serde_json::json!({ "path": "." })), ["."]);
    let many: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
    assert_eq!(
        input_paths(&serde_json::json!({ "paths": many })).len(),
        LOGGED_PATHS
    );
}

fn manifest(tools: usize) -> DeviceManifest {
    let mut tools_list = fusion_tools::Toolbox::builtin().manifest().tools;
    tools_list.truncate(tools);
    DeviceManifest {
        host_version: "1".into(),
        tools: tools_list,
        roots: Vec::new(),
    }
}

#[tokio::test]
async fn identical_manifests_are_kept_once() {
    let store = MemoryStore::new();
    for id in ["dev_a", "dev_b", "dev_c"] {
        store.save_manifest(id, &manifest(16)).await.unwrap();
    }
    store.save_manifest("dev_c", &manifest(3)).await.unwrap();
    {
        let tables = store.tables();
        assert_eq!(tables.distinct_manifests.len(), 2);
        assert!(Arc::ptr_eq(
            &tables.manifests["dev_a"],
            &tables.manifests["dev_b"]
        ));
        assert_eq!(tables.manifests["dev_c"].tools.len(), 3);
    }
    store.save_manifest("dev_c", &manifest(16)).await.unwrap();
    assert_eq!(
        store.tables().distinct_manifests.len(),
        1,
        "an unused manifest is dropped"
    );
}
