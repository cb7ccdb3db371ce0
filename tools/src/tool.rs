//! The local-tool contract: how a tool is declared, and the toolbox that
//! validates input, dispatches by name and produces the MCP manifest.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::scope::Scope;
use crate::{Annotations, Class, Mode, Plan, Precondition, ToolDescriptor, ToolList};

/// A read or action tool: it runs on arrival.
///
/// `Input` is deserialized from the call's JSON (unknown fields are refused
/// when the type says `#[serde(deny_unknown_fields)]`) and its JSON Schema is
/// published as the tool's `inputSchema`.
pub trait Tool: Send + Sync + 'static {
    /// The tool's input, validated before [`Tool::run`] sees it.
    type Input: DeserializeOwned + JsonSchema;
    /// The tool's structured output.
    type Output: Serialize + JsonSchema;

    /// Name, description and class (`read` or `action`).
    fn spec(&self) -> ToolSpec;

    /// Runs the tool.
    fn run(&self, cx: &Context<'_>, input: Self::Input) -> Result<Self::Output>;
}

/// A mutating tool: it is planned first, and applied only after approval.
///
/// [`MutateTool::plan`] must not touch the disk. It returns the exact effect and
/// a [`Precondition`] describing the state it planned against. On apply the
/// toolbox plans again and refuses with `conflict` unless the fresh
/// precondition equals the approved one; only then is [`MutateTool::apply`]
/// called, with whatever the fresh plan staged.
pub trait MutateTool: Send + Sync + 'static {
    /// The tool's input.
    type Input: DeserializeOwned + JsonSchema;
    /// What apply returns.
    type Output: Serialize + JsonSchema;
    /// What plan hands to apply (new file content, say), so apply does not
    /// compute it twice. Use `()` when there is nothing to hand over.
    type Staged;

    /// Name, description and hints; the class must be `mutate`.
    fn spec(&self) -> ToolSpec;

    /// Dry run: the exact effect and the precondition, without touching disk.
    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, Self::Staged)>;

    /// Performs the planned effect.
    fn apply(&self, cx: &Context<'_>, input: &Self::Input, staged: Self::Staged) -> Result<Self::Output>;
}

/// What a tool says about itself.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// The tool's name: lowercase, `snake_case`.
    pub name: Cow<'static, str>,
    /// What the tool does, for a model choosing among tools.
    pub description: Cow<'static, str>,
    /// Read, mutate or action.
    pub class: Class,
    /// Whether applying may destroy or overwrite data.
    pub destructive: bool,
    /// Whether running it twice with the same input has no further effect.
    pub idempotent: bool,
}

impl ToolSpec {
    /// A read tool: runs on arrival, changes nothing.
    pub fn read(name: impl Into<Cow<'static, str>>, description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(name, description, Class::Read, false, true)
    }

    /// An action tool: runs on arrival, has an effect outside the file tree.
    pub fn action(name: impl Into<Cow<'static, str>>, description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(name, description, Class::Action, false, false)
    }

    /// A mutate tool: planned, approved, then applied.
    pub fn mutate(name: impl Into<Cow<'static, str>>, description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(name, description, Class::Mutate, false, false)
    }

    /// Marks the tool as possibly destroying or overwriting data.
    pub fn destructive(mut self, yes: bool) -> Self {
        self.destructive = yes;
        self
    }

    /// Marks the tool as idempotent.
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }

    fn new(
        name: impl Into<Cow<'static, str>>,
        description: impl Into<Cow<'static, str>>,
        class: Class,
        destructive: bool,
        idempotent: bool,
    ) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            class,
            destructive,
            idempotent,
        }
    }

    fn descriptor(&self, input_schema: Value, output_schema: Option<Value>) -> ToolDescriptor {
        ToolDescriptor {
            name: self.name.to_string(),
            description: self.description.to_string(),
            input_schema,
            output_schema,
            annotations: Annotations {
                read_only_hint: self.class == Class::Read,
                destructive_hint: self.destructive,
                idempotent_hint: self.idempotent,
                open_world_hint: self.class == Class::Action,
            },
            class: self.class,
        }
    }
}

/// A cancellation flag shared between the caller and a running tool.
///
/// Tools check it at every bounded step (each file, each buffer); a named
/// program is killed when it flips.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<AtomicBool>);

impl Cancellation {
    /// A fresh, un-cancelled flag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every holder of this flag to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`Cancellation::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where a running tool says how far it has come: units done, units in all
/// when known, and what the units are. Called as often as a tool likes;
/// whoever listens keeps the pace down.
#[derive(Clone)]
pub struct ProgressSink(Arc<Report>);

/// What a [`ProgressSink`] calls: units done, units in all, what they are.
type Report = dyn Fn(u64, Option<u64>, &str) + Send + Sync;

impl ProgressSink {
    /// A sink that hands each report to `report`.
    pub fn new(report: impl Fn(u64, Option<u64>, &str) + Send + Sync + 'static) -> Self {
        ProgressSink(Arc::new(report))
    }
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// What a tool runs with: the scope, a cancellation flag, a deadline, and
/// where to say how far it has come.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    scope: &'a Scope,
    cancel: Cancellation,
    deadline: Option<Instant>,
    replanning: bool,
    progress: Option<ProgressSink>,
}

impl<'a> Context<'a> {
    /// A context with no deadline and a fresh cancellation flag.
    pub fn new(scope: &'a Scope) -> Self {
        Context {
            scope,
            cancel: Cancellation::new(),
            deadline: None,
            replanning: false,
            progress: None,
        }
    }

    /// Sends the tool's progress reports to `sink`.
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = Some(sink);
        self
    }

    /// Says how far the tool has come: `done` units of `total` (when
    /// known), `what` naming the units ("points written"). Nothing happens
    /// when nobody listens.
    pub fn progress(&self, done: u64, total: Option<u64>, what: &str) {
        if let Some(sink) = &self.progress {
            (sink.0)(done, total, what);
        }
    }

    /// Uses `cancel` as this call's cancellation flag.
    pub fn with_cancellation(mut self, cancel: Cancellation) -> Self {
        self.cancel = cancel;
        self
    }

    /// Stops the call with `timeout` once `deadline` has passed.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The allowed folders.
    pub fn scope(&self) -> &'a Scope {
        self.scope
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether this plan is the one apply makes again to check the approved
    /// precondition: only the precondition and what is staged for apply
    /// count, so work done for the summary alone (counting, previews) can
    /// be skipped.
    pub fn replanning(&self) -> bool {
        self.replanning
    }

    /// `Err(cancelled)` or `Err(timeout)` when the call should stop now.
    ///
    /// Long loops call this once per step; it is two loads and a clock read.
    pub fn checkpoint(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(Error::Timeout),
            _ => Ok(()),
        }
    }
}

/// What a call returns: a tool's output, or a mutate tool's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A read or action tool's output, or a mutate tool's apply output.
    Output(Value),
    /// A mutate tool's plan.
    Plan(Plan),
}

impl Outcome {
    /// Whether the result was cut short by a bound.
    pub fn truncated(&self) -> bool {
        match self {
            Outcome::Output(v) => v.get("truncated").and_then(Value::as_bool).unwrap_or(false),
            Outcome::Plan(p) => p.truncated,
        }
    }

    /// The result as JSON.
    pub fn into_value(self) -> Value {
        match self {
            Outcome::Output(v) => v,
            Outcome::Plan(p) => serde_json::to_value(p).unwrap_or(Value::Null),
        }
    }
}

/// The type-erased face of a registered tool.
trait Erased: Send + Sync {
    fn spec(&self) -> &ToolSpec;
    fn descriptor(&self) -> ToolDescriptor;
    fn run(&self, cx: &Context<'_>, input: Value) -> Result<Value>;
    fn plan(&self, cx: &Context<'_>, input: Value) -> Result<Plan>;
    fn apply(&self, cx: &Context<'_>, input: Value, precondition: &Precondition) -> Result<Value>;
}

struct Running<T> {
    spec: ToolSpec,
    tool: T,
}

struct Mutating<T> {
    spec: ToolSpec,
    tool: T,
}

impl<T: Tool> Erased for Running<T> {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn descriptor(&self) -> ToolDescriptor {
        self.spec
            .descriptor(schema_of::<T::Input>(), Some(schema_of::<T::Output>()))
    }

    fn run(&self, cx: &Context<'_>, input: Value) -> Result<Value> {
        let input = parse::<T::Input>(&self.spec.name, input)?;
        cx.checkpoint()?;
        to_json(self.tool.run(cx, input)?)
    }

    fn plan(&self, _: &Context<'_>, _: Value) -> Result<Plan> {
        Err(wrong_mode(&self.spec, Mode::Plan))
    }

    fn apply(&self, _: &Context<'_>, _: Value, _: &Precondition) -> Result<Value> {
        Err(wrong_mode(&self.spec, Mode::Apply))
    }
}

impl<T: MutateTool> Erased for Mutating<T> {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn descriptor(&self) -> ToolDescriptor {
        self.spec
            .descriptor(schema_of::<T::Input>(), Some(schema_of::<T::Output>()))
    }

    fn run(&self, _: &Context<'_>, _: Value) -> Result<Value> {
        Err(wrong_mode(&self.spec, Mode::Run))
    }

    fn plan(&self, cx: &Context<'_>, input: Value) -> Result<Plan> {
        let input = parse::<T::Input>(&self.spec.name, input)?;
        cx.checkpoint()?;
        Ok(self.tool.plan(cx, &input)?.0)
    }

    fn apply(&self, cx: &Context<'_>, input: Value, approved: &Precondition) -> Result<Value> {
        let input = parse::<T::Input>(&self.spec.name, input)?;
        cx.checkpoint()?;
        // Plan again against the disk as it is now: anything that made the
        // approved plan possible and no longer holds is a conflict, not a new plan.
        let again = Context {
            replanning: true,
            ..cx.clone()
        };
        let (fresh, staged) = self
            .tool
            .plan(&again, &input)
            .map_err(|e| into_conflict(e, approved))?;
        if let Some((subject, detail)) = approved.first_difference(&fresh.precondition) {
            return Err(Error::Conflict { subject, detail });
        }
        to_json(self.tool.apply(cx, &input, staged)?)
    }
}

/// Errors from re-planning at apply time that mean "the disk changed". An
/// error that names no path (an edit's find text no longer matching) is
/// reported against the first path the approved plan depended on.
fn into_conflict(e: Error, approved: &Precondition) -> Error {
    let conflict = |subject: String, detail: String| Error::Conflict { subject, detail };
    match e {
        Error::NotFound { ref path } | Error::MissingParent { ref path } => {
            conflict(path.display().to_string(), "it no longer exists".into())
        }
        Error::AlreadyExists { ref path, .. } => {
            conflict(path.display().to_string(), "something was created there".into())
        }
        Error::NotAFile { ref path, found } | Error::NotADirectory { ref path, found } => {
            conflict(path.display().to_string(), format!("it is now {found}"))
        }
        Error::BinaryFile { ref path } => conflict(path.display().to_string(), "it is now binary".into()),
        Error::InvalidBatch { ref problems } if !problems.is_empty() => {
            let first = &problems[0];
            let more = match problems.len() {
                1 => String::new(),
                n => format!("; {} more item(s) changed too", n - 1),
            };
            conflict(
                first.path.clone(),
                format!("{} ({}){more}", first.message, first.code),
            )
        }
        Error::InvalidInput { tool, field, message } => conflict(
            approved
                .expect
                .first()
                .map_or_else(|| format!("the input of {tool}"), |x| x.path.clone()),
            format!("{field} {message}"),
        ),
        other => other,
    }
}

fn wrong_mode(spec: &ToolSpec, mode: Mode) -> Error {
    let hint = match spec.class {
        Class::Mutate => "it is a mutate tool: call it with mode `plan`, then `apply` the approved plan",
        Class::Read | Class::Action => "it runs on arrival: call it with mode `run`",
    };
    Error::invalid_input(
        spec.name.to_string(),
        "mode",
        format!("`{}` is not a mode of this tool; {hint}", mode.as_str()),
    )
}

fn parse<T: DeserializeOwned>(tool: &str, input: Value) -> Result<T> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." => "input".to_string(),
            p => p,
        };
        Error::invalid_input(tool, field, e.into_inner().to_string())
    })
}

fn to_json<T: Serialize>(output: T) -> Result<Value> {
    serde_json::to_value(output).map_err(|e| Error::Io {
        path: "<output>".into(),
        source: std::io::Error::other(e),
    })
}

/// The JSON Schema of `T`, as MCP wants it: no `$schema` or Rust type `title`.
pub(crate) fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = schemars::schema_for!(T).to_value();
    if let Some(map) = schema.as_object_mut() {
        map.remove("$schema");
        map.remove("title");
    }
    schema
}

/// The set of tools a device offers, dispatched by name.
#[derive(Clone, Default)]
pub struct Toolbox {
    tools: BTreeMap<String, Arc<dyn Erased>>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl Toolbox {
    /// An empty toolbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a read or action tool.
    ///
    /// # Panics
    ///
    /// If a tool of the same name is registered already, or the spec's class
    /// is `mutate` (use [`Toolbox::add_mutating`]): both are programming errors.
    pub fn add<T: Tool>(&mut self, tool: T) -> &mut Self {
        let spec = tool.spec();
        assert!(
            spec.class != Class::Mutate,
            "tool `{}` says it is a mutate tool; register it with add_mutating",
            spec.name
        );
        self.insert(spec.name.to_string(), Arc::new(Running { spec, tool }))
    }

    /// Registers a mutate tool.
    ///
    /// # Panics
    ///
    /// If a tool of the same name is registered already, or the spec's class
    /// is not `mutate`.
    pub fn add_mutating<T: MutateTool>(&mut self, tool: T) -> &mut Self {
        let spec = tool.spec();
        assert!(
            spec.class == Class::Mutate,
            "tool `{}` is registered with add_mutating but its class is {}",
            spec.name,
            spec.class.as_str()
        );
        self.insert(spec.name.to_string(), Arc::new(Mutating { spec, tool }))
    }

    fn insert(&mut self, name: String, tool: Arc<dyn Erased>) -> &mut Self {
        assert!(
            !self.tools.contains_key(&name),
            "tool `{name}` is registered twice"
        );
        self.tools.insert(name, tool);
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// The class of a registered tool.
    pub fn class(&self, name: &str) -> Option<Class> {
        self.tools.get(name).map(|t| t.spec().class)
    }

    /// The manifest: a valid MCP `tools/list` result.
    pub fn manifest(&self) -> ToolList {
        ToolList {
            tools: self.tools.values().map(|t| t.descriptor()).collect(),
        }
    }

    /// Calls `tool` in `mode` with JSON `input`.
    ///
    /// `run` is for read and action tools, `plan` and `apply` for mutate tools;
    /// `apply` needs the `precondition` of the approved plan.
    pub fn call(
        &self,
        cx: &Context<'_>,
        tool: &str,
        mode: Mode,
        input: Value,
        precondition: Option<&Precondition>,
    ) -> Result<Outcome> {
        let entry = self.tools.get(tool).ok_or_else(|| Error::UnknownTool {
            tool: tool.to_string(),
            available: self.names().collect::<Vec<_>>().join(", "),
        })?;
        match mode {
            Mode::Run => entry.run(cx, input).map(Outcome::Output),
            Mode::Plan => entry.plan(cx, input).map(Outcome::Plan),
            Mode::Apply => {
                let precondition = precondition.ok_or_else(|| {
                    Error::invalid_input(
                        tool,
                        "precondition",
                        "apply needs the precondition of the approved plan",
                    )
                })?;
                entry.apply(cx, input, precondition).map(Outcome::Output)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::ErrorCode;
    use crate::builtin::testutil::{Fixture, code};

    #[test]
    fn manifest_is_a_valid_mcp_tools_list() {
        let manifest = serde_json::to_value(Toolbox::builtin().manifest()).unwrap();
        let tools = manifest["tools"].as_array().unwrap();
        let names: Vec<_> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "append_file",
                "copy",
                "create_directory",
                "delete",
                "disk_usage",
                "edit_file",
                "glob",
                "grep",
                "hash_file",
                "list_directory",
                "move",
                "open_path",
                "read_file",
                "rename_batch",
                "reveal_in_os",
                "stat",
                "write_file",
            ]
        );
        for tool in tools {
            let name = tool["name"].as_str().unwrap();
            assert!(tool["description"].as_str().unwrap().len() > 20, "{name}");
            assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
            assert!(tool["inputSchema"].get("$schema").is_none(), "{name}");
            assert_eq!(tool["outputSchema"]["type"], "object", "{name}");
            assert_eq!(
                tool["inputSchema"]["additionalProperties"], false,
                "{name} refuses unknown fields"
            );
            let class = tool["_meta"]["fusion-host/class"].as_str().unwrap();
            let a = &tool["annotations"];
            assert_eq!(a["readOnlyHint"], class == "read", "{name}");
            assert_eq!(a["openWorldHint"], class == "action", "{name}");
            for hint in [
                "readOnlyHint",
                "destructiveHint",
                "idempotentHint",
                "openWorldHint",
            ] {
                assert!(a[hint].is_boolean(), "{name}.{hint}");
            }
        }
        let by_name = |n: &str| tools.iter().find(|t| t["name"] == n).unwrap();
        assert_eq!(by_name("delete")["annotations"]["destructiveHint"], true);
        // Renaming ends the old names, as `move` does.
        assert_eq!(by_name("rename_batch")["annotations"]["destructiveHint"], true);
        assert_eq!(by_name("move")["annotations"]["destructiveHint"], true);
        assert_eq!(by_name("create_directory")["annotations"]["idempotentHint"], true);
        assert_eq!(by_name("append_file")["annotations"]["destructiveHint"], false);
        // Field docs travel into the schema, for the model.
        let path = &by_name("grep")["inputSchema"]["properties"]["pattern"]["description"];
        assert!(path.as_str().unwrap().contains("regular expression"));
        // Round-trips through the wire type.
        let back: ToolList = serde_json::from_value(manifest.clone()).unwrap();
        assert_eq!(serde_json::to_value(back).unwrap(), manifest);
    }

    /// Apply plans again to check the precondition, and the tool can tell
    /// that plan from the one a person saw.
    #[test]
    fn apply_plans_again_and_says_so() {
        #[derive(serde::Deserialize, JsonSchema)]
        struct NoInput {}
        #[derive(Serialize, JsonSchema)]
        struct Applied {
            replanning: bool,
        }
        struct Probe(Arc<std::sync::Mutex<Vec<bool>>>);
        impl MutateTool for Probe {
            type Input = NoInput;
            type Output = Applied;
            type Staged = ();
            fn spec(&self) -> ToolSpec {
                ToolSpec::mutate("probe", "records whether each of its plans is apply's second one")
            }
            fn plan(&self, cx: &Context<'_>, _: &NoInput) -> Result<(Plan, ())> {
                self.0.lock().unwrap().push(cx.replanning());
                Ok((
                    Plan::new("nothing", Vec::new(), Precondition::new(Vec::new())),
                    (),
                ))
            }
            fn apply(&self, cx: &Context<'_>, _: &NoInput, (): ()) -> Result<Applied> {
                Ok(Applied {
                    replanning: cx.replanning(),
                })
            }
        }
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut toolbox = Toolbox::new();
        toolbox.add_mutating(Probe(Arc::clone(&seen)));
        let f = Fixture::new();
        let cx = Context::new(&f.scope);
        let Outcome::Plan(plan) = toolbox.call(&cx, "probe", Mode::Plan, json!({}), None).unwrap() else {
            panic!("a plan")
        };
        let out = toolbox
            .call(&cx, "probe", Mode::Apply, json!({}), Some(&plan.precondition))
            .unwrap()
            .into_value();
        assert_eq!(*seen.lock().unwrap(), [false, true]);
        assert_eq!(
            out["replanning"], false,
            "apply itself runs in the caller's context"
        );
    }

    #[test]
    fn dispatch_errors_are_clear() {
        let f = Fixture::new();
        let e = f.call("rm_rf", Mode::Run, json!({}), None).unwrap_err();
        assert_eq!(code(&e), ErrorCode::UnknownTool);
        assert!(e.to_string().contains("list_directory"), "lists what exists: {e}");
        let e = f
            .call("read_file", Mode::Plan, json!({ "path": "x" }), None)
            .unwrap_err();
        assert!(e.to_string().contains("mode `run`"), "{e}");
        let e = f
            .call(
                "write_file",
                Mode::Apply,
                json!({ "path": "x", "content": "" }),
                None,
            )
            .unwrap_err();
        assert!(e.to_string().contains("precondition"), "{e}");
        let e = f
            .call("read_file", Mode::Run, json!("notes.txt"), None)
            .unwrap_err();
        assert_eq!(code(&e), ErrorCode::InvalidInput);
        let e = f
            .call(
                "edit_file",
                Mode::Plan,
                json!({ "path": "x", "edits": [{ "find": 1 }] }),
                None,
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("edits[0].find"),
            "names the nested field: {e}"
        );
    }

    #[test]
    fn cancellation_and_deadline_stop_a_call() {
        let f = Fixture::new();
        f.write("a.txt", "x");
        let cancel = Cancellation::new();
        cancel.cancel();
        let cx = Context::new(&f.scope).with_cancellation(cancel);
        let e = Toolbox::builtin()
            .call(&cx, "grep", Mode::Run, json!({ "pattern": "x" }), None)
            .unwrap_err();
        assert_eq!(code(&e), ErrorCode::Cancelled);
        let cx = Context::new(&f.scope).with_deadline(Instant::now());
        let e = Toolbox::builtin()
            .call(&cx, "list_directory", Mode::Run, json!({}), None)
            .unwrap_err();
        assert_eq!(code(&e), ErrorCode::Timeout);
        assert!(e.is_retryable());
    }

    struct Dummy(Class);

    impl Tool for Dummy {
        type Input = Value;
        type Output = Value;
        fn spec(&self) -> ToolSpec {
            ToolSpec {
                class: self.0,
                ..ToolSpec::read("list_directory", "a second list_directory")
            }
        }
        fn run(&self, _: &Context<'_>, input: Value) -> Result<Value> {
            Ok(input)
        }
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_names_panic_at_registration() {
        Toolbox::builtin().add(Dummy(Class::Read));
    }

    #[test]
    #[should_panic(expected = "add_mutating")]
    fn a_mutate_spec_needs_add_mutating() {
        Toolbox::new().add(Dummy(Class::Mutate));
    }

    #[test]
    fn outcome_reports_truncation() {
        assert!(Outcome::Output(json!({ "truncated": true })).truncated());
        assert!(!Outcome::Output(json!({ "entries": [] })).truncated());
    }
}
