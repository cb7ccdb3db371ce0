//! Named shell-outs: a fixed program, an argument template, and every path
//! argument resolved through the scope. Never a shell string: each template
//! slot becomes exactly one `argv` element, and values that would read as
//! options (`-x`) are refused.

use std::io::Read;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Class;
use crate::EntryKind;
use crate::error::{Error, Result};
use crate::fingerprint::state_of;
use crate::fsutil::{entry_kind, lstat};
use crate::tool::{Context, MutateTool, Tool, ToolSpec};
use crate::{Effect, EffectOp, Expectation, PathState, Plan, Precondition};

/// How much of a program's stdout and stderr a result keeps: 64 KiB each.
pub const MAX_CAPTURE_BYTES: usize = 64 * 1024;

/// How long a named program may run unless the tool says otherwise: 10 minutes.
pub const DEFAULT_PROGRAM_TIMEOUT: Duration = Duration::from_secs(600);

/// One slot of an argument template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    /// Passed as is.
    Literal(String),
    /// An input field naming an existing path inside the scope.
    Input(String),
    /// An input field naming a path the program will create (in a writable root).
    Output(String),
    /// An input field passed as a value (string, number or boolean).
    Value(String),
}

/// A tool that runs one fixed program with templated arguments.
///
/// `I` is the input type: its schema is published, input is validated against
/// it, and template slots read its fields by name.
///
/// ```
/// use fusion_tools::{NamedCommand, Toolbox};
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// /// Convert an IFC model with IfcConvert.
/// #[derive(Deserialize, Serialize, JsonSchema)]
/// struct ConvertIfc {
///     /// The .ifc file.
///     source: String,
///     /// The file to create (.obj, .dae, .glb, ...).
///     target: String,
/// }
///
/// let mut toolbox = Toolbox::new();
/// toolbox.add_mutating(
///     NamedCommand::<ConvertIfc>::new("convert_ifc", "Convert an IFC model to another format.", "IfcConvert")
///         .input_arg("source")
///         .output_arg("target"),
/// );
/// assert_eq!(toolbox.class("convert_ifc"), Some(fusion_tools::Class::Mutate));
/// ```
pub struct NamedCommand<I> {
    spec: ToolSpec,
    program: String,
    args: Vec<Arg>,
    timeout: Duration,
    input: PhantomData<fn() -> I>,
}

impl<I> std::fmt::Debug for NamedCommand<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedCommand")
            .field("name", &self.spec.name)
            .field("program", &self.program)
            .field("args", &self.args)
            .finish()
    }
}

impl<I> NamedCommand<I> {
    /// A tool `name` that runs `program` (looked up on `PATH` at call time).
    /// Its class is `action` until [`NamedCommand::read_only`] or an
    /// [`NamedCommand::output_arg`] says otherwise.
    pub fn new(name: &'static str, description: &'static str, program: impl Into<String>) -> Self {
        NamedCommand {
            spec: ToolSpec::action(name, description),
            program: program.into(),
            args: Vec::new(),
            timeout: DEFAULT_PROGRAM_TIMEOUT,
            input: PhantomData,
        }
    }

    /// Declares that the program only reads: the tool's class becomes `read`.
    pub fn read_only(mut self) -> Self {
        self.spec.class = Class::Read;
        self.spec.idempotent = true;
        self
    }

    /// Appends a fixed argument.
    pub fn arg(mut self, literal: impl Into<String>) -> Self {
        self.args.push(Arg::Literal(literal.into()));
        self
    }

    /// Appends the input field `field`, an existing path inside the scope.
    pub fn input_arg(mut self, field: impl Into<String>) -> Self {
        self.args.push(Arg::Input(field.into()));
        self
    }

    /// Appends the input field `field`, a path the program creates. Makes the
    /// tool `mutate`: the plan lists the outputs, which must not exist yet.
    pub fn output_arg(mut self, field: impl Into<String>) -> Self {
        self.args.push(Arg::Output(field.into()));
        self.spec.class = Class::Mutate;
        self
    }

    /// Appends the input field `field` as a plain value.
    pub fn value_arg(mut self, field: impl Into<String>) -> Self {
        self.args.push(Arg::Value(field.into()));
        self
    }

    /// Sets how long the program may run (default 10 minutes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What a named program returned.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CommandOutput {
    /// The program as found on `PATH`.
    pub program: String,
    /// The arguments it was given.
    pub args: Vec<String>,
    /// Its exit code (0).
    pub exit_code: i32,
    /// Its standard output (first 64 KiB, lossy UTF-8).
    pub stdout: String,
    /// Its standard error (first 64 KiB, lossy UTF-8).
    pub stderr: String,
    /// True when stdout or stderr was cut at 64 KiB.
    pub truncated: bool,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// The resolved argv and what the plan must know about paths.
struct Prepared {
    args: Vec<String>,
    expect: Vec<Expectation>,
    outputs: Vec<String>,
}

impl<I: Serialize> NamedCommand<I> {
    fn prepare(&self, cx: &Context<'_>, input: &I) -> Result<Prepared> {
        let name = self.spec.name.as_ref();
        let fields = serde_json::to_value(input).unwrap_or(Value::Null);
        let field = |f: &str| -> Result<String> {
            match fields.get(f) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(Value::Bool(b)) => Ok(b.to_string()),
                Some(Value::Null) | None => Err(Error::invalid_input(name, f, "is required by this tool")),
                Some(_) => Err(Error::invalid_input(
                    name,
                    f,
                    "must be a string, number or boolean",
                )),
            }
        };
        let mut prepared = Prepared {
            args: Vec::new(),
            expect: Vec::new(),
            outputs: Vec::new(),
        };
        for arg in &self.args {
            let value = match arg {
                Arg::Literal(s) => s.clone(),
                Arg::Value(f) => {
                    let v = field(f)?;
                    if v.starts_with('-') {
                        return Err(Error::invalid_input(
                            name,
                            f,
                            "must not start with '-' (it would be read as an option)",
                        ));
                    }
                    v
                }
                Arg::Input(f) => {
                    let loc = cx.scope().resolve(&field(f)?)?;
                    // Resolved through the handle: refuses a symlink that leaves the root.
                    loc.root()
                        .dir()
                        .metadata(loc.rel_or_dot())
                        .map_err(|e| loc.err(e))?;
                    prepared.expect.push(Expectation {
                        path: loc.display(),
                        state: state_of(cx, &loc, false)?,
                    });
                    loc.display()
                }
                Arg::Output(f) => {
                    let loc = cx.scope().resolve(&field(f)?)?;
                    loc.require_writable()?;
                    loc.require_not_root("replaced")?;
                    loc.open_parent()?;
                    if let Some(md) = lstat(&loc)? {
                        return Err(Error::AlreadyExists {
                            path: loc.path(),
                            hint: match entry_kind(md.file_type()) {
                                EntryKind::File => "choose a new output name, or delete the old file first",
                                _ => "choose a new output name",
                            },
                        });
                    }
                    prepared.expect.push(Expectation {
                        path: loc.display(),
                        state: PathState::Absent,
                    });
                    prepared.outputs.push(loc.display());
                    loc.display()
                }
            };
            prepared.args.push(value);
        }
        Ok(prepared)
    }
}

impl<I> Tool for NamedCommand<I>
where
    I: DeserializeOwned + Serialize + JsonSchema + 'static,
{
    type Input = I;
    type Output = CommandOutput;

    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    fn run(&self, cx: &Context<'_>, input: I) -> Result<CommandOutput> {
        let prepared = self.prepare(cx, &input)?;
        run_program(cx, &self.spec.name, &self.program, &prepared.args, self.timeout)
    }
}

impl<I> MutateTool for NamedCommand<I>
where
    I: DeserializeOwned + Serialize + JsonSchema + 'static,
{
    type Input = I;
    type Output = CommandOutput;
    type Staged = Vec<String>;

    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    fn plan(&self, cx: &Context<'_>, input: &I) -> Result<(Plan, Vec<String>)> {
        let prepared = self.prepare(cx, input)?;
        let mut effects = vec![Effect::new(
            EffectOp::Run,
            format!("{} {}", self.program, prepared.args.join(" ")),
        )];
        effects.extend(
            prepared
                .outputs
                .iter()
                .map(|o| Effect::new(EffectOp::CreateFile, o.clone())),
        );
        let summary = format!("run {} to create {}", self.program, prepared.outputs.join(", "));
        Ok((
            Plan::new(summary, effects, Precondition::new(prepared.expect)),
            prepared.args,
        ))
    }

    fn apply(&self, cx: &Context<'_>, _: &I, args: Vec<String>) -> Result<CommandOutput> {
        run_program(cx, &self.spec.name, &self.program, &args, self.timeout)
    }
}

/// Runs `program` with `args` (no shell), capturing bounded output, honouring
/// the call's cancellation and deadline and the tool's own `timeout`. A
/// non-zero exit is `program_failed` with the tail of stderr.
pub fn run_program(
    cx: &Context<'_>,
    tool: &str,
    program: &str,
    args: &[String],
    timeout: Duration,
) -> Result<CommandOutput> {
    let resolved: PathBuf = which::which(program).map_err(|_| Error::ProgramNotFound {
        tool: tool.to_string(),
        program: program.to_string(),
    })?;
    let started = Instant::now();
    let mut child = Command::new(&resolved)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|_| Error::ProgramNotFound {
            tool: tool.to_string(),
            program: resolved.display().to_string(),
        })?;
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Error::io(&resolved, e)),
        }
        let stop = cx
            .checkpoint()
            .err()
            .or_else(|| (started.elapsed() >= timeout).then_some(Error::Timeout));
        if let Some(stop) = stop {
            let _ = child.kill();
            let _ = child.wait();
            return Err(stop);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (stdout, out_cut) = stdout.join().unwrap_or_default();
    let (stderr, err_cut) = stderr.join().unwrap_or_default();
    if !status.success() {
        let tail_start = stderr.len().saturating_sub(2000);
        let tail_start = (tail_start..stderr.len())
            .find(|&i| stderr.is_char_boundary(i))
            .unwrap_or(stderr.len());
        return Err(Error::ProgramFailed {
            program: program.to_string(),
            status: status.to_string(),
            stderr: stderr[tail_start..].trim().to_string(),
        });
    }
    Ok(CommandOutput {
        program: resolved.display().to_string(),
        args: args.to_vec(),
        exit_code: status.code().unwrap_or(0),
        stdout,
        stderr,
        truncated: out_cut || err_cut,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Reads a pipe to the end on its own thread (so a chatty program never
/// blocks on a full pipe), keeping the first [`MAX_CAPTURE_BYTES`].
fn capture(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<(String, bool)> {
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else {
            return (String::new(), false);
        };
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        let mut cut = false;
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = MAX_CAPTURE_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    cut |= n > room;
                }
            }
        }
        (String::from_utf8_lossy(&kept).into_owned(), cut)
    })
}

#[cfg(all(test, unix))]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;
    use crate::builtin::testutil::{Fixture, code};
    use crate::{ErrorCode, Mode, Outcome, Toolbox};

    #[derive(Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct CopyInput {
        source: String,
        target: String,
    }

    #[derive(Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct EchoInput {
        word: String,
    }

    fn toolbox() -> Toolbox {
        let mut toolbox = Toolbox::new();
        toolbox
            .add_mutating(
                NamedCommand::<CopyInput>::new("cp_file", "Copy with cp.", "cp")
                    .input_arg("source")
                    .output_arg("target"),
            )
            .add(
                NamedCommand::<EchoInput>::new("echo", "Echo a word.", "echo")
                    .arg("said:")
                    .value_arg("word")
                    .read_only(),
            )
            .add(
                NamedCommand::<EchoInput>::new("missing", "Not installed.", "fusion-not-installed-program")
                    .value_arg("word"),
            )
            .add(
                NamedCommand::<EchoInput>::new("fails", "Always fails.", "sh")
                    .arg("-c")
                    .arg("echo broken >&2; exit 3"),
            );
        toolbox
    }

    fn call(
        f: &Fixture,
        tool: &str,
        mode: Mode,
        input: serde_json::Value,
        pre: Option<&Precondition>,
    ) -> Result<Outcome> {
        toolbox().call(&Context::new(&f.scope), tool, mode, input, pre)
    }

    #[test]
    fn values_become_single_argv_elements_never_shell() {
        let f = Fixture::new();
        let out = call(
            &f,
            "echo",
            Mode::Run,
            json!({ "word": "a b; rm -rf / $(x)" }),
            None,
        )
        .unwrap()
        .into_value();
        assert_eq!(out["stdout"], "said: a b; rm -rf / $(x)\n");
        assert_eq!(out["args"], json!(["said:", "a b; rm -rf / $(x)"]));
        let e = call(&f, "echo", Mode::Run, json!({ "word": "--help" }), None).unwrap_err();
        assert_eq!(code(&e), ErrorCode::InvalidInput);
        assert!(e.to_string().contains("word"), "{e}");
    }

    #[test]
    fn output_paths_make_a_mutate_tool_with_a_plan() {
        let f = Fixture::new();
        f.write("model.ifc", "ISO-10303-21;");
        let input = json!({ "source": "model.ifc", "target": "model.copy" });
        let Outcome::Plan(plan) = call(&f, "cp_file", Mode::Plan, input.clone(), None).unwrap() else {
            panic!()
        };
        assert!(!f.exists("model.copy"));
        assert_eq!(plan.effects.len(), 2);
        call(
            &f,
            "cp_file",
            Mode::Apply,
            input.clone(),
            Some(&plan.precondition),
        )
        .unwrap();
        assert_eq!(f.read("model.copy"), "ISO-10303-21;");
        // The output exists now: a second run is refused, not overwritten.
        let e = call(&f, "cp_file", Mode::Plan, input, None).unwrap_err();
        assert_eq!(code(&e), ErrorCode::AlreadyExists);
        let e = call(
            &f,
            "cp_file",
            Mode::Plan,
            json!({ "source": "/etc/passwd", "target": "x" }),
            None,
        )
        .unwrap_err();
        assert_eq!(code(&e), ErrorCode::OutsideScope);
        let e = call(
            &f,
            "cp_file",
            Mode::Plan,
            json!({ "source": "model.ifc", "target": "../x" }),
            None,
        )
        .unwrap_err();
        assert_eq!(code(&e), ErrorCode::OutsideScope);
    }

    #[test]
    fn missing_and_failing_programs_are_named() {
        let f = Fixture::new();
        let e = call(&f, "missing", Mode::Run, json!({ "word": "x" }), None).unwrap_err();
        assert_eq!(code(&e), ErrorCode::ProgramNotFound);
        assert!(
            e.to_string().contains("fusion-not-installed-program") && e.to_string().contains("PATH"),
            "{e}"
        );
        let e = call(&f, "fails", Mode::Run, json!({ "word": "x" }), None).unwrap_err();
        assert_eq!(code(&e), ErrorCode::ProgramFailed);
        assert!(e.to_string().contains("broken"), "{e}");
    }

    #[test]
    fn output_is_capped_and_says_so() {
        let f = Fixture::new();
        let cx = Context::new(&f.scope);
        let args = [
            "-c".to_string(),
            "head -c 200000 /dev/zero | tr '\\0' x".to_string(),
        ];
        let out = run_program(&cx, "sh", "sh", &args, DEFAULT_PROGRAM_TIMEOUT).unwrap();
        assert_eq!(out.stdout.len(), MAX_CAPTURE_BYTES);
        assert!(out.truncated);
        let out = run_program(
            &cx,
            "sh",
            "sh",
            &["-c".into(), "echo small".into()],
            DEFAULT_PROGRAM_TIMEOUT,
        )
        .unwrap();
        assert!(!out.truncated);
    }

    #[test]
    fn cancellation_kills_the_program() {
        let f = Fixture::new();
        let cancel = crate::Cancellation::new();
        let cx = Context::new(&f.scope).with_cancellation(cancel.clone());
        cancel.cancel();
        let e = run_program(&cx, "sleep", "sleep", &["30".into()], DEFAULT_PROGRAM_TIMEOUT).unwrap_err();
        assert_eq!(code(&e), ErrorCode::Cancelled);
        let cx = Context::new(&f.scope);
        let e = run_program(&cx, "sleep", "sleep", &["30".into()], Duration::ZERO).unwrap_err();
        assert_eq!(code(&e), ErrorCode::Timeout);
    }
}
