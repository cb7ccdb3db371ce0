//! Test helpers: a scratch folder as a scope, and one-line tool calls.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Access, Context, Error, ErrorCode, Mode, Outcome, Plan, Scope, Toolbox};

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    /// The device's own state folder, outside the root.
    pub(crate) state: tempfile::TempDir,
    pub(crate) scope: Scope,
    pub(crate) toolbox: Toolbox,
}

impl Fixture {
    /// A read-write scope over a fresh scratch folder.
    pub(crate) fn new() -> Self {
        Self::with_access(Access::ReadWrite)
    }

    pub(crate) fn with_access(access: Access) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let scope = Scope::single(dir.path(), access)
            .unwrap()
            .with_state_dir(state.path());
        Fixture {
            _dir: dir,
            state,
            scope,
            toolbox: Toolbox::builtin(),
        }
    }

    /// The canonical root (what tools report paths under).
    pub(crate) fn root(&self) -> PathBuf {
        self.scope.roots()[0].path().to_path_buf()
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub(crate) fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub(crate) fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    /// Every file under the state folder (rename journals), relative to it.
    pub(crate) fn state_files(&self) -> Vec<PathBuf> {
        fn visit(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    visit(root, &e.path(), out);
                } else {
                    out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
                }
            }
        }
        let mut out = Vec::new();
        visit(self.state.path(), self.state.path(), &mut out);
        out.sort();
        out
    }

    pub(crate) fn exists(&self, rel: &str) -> bool {
        self.path(rel).symlink_metadata().is_ok()
    }

    pub(crate) fn call(
        &self,
        tool: &str,
        mode: Mode,
        input: Value,
        plan: Option<&Plan>,
    ) -> Result<Outcome, Error> {
        let cx = Context::new(&self.scope);
        self.toolbox
            .call(&cx, tool, mode, input, plan.map(|p| &p.precondition))
    }

    pub(crate) fn run(&self, tool: &str, input: Value) -> Value {
        match self.call(tool, Mode::Run, input, None) {
            Ok(out) => out.into_value(),
            Err(e) => panic!("{tool} failed: {e}"),
        }
    }

    pub(crate) fn run_err(&self, tool: &str, input: Value) -> Error {
        self.call(tool, Mode::Run, input, None)
            .expect_err("the call should fail")
    }

    pub(crate) fn plan(&self, tool: &str, input: Value) -> Plan {
        match self.call(tool, Mode::Plan, input, None) {
            Ok(Outcome::Plan(plan)) => plan,
            other => panic!("{tool} plan: {other:?}"),
        }
    }

    pub(crate) fn plan_err(&self, tool: &str, input: Value) -> Error {
        self.call(tool, Mode::Plan, input, None)
            .expect_err("the plan should fail")
    }

    pub(crate) fn apply(&self, tool: &str, input: Value, plan: &Plan) -> Result<Value, Error> {
        self.call(tool, Mode::Apply, input, Some(plan))
            .map(Outcome::into_value)
    }

    /// A snapshot of every path and content under the root, to prove a
    /// plan touched nothing.
    pub(crate) fn snapshot(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        fn visit(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Option<Vec<u8>>)>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for path in entries {
                let md = path.symlink_metadata().unwrap();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                if md.is_dir() {
                    out.push((rel, None));
                    visit(root, &path, out);
                } else if md.is_file() {
                    out.push((rel, Some(std::fs::read(&path).unwrap())));
                } else {
                    out.push((rel, Some(b"<link or special>".to_vec())));
                }
            }
        }
        let mut out = Vec::new();
        visit(&self.root(), &self.root(), &mut out);
        out
    }
}

pub(crate) fn code(e: &Error) -> ErrorCode {
    e.code()
}

#[cfg(unix)]
pub(crate) fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).unwrap();
}
