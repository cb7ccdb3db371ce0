//! The docs say what the device really offers: `docs/TOOLS.md` has a
//! section for each of the device's own tools naming every input and output
//! field, and the tool counts the docs state are the real ones.

mod common;

use std::process::Command;

use common::BIN;
use serde_json::Value;

fn doc(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn device_manifest() -> Value {
    let out = Command::new(BIN).args(["tools", "--json"]).output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn tools_md_covers_the_devices_own_tools() {
    let doc = doc("docs/TOOLS.md");
    let builtin = serde_json::to_value(fusion_tools::Toolbox::builtin().manifest()).unwrap();
    let builtin: Vec<&str> = builtin["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let manifest = device_manifest();
    let own: Vec<&Value> = manifest["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !builtin.contains(&t["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        own.len(),
        2,
        "the device's own tools changed: update docs/TOOLS.md"
    );
    for tool in own {
        let name = tool["name"].as_str().unwrap();
        let heading = format!("\n### {name}\n");
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/TOOLS.md has no section `### {name}`"));
        let section = &doc[start + heading.len()..];
        let section = &section[..section.find("\n### ").unwrap_or(section.len())];
        for field in tool["inputSchema"]["properties"].as_object().unwrap().keys() {
            assert!(
                section.contains(&format!("`{field}`")),
                "docs/TOOLS.md `{name}` does not name input `{field}`"
            );
        }
        for field in tool["outputSchema"]["properties"].as_object().unwrap().keys() {
            assert!(
                section.contains(&format!("`{field}`")),
                "docs/TOOLS.md `{name}` does not name output `{field}`"
            );
        }
    }
}

#[test]
fn the_tool_counts_the_docs_state_are_the_real_ones() {
    let words = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "twenty-one",
        "twenty-two",
        "twenty-three",
    ];
    let builtin = fusion_tools::Toolbox::builtin().manifest().tools.len();
    let device = device_manifest()["tools"].as_array().unwrap().len();
    // Paired, the runtime adds files by handle: `upload` and `download`.
    let connected = device + 2;
    let tools_md = doc("docs/TOOLS.md");
    for (count, what) in [
        (builtin, "`fusion-tools` ships {} tools"),
        (device, "`fusion-host tools` lists\n{}"),
        (connected, "a connected device offers {}"),
    ] {
        let claim = what.replace("{}", words[count]);
        assert!(
            tools_md.replace('\n', " ").contains(&claim.replace('\n', " ")),
            "docs/TOOLS.md should say {claim:?}"
        );
    }
    let readme = doc("README.md");
    assert!(
        readme.contains(&format!("{builtin} built-in tools")),
        "README.md should say {builtin} built-in tools"
    );
}
