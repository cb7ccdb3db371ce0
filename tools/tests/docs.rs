//! `docs/TOOLS.md` must describe what the toolbox actually offers: a section
//! per tool, each input field named, and the class stated where it is listed.

use fusion_tools::Toolbox;

#[test]
fn tools_md_covers_every_tool_and_input_field() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/TOOLS.md")).unwrap();
    let manifest = serde_json::to_value(Toolbox::builtin().manifest()).unwrap();
    for tool in manifest["tools"].as_array().unwrap() {
        let name = tool["name"].as_str().unwrap();
        let heading = format!("\n### {name}\n");
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/TOOLS.md has no section `### {name}`"));
        let section = &doc[start + heading.len()..];
        let section = &section[..section.find("\n### ").unwrap_or(section.len())];

        let class = tool["_meta"]["fusion-host/class"].as_str().unwrap();
        let class_heading = format!("\n## {}{} tools\n", class[..1].to_uppercase(), &class[1..]);
        let class_start = doc
            .find(&class_heading)
            .unwrap_or_else(|| panic!("no `{class_heading}`"));
        let next_class = doc[class_start + 1..]
            .find("\n## ")
            .map_or(doc.len(), |i| i + class_start + 1);
        assert!(
            (class_start..next_class).contains(&start),
            "`{name}` is a {class} tool but is documented under another class"
        );

        let properties = tool["inputSchema"]["properties"].as_object().unwrap();
        for field in properties.keys() {
            assert!(
                section.contains(&format!("`{field}`")),
                "docs/TOOLS.md `{name}` does not name input `{field}`"
            );
        }
        for field in tool["outputSchema"]["properties"].as_object().unwrap().keys() {
            assert!(
                section.contains(field.as_str()),
                "docs/TOOLS.md `{name}` does not name output `{field}`"
            );
        }
    }
}
