//! A path's state for a precondition: what apply checks again before acting.

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::fsutil::{entry_kind, hex, lstat, open_regular, sha256_reader};
use crate::scope::Location;
use crate::tool::Context;
use crate::walk::{WalkOptions, walk};
use crate::{EntryKind, PathState};

/// The state of a location for a precondition. With `tree`, a directory's
/// state covers everything below it (paths, types, sizes, mtimes).
pub(crate) fn state_of(cx: &Context<'_>, loc: &Location<'_>, tree: bool) -> Result<PathState> {
    let Some(md) = lstat(loc)? else {
        return Ok(PathState::Absent);
    };
    Ok(match entry_kind(md.file_type()) {
        EntryKind::File => {
            let (file, _) = open_regular(loc)?;
            let (sha256, size) = sha256_reader(cx, file, &loc.path())?;
            PathState::File { sha256, size }
        }
        EntryKind::Directory => PathState::Directory {
            tree: if tree { Some(tree_digest(cx, loc)?) } else { None },
        },
        EntryKind::Symlink => PathState::Symlink {
            target: loc
                .root()
                .dir()
                .read_link_contents(loc.rel_or_dot())
                .map_err(|e| loc.err(e))?
                .display()
                .to_string(),
        },
        EntryKind::Other => PathState::Special,
    })
}

/// SHA-256 over the sorted listing of a whole tree: one line per entry with
/// its relative path, kind, size and modification time.
fn tree_digest(cx: &Context<'_>, loc: &Location<'_>) -> Result<String> {
    let mut hasher = Sha256::new();
    walk(cx, loc, &WalkOptions::everything().with_metadata(), |entry| {
        let md = entry.metadata()?;
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hasher.update(entry.rel.as_os_str().as_encoded_bytes());
        hasher.update(format!(
            "\0{:?}\0{}\0{mtime}\n",
            entry_kind(entry.file_type),
            md.len()
        ));
        Ok(true)
    })?;
    Ok(hex(&hasher.finalize()))
}
