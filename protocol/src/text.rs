//! A tool's output as text, for clients that read a result's text and not
//! its structure (MCP's `content` beside `structuredContent`).

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The text of `tool`'s output: content equivalent to the structure, in the
/// form that reads best and costs least.
///
/// * A plan's summary and diff come first, as they are, so a client that
///   shows only text shows the change; its JSON follows.
/// * A `list_directory` page is its other fields as JSON on the first line,
///   then one entry a line: a name (`details: false`), or kind, size,
///   modification time and path. The path is last, and written as a JSON
///   string when it holds a control character or starts with `"`, so every
///   line reads back exactly. A tree of 20,000 names is then half the bytes
///   of its JSON and a model's tokens with it, and the structure is not sent
///   a second time as JSON.
/// * A `read_file` result is its other fields as JSON on the first line,
///   then the fenced text as it is: a model reads the file's lines, not
///   their JSON escapes.
/// * Any other output is its JSON, compact.
pub fn output_text(tool: &str, output: &Value) -> String {
    match (tool, output.as_object()) {
        ("list_directory", Some(map)) => return listing_text(map),
        ("read_file", Some(map)) if map.get("content").is_some_and(Value::is_string) => {
            let mut text = fields_but(map, &["content"]);
            text.push('\n');
            text.push_str(map["content"].as_str().unwrap_or_default());
            return text;
        }
        _ => {}
    }
    let json = output.to_string();
    match output["plan"]["diff"].as_str() {
        Some(diff) => format!(
            "{}\n\n{diff}\n{json}",
            output["plan"]["summary"].as_str().unwrap_or_default()
        ),
        None => json,
    }
}

/// The fields of `map` but `left_out`, as compact JSON.
fn fields_but(map: &Map<String, Value>, left_out: &[&str]) -> String {
    let rest: Map<String, Value> = map
        .iter()
        .filter(|(key, _)| !left_out.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Value::Object(rest).to_string()
}

fn listing_text(map: &Map<String, Value>) -> String {
    let mut text = fields_but(map, &["names", "entries"]);
    let empty = Vec::new();
    let names = map.get("names").and_then(Value::as_array).unwrap_or(&empty);
    let entries = map.get("entries").and_then(Value::as_array).unwrap_or(&empty);
    text.reserve(names.len() * 32 + entries.len() * 72);
    for name in names {
        text.push('\n');
        push_path(&mut text, name);
    }
    for entry in entries {
        let field = |key: &str| match &entry[key] {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = write!(
            text,
            "\n{} {} {} ",
            field("kind"),
            field("size"),
            field("modified")
        );
        push_path(&mut text, &entry["path"]);
    }
    text
}

/// A path as the last field of a line: as it is, or as a JSON string when it
/// would not read back as itself.
fn push_path(text: &mut String, path: &Value) {
    match path.as_str() {
        Some(path) if !path.starts_with('"') && !path.chars().any(char::is_control) => text.push_str(path),
        _ => {
            let _ = write!(text, "{path}");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The path at the end of a line, unquoted if it was quoted.
    fn path_of(field: &str) -> String {
        if field.starts_with('"') {
            serde_json::from_str(field).unwrap()
        } else {
            field.to_string()
        }
    }

    #[test]
    fn a_names_listing_is_one_name_a_line_after_the_rest() {
        let out = json!({
            "path": "/w",
            "entries": [],
            "names": ["a/", "a/b.txt", "two\nlines", "\"quoted", "ünï"],
            "truncated": true,
            "next_cursor": "c1.61",
        });
        let text = output_text("list_directory", &out);
        let mut lines = text.lines();
        let head: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(
            head,
            json!({ "path": "/w", "truncated": true, "next_cursor": "c1.61" })
        );
        let names: Vec<String> = lines.map(path_of).collect();
        assert_eq!(names, ["a/", "a/b.txt", "two\nlines", "\"quoted", "ünï"]);
    }

    #[test]
    fn a_detailed_listing_is_kind_size_time_and_path_a_line() {
        let out = json!({
            "path": "/w",
            "entries": [
                { "path": "a", "kind": "directory", "size": 4096, "modified": "2026-12-07T10:00:00Z", "symlink": false },
                { "path": "a/b c.txt", "kind": "file", "size": 5, "modified": "2026-12-07T10:00:01Z", "symlink": false },
                { "path": "tab\there", "kind": "symlink", "size": 3, "symlink": true },
            ],
            "truncated": false,
            "unreadable": 0,
        });
        let text = output_text("list_directory", &out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            serde_json::from_str::<Value>(lines[0]).unwrap(),
            json!({ "path": "/w", "truncated": false, "unreadable": 0 })
        );
        assert_eq!(lines[1], "directory 4096 2026-12-07T10:00:00Z a");
        assert_eq!(lines[2], "file 5 2026-12-07T10:00:01Z a/b c.txt");
        let fields: Vec<&str> = lines[3].splitn(4, ' ').collect();
        assert_eq!(fields[..3], ["symlink", "3", "-"]);
        assert_eq!(path_of(fields[3]), "tab\there");
    }

    #[test]
    fn a_read_file_is_its_fields_then_the_fenced_text_as_it_is() {
        let content = "untrusted data\n<<<f1\n\"quoted\"\tand tabbed\nf1>>>";
        let out = json!({ "path": "/w/a.txt", "content": content, "fence": "f1", "truncated": false });
        let text = output_text("read_file", &out);
        let (head, rest) = text.split_once('\n').unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(head).unwrap(),
            json!({ "path": "/w/a.txt", "fence": "f1", "truncated": false })
        );
        assert_eq!(rest, content);
        // A binary file has no content: its JSON.
        let binary = json!({ "path": "/w/b.bin", "binary": true });
        assert_eq!(output_text("read_file", &binary), binary.to_string());
    }

    #[test]
    fn a_plan_shows_its_diff_first_and_other_output_is_its_json() {
        let plan = json!({ "plan": { "summary": "write a.txt", "diff": "+x" } });
        assert!(output_text("write_file", &plan).starts_with("write a.txt\n\n+x\n{"));
        let other = json!({ "matches": [{ "path": "a" }] });
        assert_eq!(output_text("glob", &other), other.to_string());
    }
}
