//! The file-content mutate tools: `write_file`, `edit_file`, `append_file`.
//!
//! All three replace the file atomically (a temporary file in the same
//! directory renamed over it), keep its permissions, and refuse to write
//! through a final symlink.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fingerprint::state_of;
use crate::fsutil::{
    MAX_EDIT_BYTES, entry_kind, existing_file_for_write, looks_binary, lstat, replace_atomically,
    sha256_bytes, unified_diff,
};
use crate::scope::Location;
use crate::tool::{Context, MutateTool, ToolSpec};
use crate::{Effect, EffectOp, Expectation, PathState, Plan, Precondition};

/// What the file-content tools return after applying.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WriteOutput {
    /// The file, in full.
    pub path: String,
    /// Whether the file was new.
    pub created: bool,
    /// Size of the file now.
    pub size: u64,
    /// SHA-256 of the file now.
    pub sha256: String,
    /// For `edit_file`: replacements made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacements: Option<u64>,
}

/// The write target of a content tool, examined for a plan.
struct Target<'s> {
    loc: Location<'s>,
    /// Current content, when a regular file is there.
    current: Option<Vec<u8>>,
    /// Folders `create_parents` would make, shallowest first.
    missing_parents: Vec<Location<'s>>,
    expect: Vec<Expectation>,
}

impl<'s> Target<'s> {
    /// Examines `path` for writing: in a writable root, not a root, not a
    /// symlink, directory or special file; parents present unless
    /// `create_parents`.
    fn examine(cx: &Context<'s>, path: &str, create_parents: bool) -> Result<Target<'s>> {
        let loc = cx.scope().resolve(path)?;
        loc.require_writable()?;
        loc.require_not_root("overwritten")?;
        let missing_parents = missing_ancestors(&loc)?;
        if !missing_parents.is_empty() && !create_parents {
            return Err(Error::MissingParent {
                path: missing_parents[0].path(),
            });
        }
        let mut expect = Vec::new();
        if let Some(first) = missing_parents.first() {
            expect.push(Expectation {
                path: first.display(),
                state: PathState::Absent,
            });
        }
        let current = match lstat(&loc)? {
            None => None,
            Some(md) if md.is_file() => Some(crate::fsutil::read_limited(
                cx,
                &loc,
                MAX_EDIT_BYTES,
                "files this large cannot be changed through the text tools",
            )?),
            Some(md) => {
                return Err(Error::NotAFile {
                    path: loc.path(),
                    found: entry_kind(md.file_type()).article(),
                });
            }
        };
        expect.push(Expectation {
            path: loc.display(),
            state: match &current {
                None => PathState::Absent,
                Some(bytes) => PathState::File {
                    sha256: sha256_bytes(bytes),
                    size: bytes.len() as u64,
                },
            },
        });
        Ok(Target {
            loc,
            current,
            missing_parents,
            expect,
        })
    }

    fn effects(&self, op_new: EffectOp, bytes: u64) -> Vec<Effect> {
        let mut effects: Vec<Effect> = self
            .missing_parents
            .iter()
            .map(|p| Effect::new(EffectOp::CreateDirectory, p.display()))
            .collect();
        let op = if self.current.is_some() {
            op_new
        } else {
            EffectOp::CreateFile
        };
        effects.push(Effect::new(op, self.loc.display()).bytes(bytes));
        effects
    }

    /// A diff from the current text to `new`, or a one-line note when either
    /// side is not text.
    fn diff(&self, new: &[u8]) -> String {
        let old = self.current.as_deref().unwrap_or_default();
        let name = self.loc.rel().display().to_string();
        match (text(old), text(new)) {
            (Some(old), Some(new)) => unified_diff(old, new, &name),
            _ => format!("binary content: {} bytes -> {} bytes\n", old.len(), new.len()),
        }
    }
}

/// Replaces the file at `path` with `content` atomically, keeping its
/// permissions, creating missing parents first when asked. Used by apply,
/// after the re-plan has verified the precondition, so nothing is read again.
fn write_at(cx: &Context<'_>, path: &str, create_parents: bool, content: &[u8]) -> Result<WriteOutput> {
    let loc = cx.scope().resolve(path)?;
    loc.require_writable()?;
    loc.require_not_root("overwritten")?;
    if create_parents && let Some(parent) = loc.rel().parent().filter(|p| !p.as_os_str().is_empty()) {
        loc.root()
            .dir()
            .create_dir_all(parent)
            .map_err(|e| loc.with_rel(parent.to_path_buf()).err(e))?;
    }
    let (dir, name) = loc.open_parent()?;
    let full = loc.path();
    let existing = existing_file_for_write(&dir, &name, &full)?;
    replace_atomically(
        &dir,
        &name,
        existing.as_ref().map(|m| m.permissions()),
        &full,
        |w| w.write_all(content).map_err(|e| Error::io(&full, e)),
    )?;
    Ok(WriteOutput {
        path: loc.display(),
        created: existing.is_none(),
        size: content.len() as u64,
        sha256: sha256_bytes(content),
        replacements: None,
    })
}

/// Whether a text uses CRLF line endings throughout (as files made on
/// Windows do): at least one line break, and every `\n` after a `\r`.
fn is_crlf(text: &[u8]) -> bool {
    let lf = text.iter().filter(|b| **b == b'\n').count();
    lf > 0 && text.windows(2).filter(|w| w == b"\r\n").count() == lf
}

/// `new` with its bare `\n` line breaks made `\r\n` when `current` uses
/// CRLF: a model writes `\n`, and a CRLF file must stay CRLF (and its diff
/// must not mark every line as changed). Anything else stays as given.
fn keep_line_endings<'a>(current: Option<&[u8]>, new: &'a str) -> std::borrow::Cow<'a, str> {
    if current.is_some_and(is_crlf) && new.contains('\n') && !new.contains('\r') {
        std::borrow::Cow::Owned(new.replace('\n', "\r\n"))
    } else {
        std::borrow::Cow::Borrowed(new)
    }
}

fn text(bytes: &[u8]) -> Option<&str> {
    if looks_binary(bytes) {
        None
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// The ancestors of `loc` that do not exist yet, shallowest first. An
/// ancestor that exists but is not a directory is an error.
pub(crate) fn missing_ancestors<'s>(loc: &Location<'s>) -> Result<Vec<Location<'s>>> {
    let mut missing = Vec::new();
    let mut current = loc.rel().parent();
    while let Some(rel) = current.filter(|r| !r.as_os_str().is_empty()) {
        let ancestor = loc.with_rel(rel.to_path_buf());
        match loc.root().dir().metadata(rel) {
            Ok(md) if md.is_dir() => break,
            Ok(md) => {
                return Err(Error::NotADirectory {
                    path: ancestor.path(),
                    found: entry_kind(md.file_type()).article(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(ancestor),
            Err(e) => return Err(ancestor.err(e)),
        }
        current = rel.parent();
    }
    missing.reverse();
    Ok(missing)
}

/// `write_file`: create a file or replace its content.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteFile;

/// Input of `write_file`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileInput {
    /// The file to create or replace.
    pub path: String,
    /// The whole new content (UTF-8 text).
    pub content: String,
    /// Create missing parent folders. Default false.
    #[serde(default)]
    pub create_parents: bool,
    /// Allow replacing an existing file. Default true; false makes the write
    /// fail with `already_exists` when the file is there.
    #[serde(default = "super::default_true")]
    pub overwrite: bool,
}

impl MutateTool for WriteFile {
    type Input = WriteFileInput;
    type Output = WriteOutput;
    /// The bytes to write: the content, in the current file's line endings.
    type Staged = String;

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "write_file",
            "Create a text file or replace its whole content. The plan shows a unified diff against the \
             current file; applying replaces it atomically and keeps its permissions. Never writes through a symlink.",
        )
        .destructive(true)
        .idempotent(true)
    }

    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, String)> {
        check_size("write_file", "content", input.content.len())?;
        let target = Target::examine(cx, &input.path, input.create_parents)?;
        if target.current.is_some() && !input.overwrite {
            return Err(Error::AlreadyExists {
                path: target.loc.path(),
                hint: "set overwrite to replace it",
            });
        }
        let content = keep_line_endings(target.current.as_deref(), &input.content);
        let new = content.as_bytes();
        let summary = match &target.current {
            None => format!("create {} ({} bytes)", target.loc.display(), new.len()),
            Some(old) => format!(
                "replace {} ({} -> {} bytes)",
                target.loc.display(),
                old.len(),
                new.len()
            ),
        };
        let plan = Plan::new(
            summary,
            target.effects(EffectOp::ReplaceFile, new.len() as u64),
            Precondition::new(target.expect.clone()),
        )
        .with_diff(target.diff(new));
        Ok((plan, content.into_owned()))
    }

    fn apply(&self, cx: &Context<'_>, input: &Self::Input, content: String) -> Result<WriteOutput> {
        write_at(cx, &input.path, input.create_parents, content.as_bytes())
    }
}

fn check_size(tool: &str, field: &str, len: usize) -> Result<()> {
    if len as u64 > MAX_EDIT_BYTES {
        return Err(Error::TooLarge {
            what: format!("{tool}.{field}"),
            size: len as u64,
            limit: MAX_EDIT_BYTES,
            hint: "split the content, or copy a file that is already on the device",
        });
    }
    Ok(())
}

/// `edit_file`: exact find/replace edits on a text file.
#[derive(Debug, Clone, Copy, Default)]
pub struct EditFile;

/// One find/replace.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// Exact text to find (whitespace and line endings included). It must
    /// occur exactly once, unless `replace_all`.
    pub find: String,
    /// What to put in its place.
    pub replace: String,
    /// Replace every occurrence instead of requiring exactly one.
    #[serde(default)]
    pub replace_all: bool,
}

/// Input of `edit_file`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditFileInput {
    /// The text file to edit.
    pub path: String,
    /// Edits applied in order, each to the result of the previous ones.
    pub edits: Vec<Edit>,
}

impl EditFile {
    /// Applies the edits in memory; errors name the edit and the match count.
    fn edited(path: &str, old: &str, edits: &[Edit]) -> Result<(String, u64)> {
        if edits.is_empty() {
            return Err(Error::invalid_input(
                "edit_file",
                "edits",
                "give at least one edit",
            ));
        }
        let mut text = old.to_string();
        let mut replacements = 0u64;
        let crlf = is_crlf(old.as_bytes());
        for (i, edit) in edits.iter().enumerate() {
            // In a CRLF file, `\n` in find and replace means the file's `\r\n`.
            let (find, replace) = if crlf {
                (
                    keep_line_endings(Some(old.as_bytes()), &edit.find),
                    keep_line_endings(Some(old.as_bytes()), &edit.replace),
                )
            } else {
                (edit.find.as_str().into(), edit.replace.as_str().into())
            };
            let field = format!("edits[{i}].find");
            if edit.find.is_empty() {
                return Err(Error::invalid_input(
                    "edit_file",
                    field,
                    "is empty; give the exact text to replace",
                ));
            }
            let count = text.matches(find.as_ref()).count();
            match count {
                0 => {
                    return Err(Error::invalid_input(
                        "edit_file",
                        field,
                        format!(
                            "matches 0 times in {path}; copy the text exactly as it is in the file, whitespace included"
                        ),
                    ));
                }
                1 => {}
                n if !edit.replace_all => {
                    return Err(Error::invalid_input(
                        "edit_file",
                        field,
                        format!(
                            "matches {n} times in {path}; add surrounding lines to make it unique, or set replace_all"
                        ),
                    ));
                }
                _ => {}
            }
            text = text.replace(find.as_ref(), &replace);
            replacements += count as u64;
        }
        Ok((text, replacements))
    }
}

impl MutateTool for EditFile {
    type Input = EditFileInput;
    type Output = WriteOutput;
    type Staged = (String, u64);

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "edit_file",
            "Edit a text file by exact find/replace pairs; each `find` must match exactly once unless \
             `replace_all`. The plan shows a unified diff; applying re-checks that the file is unchanged \
             and every `find` still matches, then replaces the file atomically.",
        )
        .destructive(true)
    }

    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, Self::Staged)> {
        let target = Target::examine(cx, &input.path, false)?;
        let Some(current) = &target.current else {
            return Err(Error::NotFound {
                path: target.loc.path(),
            });
        };
        let old = text(current).ok_or_else(|| Error::BinaryFile {
            path: target.loc.path(),
        })?;
        let (new, replacements) = Self::edited(&target.loc.display(), old, &input.edits)?;
        let summary = format!("edit {}: {replacements} replacement(s)", target.loc.display());
        let plan = Plan::new(
            summary,
            target.effects(EffectOp::ReplaceFile, new.len() as u64),
            Precondition::new(target.expect.clone()),
        )
        .with_diff(target.diff(new.as_bytes()));
        Ok((plan, (new, replacements)))
    }

    fn apply(
        &self,
        cx: &Context<'_>,
        input: &Self::Input,
        (new, replacements): Self::Staged,
    ) -> Result<WriteOutput> {
        let mut out = write_at(cx, &input.path, false, new.as_bytes())?;
        out.replacements = Some(replacements);
        Ok(out)
    }
}

/// `append_file`: add text at the end of a file.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendFile;

/// Input of `append_file`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendFileInput {
    /// The file to append to.
    pub path: String,
    /// The text to add at the end.
    pub content: String,
    /// Create the file when it does not exist. Default true.
    #[serde(default = "super::default_true")]
    pub create: bool,
}

impl MutateTool for AppendFile {
    type Input = AppendFileInput;
    type Output = WriteOutput;
    /// The whole new content: the current bytes (verified by the
    /// precondition's hash) plus the appended text.
    type Staged = Vec<u8>;

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "append_file",
            "Append text at the end of a file (created if missing unless `create` is false). The plan shows \
             the added lines as a diff; applying re-checks the file is unchanged and replaces it atomically.",
        )
    }

    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, Vec<u8>)> {
        check_size("append_file", "content", input.content.len())?;
        let target = Target::examine(cx, &input.path, false)?;
        if target.current.is_none() && !input.create {
            return Err(Error::NotFound {
                path: target.loc.path(),
            });
        }
        let mut new = target.current.clone().unwrap_or_default();
        new.extend_from_slice(keep_line_endings(target.current.as_deref(), &input.content).as_bytes());
        let summary = format!("append {} bytes to {}", input.content.len(), target.loc.display());
        let effects = target.effects(EffectOp::AppendFile, input.content.len() as u64);
        let plan = Plan::new(summary, effects, Precondition::new(target.expect.clone()))
            .with_diff(target.diff(&new));
        Ok((plan, new))
    }

    fn apply(&self, cx: &Context<'_>, input: &Self::Input, new: Vec<u8>) -> Result<WriteOutput> {
        write_at(cx, &input.path, false, &new)
    }
}

/// A precondition entry for a path as it is now (used by the tree tools).
pub(crate) fn expect_now(cx: &Context<'_>, loc: &Location<'_>, tree: bool) -> Result<Expectation> {
    Ok(Expectation {
        path: loc.display(),
        state: state_of(cx, loc, tree)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testutil::{Fixture, code};
    use crate::{Access, EffectOp, ErrorCode, PathState};

    #[test]
    fn write_plan_touches_nothing_and_apply_matches_it() {
        let f = Fixture::new();
        f.write("notes.txt", "one\ntwo\n");
        let before = f.snapshot();
        let input = json!({ "path": "notes.txt", "content": "one\nTWO\n" });
        let plan = f.plan("write_file", input.clone());
        assert_eq!(f.snapshot(), before, "plan must not touch the disk");
        assert!(
            plan.diff.as_deref().unwrap().contains("-two\n+TWO\n"),
            "{:?}",
            plan.diff
        );
        assert_eq!(plan.effects[0].op, EffectOp::ReplaceFile);
        assert!(matches!(
            plan.precondition.expect[0].state,
            PathState::File { size: 8, .. }
        ));
        let out = f.apply("write_file", input, &plan).unwrap();
        assert_eq!(f.read("notes.txt"), "one\nTWO\n");
        assert_eq!(out["created"], false);
        assert_eq!(out["size"], 8);
    }

    #[test]
    fn crlf_files_stay_crlf_and_their_diffs_show_only_what_changed() {
        let f = Fixture::new();
        f.write("scan.txt", "north\r\nsouth\r\neast\r\n");
        // edit_file: the model's `\n` means the file's `\r\n`.
        let input =
            json!({ "path": "scan.txt", "edits": [{ "find": "south\neast", "replace": "SOUTH\nEAST" }] });
        let plan = f.plan("edit_file", input.clone());
        let diff = plan.diff.clone().unwrap();
        assert!(
            diff.contains(" north\r\n"),
            "unchanged lines stay context: {diff:?}"
        );
        assert!(
            diff.ends_with("@@ -1,3 +1,3 @@\n north\r\n-south\r\n-east\r\n+SOUTH\r\n+EAST\r\n"),
            "{diff:?}"
        );
        f.apply("edit_file", input, &plan).unwrap();
        assert_eq!(f.read("scan.txt"), "north\r\nSOUTH\r\nEAST\r\n");

        // write_file and append_file keep CRLF too.
        let input = json!({ "path": "scan.txt", "content": "north\nwest\n", "overwrite": true });
        let plan = f.plan("write_file", input.clone());
        assert!(
            plan.diff.as_deref().unwrap().contains(" north\r\n"),
            "{:?}",
            plan.diff
        );
        f.apply("write_file", input, &plan).unwrap();
        assert_eq!(f.read("scan.txt"), "north\r\nwest\r\n");
        let input = json!({ "path": "scan.txt", "content": "up\n" });
        let plan = f.plan("append_file", input.clone());
        f.apply("append_file", input, &plan).unwrap();
        assert_eq!(f.read("scan.txt"), "north\r\nwest\r\nup\r\n");

        // LF files, mixed files and explicit `\r\n` are left as given.
        f.write("lf.txt", "a\nb\n");
        let input = json!({ "path": "lf.txt", "content": "a\nc\n", "overwrite": true });
        let plan = f.plan("write_file", input.clone());
        f.apply("write_file", input, &plan).unwrap();
        assert_eq!(f.read("lf.txt"), "a\nc\n");
        f.write("mixed.txt", "a\r\nb\n");
        let input = json!({ "path": "mixed.txt", "content": "x\ny\n", "overwrite": true });
        let plan = f.plan("write_file", input.clone());
        f.apply("write_file", input, &plan).unwrap();
        assert_eq!(f.read("mixed.txt"), "x\ny\n");
    }

    #[test]
    fn write_creates_with_parents_only_when_asked() {
        let f = Fixture::new();
        let e = f.plan_err("write_file", json!({ "path": "new/dir/a.txt", "content": "x" }));
        assert_eq!(code(&e), ErrorCode::NotFound);
        assert!(e.to_string().contains("create_parents"), "{e}");
        let input = json!({ "path": "new/dir/a.txt", "content": "x", "create_parents": true });
        let plan = f.plan("write_file", input.clone());
        let ops: Vec<_> = plan.effects.iter().map(|e| e.op).collect();
        assert_eq!(
            ops,
            [
                EffectOp::CreateDirectory,
                EffectOp::CreateDirectory,
                EffectOp::CreateFile
            ]
        );
        assert!(!f.exists("new"));
        let out = f.apply("write_file", input, &plan).unwrap();
        assert_eq!(out["created"], true);
        assert_eq!(f.read("new/dir/a.txt"), "x");
    }

    #[test]
    fn write_conflicts_when_the_file_changed_and_leaves_it() {
        let f = Fixture::new();
        f.write("a.txt", "original\n");
        let input = json!({ "path": "a.txt", "content": "from the model\n" });
        let plan = f.plan("write_file", input.clone());
        f.write("a.txt", "edited by a person\n");
        let e = f.apply("write_file", input.clone(), &plan).unwrap_err();
        assert_eq!(code(&e), ErrorCode::Conflict);
        assert!(e.to_string().contains("a.txt"), "{e}");
        assert_eq!(f.read("a.txt"), "edited by a person\n");

        // Created in between, where the plan expected nothing.
        let input = json!({ "path": "b.txt", "content": "x" });
        let plan = f.plan("write_file", input.clone());
        f.write("b.txt", "someone else's");
        assert_eq!(
            code(&f.apply("write_file", input, &plan).unwrap_err()),
            ErrorCode::Conflict
        );
        assert_eq!(f.read("b.txt"), "someone else's");
    }

    #[test]
    fn write_refusals() {
        let f = Fixture::new();
        f.write("a.txt", "x");
        std::fs::create_dir(f.path("dir")).unwrap();
        let e = f.plan_err(
            "write_file",
            json!({ "path": "a.txt", "content": "y", "overwrite": false }),
        );
        assert_eq!(code(&e), ErrorCode::AlreadyExists);
        assert_eq!(
            code(&f.plan_err("write_file", json!({ "path": "dir", "content": "y" }))),
            ErrorCode::NotAFile
        );
        assert_eq!(
            code(&f.plan_err("write_file", json!({ "path": ".", "content": "y" }))),
            ErrorCode::PermissionDenied
        );
        let e = f.plan_err("write_file", json!({ "path": "a.txt" }));
        assert!(e.to_string().contains("content"), "{e}");
        let e = f
            .call(
                "write_file",
                crate::Mode::Run,
                json!({ "path": "a.txt", "content": "" }),
                None,
            )
            .unwrap_err();
        assert!(e.to_string().contains("plan"), "{e}");

        let ro = Fixture::with_access(Access::ReadOnly);
        ro.write("a.txt", "x");
        let e = ro.plan_err("write_file", json!({ "path": "a.txt", "content": "y" }));
        assert_eq!(code(&e), ErrorCode::PermissionDenied);
        assert!(e.to_string().contains("read-only"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn write_keeps_permissions_and_never_follows_a_final_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let f = Fixture::new();
        f.write("script.txt", "a");
        std::fs::set_permissions(f.path("script.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let input = json!({ "path": "script.txt", "content": "b" });
        let plan = f.plan("write_file", input.clone());
        f.apply("write_file", input, &plan).unwrap();
        let mode = std::fs::metadata(f.path("script.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        super::super::testutil::symlink("script.txt", f.path("link.txt"));
        let e = f.plan_err("write_file", json!({ "path": "link.txt", "content": "c" }));
        assert_eq!(code(&e), ErrorCode::NotAFile);
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(f.read("script.txt"), "b");
    }

    #[test]
    fn edit_requires_exactly_one_match_unless_replace_all() {
        let f = Fixture::new();
        f.write("c.txt", "alpha beta\nbeta gamma\n");
        let e = f.plan_err(
            "edit_file",
            json!({ "path": "c.txt", "edits": [{ "find": "beta", "replace": "B" }] }),
        );
        assert_eq!(code(&e), ErrorCode::InvalidInput);
        assert!(
            e.to_string().contains("edits[0].find") && e.to_string().contains("2 times"),
            "{e}"
        );
        let e = f.plan_err(
            "edit_file",
            json!({ "path": "c.txt", "edits": [{ "find": "delta", "replace": "D" }] }),
        );
        assert!(e.to_string().contains("0 times"), "{e}");
        let e = f.plan_err("edit_file", json!({ "path": "c.txt", "edits": [] }));
        assert!(e.to_string().contains("edits"), "{e}");

        let input = json!({ "path": "c.txt", "edits": [
            { "find": "alpha", "replace": "ALPHA" },
            { "find": "beta", "replace": "B", "replace_all": true },
        ] });
        let before = f.snapshot();
        let plan = f.plan("edit_file", input.clone());
        assert_eq!(f.snapshot(), before);
        assert!(
            plan.diff.as_deref().unwrap().contains("+ALPHA B\n+B gamma\n"),
            "{:?}",
            plan.diff
        );
        let out = f.apply("edit_file", input, &plan).unwrap();
        assert_eq!(out["replacements"], 3);
        assert_eq!(f.read("c.txt"), "ALPHA B\nB gamma\n");
    }

    #[test]
    fn edit_apply_rechecks_the_find_text() {
        let f = Fixture::new();
        f.write("c.txt", "x = 1\n");
        let input = json!({ "path": "c.txt", "edits": [{ "find": "x = 1", "replace": "x = 2" }] });
        let plan = f.plan("edit_file", input.clone());
        f.write("c.txt", "x = 1\nx = 1\n");
        let e = f.apply("edit_file", input.clone(), &plan).unwrap_err();
        assert_eq!(code(&e), ErrorCode::Conflict);
        assert!(e.to_string().contains("2 times"), "{e}");
        assert_eq!(f.read("c.txt"), "x = 1\nx = 1\n");
        // Same find count but other content: the hash catches it.
        f.write("c.txt", "x = 1\ny\n");
        assert_eq!(
            code(&f.apply("edit_file", input, &plan).unwrap_err()),
            ErrorCode::Conflict
        );
    }

    #[test]
    fn edit_refuses_binary_and_missing() {
        let f = Fixture::new();
        f.write("b.bin", b"a\0b");
        let edit = json!([{ "find": "a", "replace": "c" }]);
        assert_eq!(
            code(&f.plan_err("edit_file", json!({ "path": "b.bin", "edits": edit }))),
            ErrorCode::BinaryFile
        );
        assert_eq!(
            code(&f.plan_err("edit_file", json!({ "path": "no.txt", "edits": edit }))),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn append_shows_added_lines_and_conflicts_on_change() {
        let f = Fixture::new();
        f.write("log.txt", "first\n");
        let input = json!({ "path": "log.txt", "content": "second\n" });
        let plan = f.plan("append_file", input.clone());
        assert!(
            plan.diff.as_deref().unwrap().contains(" first\n+second\n"),
            "{:?}",
            plan.diff
        );
        assert_eq!(f.read("log.txt"), "first\n");
        f.apply("append_file", input.clone(), &plan).unwrap();
        assert_eq!(f.read("log.txt"), "first\nsecond\n");
        // The old plan is stale now.
        assert_eq!(
            code(&f.apply("append_file", input, &plan).unwrap_err()),
            ErrorCode::Conflict
        );
        assert_eq!(f.read("log.txt"), "first\nsecond\n");

        let e = f.plan_err(
            "append_file",
            json!({ "path": "new.txt", "content": "x", "create": false }),
        );
        assert_eq!(code(&e), ErrorCode::NotFound);
        let input = json!({ "path": "new.txt", "content": "x" });
        let plan = f.plan("append_file", input.clone());
        assert_eq!(plan.effects[0].op, EffectOp::CreateFile);
        assert_eq!(f.apply("append_file", input, &plan).unwrap()["created"], true);
    }

    #[test]
    fn content_bound_is_enforced() {
        let f = Fixture::new();
        let big = "x".repeat(super::MAX_EDIT_BYTES as usize + 1);
        let e = f.plan_err("write_file", json!({ "path": "a.txt", "content": big }));
        assert_eq!(code(&e), ErrorCode::TooLarge);
        assert!(e.to_string().contains("write_file.content"), "{e}");
    }
}
