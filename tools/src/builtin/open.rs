//! `open_path` and `reveal_in_os`: hand a path to the OS opener.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::scope::Location;
use crate::shell::{DEFAULT_PROGRAM_TIMEOUT, run_program};
use crate::tool::{Context, Tool, ToolSpec};

/// Input of `open_path` and `reveal_in_os`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenInput {
    /// The file or folder.
    pub path: String,
}

/// Output of `open_path` and `reveal_in_os`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OpenOutput {
    /// The path handed to the opener, in full.
    pub path: String,
    /// The opener program that was run.
    pub program: String,
}

/// `open_path`: open a file or folder in its default application.
#[derive(Debug, Clone)]
pub struct OpenPath {
    program: String,
}

/// `reveal_in_os`: show a file in the file manager.
#[derive(Debug, Clone)]
pub struct RevealInOs {
    program: String,
}

#[cfg(target_os = "macos")]
const OPENER: &str = "open";
#[cfg(windows)]
const OPENER: &str = "explorer";
#[cfg(not(any(target_os = "macos", windows)))]
const OPENER: &str = "xdg-open";

impl Default for OpenPath {
    fn default() -> Self {
        OpenPath {
            program: OPENER.into(),
        }
    }
}

impl Default for RevealInOs {
    fn default() -> Self {
        RevealInOs {
            program: OPENER.into(),
        }
    }
}

impl OpenPath {
    /// Uses another opener program (for tests, or a desktop without xdg-open).
    pub fn with_program(program: impl Into<String>) -> Self {
        OpenPath {
            program: program.into(),
        }
    }
}

impl RevealInOs {
    /// Uses another opener program.
    pub fn with_program(program: impl Into<String>) -> Self {
        RevealInOs {
            program: program.into(),
        }
    }
}

/// File names that run code when "opened".
const EXECUTABLE_EXTENSIONS: &[&str] = &[
    "app", "appimage", "bat", "cmd", "com", "command", "cpl", "desktop", "exe", "hta", "jar", "js", "jse",
    "lnk", "msc", "msi", "msp", "pif", "ps1", "reg", "scr", "sh", "url", "vbe", "vbs", "workflow", "wsf",
];

/// Resolves and re-validates the path right before the opener runs: inside the
/// scope, existing, and — when `refuse_executables` — not something that
/// opening would execute.
fn checked<'s>(cx: &Context<'s>, path: &str, refuse_executables: bool) -> Result<Location<'s>> {
    let loc = cx.scope().resolve(path)?;
    // Through the handle: a symlink out of the root is refused here.
    let md = loc
        .root()
        .dir()
        .metadata(loc.rel_or_dot())
        .map_err(|e| loc.err(e))?;
    if !refuse_executables {
        return Ok(loc);
    }
    let refuse = |why: &str| Error::PermissionDenied {
        path: loc.path(),
        reason: format!("{why}; opening it would run it. Open its folder with reveal_in_os instead"),
    };
    if md.is_file() {
        #[cfg(unix)]
        {
            use cap_std::fs::PermissionsExt;
            if md.permissions().mode() & 0o111 != 0 {
                return Err(refuse("it is an executable file"));
            }
        }
        let ext = loc
            .rel()
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if ext.is_some_and(|e| EXECUTABLE_EXTENSIONS.contains(&e.as_str())) {
            return Err(refuse("its type is a program or script"));
        }
    }
    Ok(loc)
}

impl Tool for OpenPath {
    type Input = OpenInput;
    type Output = OpenOutput;

    fn spec(&self) -> ToolSpec {
        ToolSpec::action(
            "open_path",
            "Open a file or folder on the device with its default application (never an executable).",
        )
    }

    fn run(&self, cx: &Context<'_>, input: OpenInput) -> Result<OpenOutput> {
        let loc = checked(cx, &input.path, true)?;
        let out = run_program(
            cx,
            "open_path",
            &self.program,
            &[loc.display()],
            DEFAULT_PROGRAM_TIMEOUT,
        )?;
        Ok(OpenOutput {
            path: loc.display(),
            program: out.program,
        })
    }
}

impl Tool for RevealInOs {
    type Input = OpenInput;
    type Output = OpenOutput;

    fn spec(&self) -> ToolSpec {
        ToolSpec::action(
            "reveal_in_os",
            "Show a file or folder in the device's file manager.",
        )
    }

    fn run(&self, cx: &Context<'_>, input: OpenInput) -> Result<OpenOutput> {
        let loc = checked(cx, &input.path, false)?;
        let args = if cfg!(target_os = "macos") {
            vec!["-R".to_string(), loc.display()]
        } else if cfg!(windows) {
            vec![format!("/select,{}", loc.display())]
        } else {
            // xdg-open has no "select": open the containing folder.
            let folder = if loc.is_root() {
                loc.clone()
            } else {
                loc.with_rel(loc.rel().parent().unwrap_or(loc.rel()).to_path_buf())
            };
            vec![folder.display()]
        };
        let out = run_program(cx, "reveal_in_os", &self.program, &args, DEFAULT_PROGRAM_TIMEOUT)?;
        Ok(OpenOutput {
            path: loc.display(),
            program: out.program,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testutil::{Fixture, code};
    use super::{OpenPath, RevealInOs};
    use crate::{Context, ErrorCode, Mode, Toolbox};

    /// A program that "opens" anything and exits 0: `true`; on Windows,
    /// which has none, this test binary itself (a path as its argument is a
    /// test filter that matches no test name, so it runs nothing).
    fn harmless_opener() -> String {
        if cfg!(windows) {
            std::env::current_exe().unwrap().display().to_string()
        } else {
            "true".into()
        }
    }

    /// A toolbox whose opener is `program`.
    fn with_opener(program: &str) -> Toolbox {
        let mut toolbox = Toolbox::new();
        toolbox
            .add(OpenPath::with_program(program))
            .add(RevealInOs::with_program(program));
        toolbox
    }

    #[test]
    fn opens_documents_and_folders() {
        let f = Fixture::new();
        f.write("plan.pdf", "%PDF");
        let opener = harmless_opener();
        let toolbox = with_opener(&opener);
        let cx = Context::new(&f.scope);
        for (tool, path) in [
            ("open_path", "plan.pdf"),
            ("open_path", "."),
            ("reveal_in_os", "plan.pdf"),
        ] {
            let out = toolbox
                .call(&cx, tool, Mode::Run, json!({ "path": path }), None)
                .unwrap()
                .into_value();
            assert!(out["program"].as_str().unwrap().ends_with(&opener), "{out}");
        }
    }

    #[test]
    fn refuses_executables_and_names_a_missing_opener() {
        let f = Fixture::new();
        f.write("setup.exe", "MZ");
        f.write("run.sh", "echo hi");
        f.write("doc.txt", "x");
        let toolbox = with_opener(&harmless_opener());
        let cx = Context::new(&f.scope);
        for path in ["setup.exe", "run.sh"] {
            let e = toolbox
                .call(&cx, "open_path", Mode::Run, json!({ "path": path }), None)
                .unwrap_err();
            assert_eq!(code(&e), ErrorCode::PermissionDenied, "{path}");
            assert!(e.to_string().contains("would run it"), "{e}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.write("tool", "#!/bin/sh");
            std::fs::set_permissions(f.path("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
            let e = toolbox
                .call(&cx, "open_path", Mode::Run, json!({ "path": "tool" }), None)
                .unwrap_err();
            assert_eq!(code(&e), ErrorCode::PermissionDenied);
        }
        let missing = with_opener("fusion-no-such-opener");
        let e = missing
            .call(&cx, "open_path", Mode::Run, json!({ "path": "doc.txt" }), None)
            .unwrap_err();
        assert_eq!(code(&e), ErrorCode::ProgramNotFound);
        assert!(e.to_string().contains("fusion-no-such-opener"), "{e}");
        let e = toolbox
            .call(
                &cx,
                "open_path",
                Mode::Run,
                json!({ "path": "/etc/passwd" }),
                None,
            )
            .unwrap_err();
        assert_eq!(code(&e), ErrorCode::OutsideScope);
    }

    #[test]
    fn the_builtin_opener_is_an_action() {
        let spec = crate::Tool::spec(&OpenPath::default());
        assert_eq!(spec.class, crate::Class::Action);
    }
}
