//! `fusion-host tools`: the tools this device offers.

use crate::cli::Global;
use crate::fail::Fail;

/// `fusion-host tools`: the manifest.
pub(crate) fn tools(global: &Global) -> Result<(), Fail> {
    let manifest = crate::toolbox::toolbox().manifest();
    if global.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
        return Ok(());
    }
    for tool in &manifest.tools {
        println!(
            "{:<20} {:<7} {}",
            tool.name,
            tool.class.as_str(),
            first_sentence(&tool.description)
        );
    }
    println!("\n`fusion-host tools --json` gives each tool's whole description and input schema.");
    Ok(())
}

/// The description's first sentence: up to a full stop that a new sentence
/// (a capital letter) follows, so "e.g. a folder" does not end it.
fn first_sentence(text: &str) -> &str {
    text.match_indices(". ")
        .find(|(at, _)| text[at + 2..].starts_with(|c: char| c.is_uppercase()))
        .map_or(text, |(at, _)| &text[..=at])
}

#[cfg(test)]
mod tests {
    use super::first_sentence;

    #[test]
    fn a_sentence_ends_where_the_next_one_begins() {
        assert_eq!(
            first_sentence("Rename files at once, e.g. a folder of scans. The plan lists them."),
            "Rename files at once, e.g. a folder of scans."
        );
        assert_eq!(first_sentence("Show a file."), "Show a file.");
        assert_eq!(first_sentence("No full stop"), "No full stop");
    }
}
