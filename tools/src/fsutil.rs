//! Filesystem helpers every tool shares: opening regular files safely,
//! fingerprints for preconditions, streaming hashes, atomic replacement.

use std::io::{self, Read, Write};
use std::path::Path;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, File, FileType, Metadata, OpenOptions, Permissions};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::scope::Location;
use crate::tool::Context;
use crate::{EntryKind, PathState};

/// Read buffer for streaming hashes and copies: large enough to amortize
/// syscalls, small enough to keep a call's memory flat.
pub(crate) const BUF_SIZE: usize = 256 * 1024;

/// What a directory entry of this type is.
pub(crate) fn entry_kind(ft: FileType) -> EntryKind {
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

/// Modification time as RFC 3339 (UTC, seconds), if the platform has it.
pub(crate) fn modified(md: &Metadata) -> Option<String> {
    let time = md.modified().ok()?.into_std();
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

/// Opens a regular file for reading, following symlinks only inside the root.
///
/// FIFOs, sockets and devices are refused *before* anything could block on
/// them: the open is non-blocking and the type is checked on the opened
/// handle, so a file swapped for a FIFO after a stat cannot hang the call.
pub(crate) fn open_regular(loc: &Location<'_>) -> Result<(File, Metadata)> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    cap_std::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = match loc.root().dir().open_with(loc.rel_or_dot(), &options) {
        Ok(file) => file,
        // Windows answers "access denied" for opening a folder as a file; say
        // what it is instead, as on Unix.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(match loc.root().dir().metadata(loc.rel_or_dot()) {
                Ok(md) if !md.is_file() => Error::NotAFile {
                    path: loc.path(),
                    found: entry_kind(md.file_type()).article(),
                },
                _ => loc.err(e),
            });
        }
        Err(e) => return Err(loc.err(e)),
    };
    let md = file.metadata().map_err(|e| loc.err(e))?;
    if !md.is_file() {
        return Err(Error::NotAFile {
            path: loc.path(),
            found: entry_kind(md.file_type()).article(),
        });
    }
    Ok((file, md))
}

/// The metadata of a location without following a final symlink.
pub(crate) fn lstat(loc: &Location<'_>) -> Result<Option<Metadata>> {
    match loc.root().dir().symlink_metadata(loc.rel_or_dot()) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(loc.err(e)),
    }
}

/// Streams `reader` through SHA-256, checking for cancellation per buffer.
pub(crate) fn sha256_reader(cx: &Context<'_>, reader: impl Read, path: &Path) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let n = stream(cx, reader, path, |chunk| hasher.update(chunk))?;
    Ok((hex(&hasher.finalize()), n))
}

/// Feeds `reader` to `sink` in [`BUF_SIZE`] chunks; returns the byte count.
///
/// Reading stays on the calling thread: a helper thread reading ahead was
/// measured slower for hashing from the page cache (the hash then reads every
/// chunk from the other core's cache), and the kernel's read-ahead already
/// overlaps the disk with the work on sequential reads.
pub(crate) fn stream(
    cx: &Context<'_>,
    mut reader: impl Read,
    path: &Path,
    mut sink: impl FnMut(&[u8]),
) -> Result<u64> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        cx.checkpoint()?;
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        sink(&buf[..n]);
        total += n as u64;
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The SHA-256 of some bytes, lowercase hex.
pub(crate) fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The identity of an entry: kind, file id, size and modification time.
pub(crate) fn identity(md: &Metadata) -> PathState {
    PathState::Identity {
        entry: entry_kind(md.file_type()),
        id: id_of(md),
        size: md.len(),
        modified: md
            .modified()
            .ok()
            .map(|t| humantime::format_rfc3339_nanos(t.into_std()).to_string()),
    }
}

/// A file id that survives renames: `device:inode` in hex.
pub(crate) fn id_of(md: &Metadata) -> String {
    use cap_fs_ext::MetadataExt as _;
    format!("{:x}:{:x}", md.dev(), md.ino())
}

/// Replaces `name` in `dir` atomically with what `fill` writes: a temporary
/// file in the same directory, flushed, given `permissions`, then renamed over
/// the target. Readers see the old or the new content, never a mix; on any
/// error the target is untouched and the temporary file is removed.
pub(crate) fn replace_atomically(
    dir: &Dir,
    name: &std::ffi::OsStr,
    permissions: Option<Permissions>,
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let io_err = |e| Error::io(path, e);
    let mut temp = cap_tempfile::TempFile::new(dir).map_err(io_err)?;
    fill(temp.as_file_mut())?;
    let permissions = match permissions {
        Some(p) => p,
        None => default_file_permissions(temp.as_file()).map_err(io_err)?,
    };
    temp.as_file().set_permissions(permissions).map_err(io_err)?;
    temp.as_file().sync_all().map_err(io_err)?;
    temp.replace(name).map_err(io_err)
}

/// A new file gets 0644 on Unix (the temporary file starts read-only).
#[cfg(unix)]
fn default_file_permissions(_: &File) -> io::Result<Permissions> {
    use cap_std::fs::PermissionsExt;
    Ok(Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn default_file_permissions(file: &File) -> io::Result<Permissions> {
    let mut p = file.metadata()?.permissions();
    p.set_readonly(false);
    Ok(p)
}

/// The current regular file at a write target, refusing what a write must
/// never replace or follow: a final symlink, a directory, a special file.
/// Returns its permissions (to keep them) or `None` when nothing is there.
pub(crate) fn existing_file_for_write(
    dir: &Dir,
    name: &std::ffi::OsStr,
    path: &Path,
) -> Result<Option<Metadata>> {
    match dir.symlink_metadata(name) {
        Ok(md) if md.is_file() => Ok(Some(md)),
        Ok(md) => Err(Error::NotAFile {
            path: path.to_path_buf(),
            found: entry_kind(md.file_type()).article(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Opens `name` in `dir` for reading without following a final symlink.
pub(crate) fn open_nofollow(dir: &Dir, name: &std::ffi::OsStr, path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).follow(FollowSymlinks::No);
    #[cfg(unix)]
    cap_std::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    dir.open_with(name, &options).map_err(|e| Error::io(path, e))
}

/// A unified diff of two texts with three lines of context.
pub(crate) fn unified_diff(old: &str, new: &str, path: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// Whether bytes look binary: a NUL in the first 8 KiB, as git and ripgrep decide.
pub(crate) fn looks_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(8192)].contains(&0)
}

/// Reads a whole regular file up to `limit` bytes, refusing larger ones.
pub(crate) fn read_limited(
    cx: &Context<'_>,
    loc: &Location<'_>,
    limit: u64,
    hint: &'static str,
) -> Result<Vec<u8>> {
    let (file, md) = open_regular(loc)?;
    if md.len() > limit {
        return Err(Error::TooLarge {
            what: loc.display(),
            size: md.len(),
            limit,
            hint,
        });
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    stream(cx, file.take(limit + 1), &loc.path(), |chunk| {
        bytes.extend_from_slice(chunk);
    })?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge {
            what: loc.display(),
            size: bytes.len() as u64,
            limit,
            hint,
        });
    }
    Ok(bytes)
}

/// The largest file the text-editing tools load: 16 MiB.
pub(crate) const MAX_EDIT_BYTES: u64 = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// A scope for a Context; streams below do not touch it.
    fn scope() -> (tempfile::TempDir, crate::Scope) {
        let dir = tempfile::tempdir().unwrap();
        let scope = crate::Scope::single(dir.path(), crate::Access::ReadOnly).unwrap();
        (dir, scope)
    }

    #[test]
    fn a_stream_delivers_every_byte_in_order() {
        let (_dir, scope) = scope();
        let cx = Context::new(&scope);
        for len in [0, 1, BUF_SIZE - 1, BUF_SIZE, BUF_SIZE + 1, BUF_SIZE * 7 + 123] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut got = Vec::new();
            let n = stream(&cx, data.as_slice(), Path::new("x"), |chunk| {
                got.extend_from_slice(chunk);
            })
            .unwrap();
            assert_eq!(n, len as u64);
            assert!(got == data, "{len} bytes came back different");
        }
    }

    /// Gives `good` bytes, then fails.
    struct Failing {
        good: usize,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.good == 0 {
                return Err(io::Error::other("disk gone"));
            }
            let n = buf.len().min(self.good);
            self.good -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_fails_the_stream_and_names_the_path() {
        let (_dir, scope) = scope();
        let cx = Context::new(&scope);
        let mut seen = 0;
        let err = stream(&cx, Failing { good: BUF_SIZE * 3 }, Path::new("scan.e57"), |c| {
            seen += c.len();
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("scan.e57") && err.to_string().contains("disk gone"),
            "{err}"
        );
        assert!(seen <= BUF_SIZE * 3);
    }

    #[test]
    fn cancelling_stops_an_endless_stream() {
        let (_dir, scope) = scope();
        let cancel = crate::Cancellation::new();
        let cx = Context::new(&scope).with_cancellation(cancel.clone());
        let mut chunks = 0;
        let err = stream(&cx, io::repeat(7), Path::new("endless"), |_| {
            chunks += 1;
            if chunks == 5 {
                cancel.cancel();
            }
        })
        .unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err:?}");
        assert_eq!(chunks, 5);
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    #[test]
    fn diff_has_headers_and_hunks() {
        let d = unified_diff("a\nb\n", "a\nc\n", "x.txt");
        assert!(d.starts_with("--- a/x.txt\n+++ b/x.txt\n"), "{d}");
        assert!(d.contains("-b\n+c\n"), "{d}");
    }

    #[test]
    fn binary_sniffing() {
        assert!(looks_binary(b"ab\0cd"));
        assert!(!looks_binary("héllo".as_bytes()));
    }
}
