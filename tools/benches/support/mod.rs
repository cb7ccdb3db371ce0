//! What every bench of the workspace does with its table: resolve `--write
//! PATH` against the workspace (cargo runs benches in the package folder),
//! and put the table between its markers in that file.

use std::path::{Path, PathBuf};

/// `path` as given, or relative to the workspace folder above `manifest_dir`.
pub(crate) fn workspace_path(manifest_dir: &str, path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    if path.is_relative() {
        Path::new(manifest_dir).join("..").join(path)
    } else {
        path
    }
}

/// Replaces what stands between `<!-- NAME:start -->` and `<!-- NAME:end -->`
/// in `path` with `table`, or appends the block when the markers are missing.
pub(crate) fn write_table(path: &Path, name: &str, table: &str) {
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let (start, end) = (format!("<!-- {name}:start -->"), format!("<!-- {name}:end -->"));
    let block = format!("{start}\n{table}{end}");
    let updated = match (doc.find(&start), doc.find(&end)) {
        (Some(a), Some(b)) => format!("{}{block}{}", &doc[..a], &doc[b + end.len()..]),
        _ => format!("{doc}\n{block}\n"),
    };
    std::fs::write(path, updated).expect("write the table");
}
