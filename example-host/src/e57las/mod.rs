//! `convert_e57_to_las`: E57 point clouds to LAS, natively (the `e57` and
//! `las` crates), one LAS per scan or all scans merged into one.
//!
//! Every path goes through the scope: scans are read through the root's
//! handle, and each LAS file is written beside its final name and renamed into
//! place only when complete.

mod decode;
mod offsets;
mod read;
mod write;

use fusion_tools::{
    Context, Effect, EffectOp, EntryKind, Error, Expectation, Location, Mode, MutateTool, PathState, Plan,
    Precondition, Result, ToolSpec, Toolbox,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub(crate) use read::{PLAN_DECODE_RECORDS, scan_points};
pub(crate) use write::convert;

/// The smallest and largest cube edge `thin_m` takes, in metres: below a
/// millimetre is below LAS's scale here, above a kilometre keeps nothing of
/// a site.
const MIN_THIN_M: f64 = 0.001;
const MAX_THIN_M: f64 = 1000.0;

/// The tool.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConvertE57ToLas;

/// Input of `convert_e57_to_las`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConvertInput {
    /// E57 files, or folders whose `.e57` files (at any depth) are converted.
    pub(crate) sources: Vec<String>,
    /// Merge every scan into this one file; `.copc.laz` writes a Cloud
    /// Optimized Point Cloud, `.laz` compressed LAZ, `.las` plain LAS.
    /// Without it each scan becomes `NAME.las` (or `NAME.laz`,
    /// `NAME.copc.laz`, see `to`) beside `NAME.e57`.
    #[serde(default)]
    pub(crate) merge_into: Option<String>,
    /// The output format for one file per scan: `las` (default), `laz`
    /// (compressed, about a fifth of the size) or `copc` (compressed and
    /// indexed as an octree, for web viewers that stream it). With
    /// `merge_into` its extension decides.
    #[serde(default)]
    pub(crate) to: Option<OutputFormat>,
    /// Keep one point per cube of this edge, in metres (`0.01`: one per
    /// centimetre cube): the decimated copy people hand to Revit and web
    /// viewers. The first point met in a cube is kept. 0.001 to 1000.
    #[serde(default)]
    pub(crate) thin_m: Option<f64>,
}

/// LAS or its compressed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OutputFormat {
    /// Plain LAS 1.2.
    Las,
    /// LAZ: LAS 1.2 compressed with LASzip.
    Laz,
    /// COPC: LAZ 1.4 whose chunks are the nodes of an octree, each coarser
    /// level a sample of the finer ones, with the hierarchy in the file.
    Copc,
}

impl OutputFormat {
    /// The file name's ending.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            OutputFormat::Las => "las",
            OutputFormat::Laz => "laz",
            OutputFormat::Copc => "copc.laz",
        }
    }

    /// The format a file name's ending names, ignoring case.
    pub(crate) fn of(path: &str) -> Option<OutputFormat> {
        let name = std::path::Path::new(path)
            .file_name()?
            .to_string_lossy()
            .to_ascii_lowercase();
        [OutputFormat::Copc, OutputFormat::Laz, OutputFormat::Las]
            .into_iter()
            .find(|f| name.ends_with(&format!(".{}", f.extension())))
    }

    /// What a person calls it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            OutputFormat::Las => "LAS",
            OutputFormat::Laz => "LAZ",
            OutputFormat::Copc => "COPC",
        }
    }
}

/// One LAS file to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Job {
    /// The LAS file.
    pub(crate) output: String,
    /// The E57 files that go into it.
    pub(crate) sources: Vec<String>,
    /// Points: in a plan, its count (see [`scan_points`]); in the output,
    /// what was written.
    pub(crate) points: u64,
    /// One point per cube of this edge, in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) thin_m: Option<f64>,
}

/// Output of `convert_e57_to_las`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub(crate) struct ConvertOutput {
    /// The LAS files written.
    pub(crate) outputs: Vec<Job>,
    /// Points written in all.
    pub(crate) points: u64,
}

impl MutateTool for ConvertE57ToLas {
    type Input = ConvertInput;
    type Output = ConvertOutput;
    type Staged = Vec<Job>;

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "convert_e57_to_las",
            "Convert E57 point clouds (registered scans: cartesian coordinates with the scan pose applied, \
             intensity, colour and per-point GPS time when present) to LAS, compressed LAZ, or COPC (Cloud \
             Optimized Point Cloud, `.copc.laz`: LAZ 1.4 indexed as an octree, which web viewers such as \
             Potree and QGIS stream), one file per scan or merged into one. A coordinate system the scans all \
             declare as WKT is kept (LAS 1.4, point format 6 or 7); otherwise LAS and LAZ are LAS 1.2 without \
             one (format 0–3), and COPC is always 1.4 (format 6 or 7). Timestamps \
             become adjusted standard GPS time when the scan has an acquisition start. The plan lists each \
             output and counts the points it will write (invalid and direction-only records are dropped): \
             scans that can hold such records are decoded to count them, up to 10 million records per \
             plan, past which it says \"up to\" and the result counts what was written. Outputs must not \
             exist yet. `thin_m` keeps one point per cube of that edge in metres (a decimated copy); the plan \
             then counts \"up to\" and the result what remains.",
        )
    }

    fn plan(&self, cx: &Context<'_>, input: &ConvertInput) -> Result<(Plan, Vec<Job>)> {
        let scans = collect_scans(cx, &input.sources)?;
        let mut expect = Vec::new();
        // The scans are only read: their identity (id, size, mtime) tells a
        // changed one without hashing gigabytes at plan and again at apply.
        for scan in &scans {
            let loc = cx.scope().resolve(scan)?;
            expect.push(Expectation {
                path: loc.display(),
                state: loc.identity()?,
            });
        }
        let (mut jobs, exact) = jobs(cx, &scans, input.merge_into.as_deref(), input.to)?;
        thin(&mut jobs, input.thin_m)?;
        let mut effects = Vec::new();
        for job in &jobs {
            let out = writable(cx, job)?;
            expect.push(Expectation {
                path: out.display(),
                state: PathState::Absent,
            });
            effects.push(Effect::new(EffectOp::CreateFile, out.display()));
        }
        let points: u64 = jobs.iter().map(|j| j.points).sum();
        // Counted exactly unless scans that can hold invalid or
        // direction-only records (dropped when written) hold more than a
        // plan decodes: then "up to", and the result counts what was written.
        let points = if let Some(edge) = input.thin_m {
            // How many cubes the points fill is known only once they are
            // read: the result counts what remains.
            format!("up to {points} points, thinned to one per {edge} m cube")
        } else if exact {
            format!("{points} points")
        } else {
            format!(
                "up to {points} points (invalid and direction-only records are skipped; scans past \
                 {PLAN_DECODE_RECORDS} such records are not decoded to count them)"
            )
        };
        let format = jobs
            .first()
            .and_then(|j| OutputFormat::of(&j.output))
            .unwrap_or(OutputFormat::Las);
        let summary = format!(
            "convert {} E57 scan(s), {points}, into {} {} file(s)",
            scans.len(),
            jobs.len(),
            format.label()
        );
        Ok((Plan::new(summary, effects, Precondition::new(expect)), jobs))
    }

    fn apply(&self, cx: &Context<'_>, _: &ConvertInput, mut jobs: Vec<Job>) -> Result<ConvertOutput> {
        // The plan's count is exact or an upper bound (thinning, invalid
        // records): the total said while converting.
        let total: u64 = jobs.iter().map(|j| j.points).sum();
        let mut points = 0;
        for job in &mut jobs {
            let before = points;
            job.points = convert(cx, job, &mut |n| {
                cx.progress(before + n, Some(total), "points written");
            })?;
            points += job.points;
        }
        Ok(ConvertOutput {
            outputs: jobs,
            points,
        })
    }
}

/// Where `job` writes, once checked: a folder it may write in, no file
/// there yet, and for COPC at least one point to build an octree of.
pub(crate) fn writable<'s>(cx: &Context<'s>, job: &Job) -> Result<Location<'s>> {
    if job.points == 0 && OutputFormat::of(&job.output) == Some(OutputFormat::Copc) {
        return Err(Error::invalid_input(
            "convert_e57_to_las",
            "sources",
            format!(
                "{} holds no valid points, and a COPC file needs at least one; choose `to: \"las\"` for an \
                 empty file",
                job.sources.join(", ")
            ),
        ));
    }
    if job.points > u64::from(u32::MAX) && OutputFormat::of(&job.output) == Some(OutputFormat::Copc) {
        return Err(Error::invalid_input(
            "convert_e57_to_las",
            "sources",
            format!(
                "{} hold up to {} points; a COPC file is built with at most {} (its octree indexes points in \
                 32 bits): convert them into several files, or thin them with thin_m",
                job.sources.join(", "),
                job.points,
                u32::MAX
            ),
        ));
    }
    let out = cx.scope().resolve(&job.output)?;
    out.require_writable()?;
    if out.state(cx, false)? != PathState::Absent {
        return Err(Error::AlreadyExists {
            path: out.path(),
            hint: "move or delete it first, or choose merge_into",
        });
    }
    Ok(out)
}

/// Has `jobs` keep one point per cube of `edge` metres, an edge from
/// [`MIN_THIN_M`] to [`MAX_THIN_M`].
pub(crate) fn thin(jobs: &mut [Job], edge: Option<f64>) -> Result<()> {
    let Some(edge) = edge else { return Ok(()) };
    if !(MIN_THIN_M..=MAX_THIN_M).contains(&edge) {
        return Err(Error::invalid_input(
            "convert_e57_to_las",
            "thin_m",
            format!(
                "{edge} is not a cube edge from {MIN_THIN_M} to {MAX_THIN_M} metres; 0.01 keeps one point per centimetre"
            ),
        ));
    }
    for job in jobs {
        job.thin_m = Some(edge);
    }
    Ok(())
}

/// The files to write for `scans`: one beside each scan (`.las`, or `.laz`
/// with `to`), or all merged into `merge_into`, whose extension says which.
/// The flag says whether the point counts are exact (see [`scan_points`]).
pub(crate) fn jobs(
    cx: &Context<'_>,
    scans: &[String],
    merge_into: Option<&str>,
    to: Option<OutputFormat>,
) -> Result<(Vec<Job>, bool)> {
    if let Some(target) = merge_into {
        let Some(format) = OutputFormat::of(target) else {
            return Err(Error::invalid_input(
                "convert_e57_to_las",
                "merge_into",
                format!(
                    "{target} must end in .las, .laz (compressed) or .copc.laz (compressed and indexed for \
                     streaming); the ending says which is written"
                ),
            ));
        };
        if to.is_some_and(|t| t != format) {
            return Err(Error::invalid_input(
                "convert_e57_to_las",
                "to",
                format!(
                    "says {} but merge_into {target} is {}; leave `to` out",
                    to.map_or("", |t| t.extension()),
                    format.label()
                ),
            ));
        }
    }
    let per_scan = to.unwrap_or(OutputFormat::Las).extension();
    let mut counted = Vec::new();
    let mut exact = true;
    // Apply's second plan only checks the precondition: the counts shown
    // were made by the first, so nothing is decoded again.
    let mut budget = if cx.replanning() { 0 } else { PLAN_DECODE_RECORDS };
    for scan in scans {
        let loc = cx.scope().resolve(scan)?;
        let (records, counted_exactly) = scan_points(cx, &loc, &mut budget)?;
        exact &= counted_exactly;
        counted.push((loc.display(), records));
    }
    let jobs = match merge_into {
        Some(target) => vec![Job {
            output: cx.scope().resolve(target)?.display(),
            sources: counted.iter().map(|(s, _)| s.clone()).collect(),
            points: counted.iter().map(|(_, n)| n).sum(),
            thin_m: None,
        }],
        None => counted
            .into_iter()
            .map(|(source, points)| Job {
                thin_m: None,
                output: std::path::Path::new(&source)
                    .with_extension(per_scan)
                    .display()
                    .to_string(),
                sources: vec![source],
                points,
            })
            .collect(),
    };
    Ok((jobs, exact))
}

/// The `.e57` files named by `sources` (files as given, folders searched).
pub(crate) fn collect_scans(cx: &Context<'_>, sources: &[String]) -> Result<Vec<String>> {
    if sources.is_empty() {
        return Err(Error::invalid_input(
            "convert_e57_to_las",
            "sources",
            "name at least one E57 file or folder",
        ));
    }
    let mut scans = Vec::new();
    for source in sources {
        let loc = cx.scope().resolve(source)?;
        // What is there, without reading a file's content.
        let entry = match loc.identity()? {
            PathState::Identity { entry, .. } => Some(entry),
            _ => None,
        };
        match entry {
            Some(EntryKind::Directory) => {
                let found = Toolbox::builtin()
                    .call(cx, "glob", Mode::Run, json!({ "pattern": "*.e57", "case_insensitive": true, "path": source, "kind": "file" }), None)?
                    .into_value();
                if found["truncated"] == true {
                    return Err(Error::invalid_input(
                        "convert_e57_to_las",
                        "sources",
                        format!(
                            "{} holds more than 1000 E57 files; convert its sub-folders one at a time",
                            loc.display()
                        ),
                    ));
                }
                for m in found["matches"].as_array().into_iter().flatten() {
                    scans.push(loc.join(m["path"].as_str().unwrap_or_default()).display());
                }
            }
            Some(EntryKind::File) => scans.push(loc.display()),
            None => return Err(Error::NotFound { path: loc.path() }),
            Some(_) => {
                return Err(Error::NotAFile {
                    path: loc.path(),
                    found: "not a regular file",
                });
            }
        }
    }
    if scans.is_empty() {
        return Err(Error::invalid_input(
            "convert_e57_to_las",
            "sources",
            "no .e57 files were found there",
        ));
    }
    Ok(scans)
}

pub(super) fn e57_error(loc: &Location<'_>, e: e57::Error) -> Error {
    Error::invalid_input(
        "convert_e57_to_las",
        "sources",
        format!("{} is not a readable E57 file: {e}", loc.display()),
    )
}

#[cfg(test)]
#[path = "../../tests/support/e57.rs"]
mod e57_fixture;

#[cfg(test)]
pub(crate) mod tests {
    use fusion_tools::{Access, Outcome, Scope};

    use super::e57_fixture;
    use super::*;

    /// Writes a small E57 file with `n` points (cartesian, intensity, and
    /// colour when asked), the way a scanner's export would.
    pub(crate) fn write_e57(path: &std::path::Path, n: usize, color: bool, shift: f64) {
        write_e57_in(path, n, color, shift, None, None);
    }

    /// [`write_e57`] with a coordinate system (E57 `coordinateMetadata`),
    /// and with a timestamp per point when `start` (the scan's
    /// `acquisitionStart`, GPS seconds) is given: point `i` at `i` ms, every
    /// seventh one's marked invalid.
    fn write_e57_in(
        path: &std::path::Path,
        n: usize,
        color: bool,
        shift: f64,
        crs: Option<&str>,
        start: Option<f64>,
    ) {
        let fields = e57_fixture::Fields {
            intensity: true,
            color,
            time: start.is_some(),
            time_invalid: true,
            invalid_state: false,
        };
        let point = |i: usize| {
            let f = i as f64;
            e57_fixture::Point {
                xyz: [shift + f * 0.01, 5_400_000.0 + f * 0.02, f * 0.003],
                intensity: (i % 100) as f32 / 99.0,
                rgb: [255, (i % 256) as i64, 0],
                time: f * 0.001,
                time_invalid: i % 7 == 6,
                invalid_state: 0,
            }
        };
        let scan = e57_fixture::Scan {
            name: format!("pc-{shift}"),
            fields,
            acquisition_start: start,
            pose: None,
            points: n,
            point: &point,
        };
        e57_fixture::write(path, crs, &[scan]);
    }

    /// Plans `input` with the device's toolbox, then applies that plan.
    /// Plans `input` with the device's toolbox.
    fn plan_of(toolbox: &Toolbox, cx: &Context<'_>, input: &serde_json::Value) -> Plan {
        let Outcome::Plan(plan) = toolbox
            .call(cx, "convert_e57_to_las", Mode::Plan, input.clone(), None)
            .unwrap()
        else {
            panic!("expected a plan")
        };
        plan
    }

    /// Applies `input` as `plan` approved it.
    fn apply_as_planned(
        toolbox: &Toolbox,
        cx: &Context<'_>,
        input: serde_json::Value,
        plan: &Plan,
    ) -> Result<fusion_tools::Outcome> {
        toolbox.call(
            cx,
            "convert_e57_to_las",
            Mode::Apply,
            input,
            Some(&plan.precondition),
        )
    }

    fn plan_and_apply(scope: &Scope, input: serde_json::Value) -> (Plan, Result<fusion_tools::Outcome>) {
        let toolbox = crate::toolbox::toolbox();
        let cx = Context::new(scope);
        let plan = plan_of(&toolbox, &cx, &input);
        let applied = apply_as_planned(&toolbox, &cx, input, &plan);
        (plan, applied)
    }

    /// The scans are held by identity, not content: a plan reads only
    /// their headers, and a scan written again between plan and apply is a
    /// conflict.
    #[test]
    fn a_scan_changed_after_the_plan_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let scan = dir.path().join("north.e57");
        write_e57(&scan, 100, false, 0.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let toolbox = crate::toolbox::toolbox();
        let cx = Context::new(&scope);
        let input = json!({ "sources": ["north.e57"] });
        let plan = plan_of(&toolbox, &cx, &input);
        let held = &plan.precondition.expect[0].state;
        assert!(
            matches!(held, PathState::Identity { size, .. } if *size == std::fs::metadata(&scan).unwrap().len()),
            "{held}"
        );

        write_e57(&scan, 120, false, 0.0);
        let e = apply_as_planned(&toolbox, &cx, input, &plan).unwrap_err();
        assert_eq!(e.code().as_str(), "conflict", "{e}");
        assert!(!dir.path().join("north.las").exists());
    }

    /// Every point of a LAS or LAZ file, in its order.
    pub(crate) fn points_of(reader: &mut las::Reader) -> Vec<las::Point> {
        let data = reader.read_all().unwrap();
        data.points().map(Result::unwrap).collect()
    }

    fn call(scope: &Scope, input: serde_json::Value) -> (Plan, ConvertOutput) {
        let (plan, out) = plan_and_apply(scope, input);
        (plan, serde_json::from_value(out.unwrap().into_value()).unwrap())
    }

    #[test]
    fn a_plan_counts_the_points_invalid_records_leave() {
        let dir = tempfile::tempdir().unwrap();
        // Every fourth record has no position (state 2), as a scanner writes
        // for a beam that returned nothing.
        let point = |i: usize| e57_fixture::Point {
            xyz: [i as f64, i as f64, 0.0],
            invalid_state: if i.is_multiple_of(4) { 2 } else { 0 },
            ..Default::default()
        };
        let scan = e57_fixture::Scan {
            name: "gaps".into(),
            fields: e57_fixture::Fields {
                invalid_state: true,
                ..Default::default()
            },
            acquisition_start: None,
            pose: None,
            points: 100,
            point: &point,
        };
        e57_fixture::write(&dir.path().join("gaps.e57"), None, &[scan]);
        write_e57(&dir.path().join("clean.e57"), 10, false, 0.0);

        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let (plan, out) = call(&scope, json!({ "sources": ["gaps.e57"] }));
        assert!(plan.summary.contains(", 75 points,"), "{}", plan.summary);
        assert_eq!(out.points, 75, "the result counts what was written");
        assert_eq!(out.outputs[0].points, 75, "and so does each output");
        let (plan, _) = call(&scope, json!({ "sources": ["clean.e57"] }));
        assert!(plan.summary.contains(", 10 points,"), "{}", plan.summary);

        // Past the plan's decoding budget: the records, and not exact.
        let cx = Context::new(&scope);
        let gaps = scope.resolve("gaps.e57").unwrap();
        assert_eq!(scan_points(&cx, &gaps, &mut 99).unwrap(), (100, false));
        let mut budget = 150;
        assert_eq!(scan_points(&cx, &gaps, &mut budget).unwrap(), (75, true));
        assert_eq!(budget, 50, "what was decoded is taken from the budget");
        let clean = scope.resolve("clean.e57").unwrap();
        assert_eq!(
            scan_points(&cx, &clean, &mut 0).unwrap(),
            (10, true),
            "headers alone"
        );
    }

    #[test]
    fn converts_each_scan_and_the_points_read_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scans")).unwrap();
        write_e57(&dir.path().join("scans/north.e57"), 2500, true, 600_000.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let (plan, out) = call(&scope, json!({ "sources": ["scans"] }));
        assert!(plan.summary.contains(", 2500 points,"), "{}", plan.summary);
        assert_eq!(out.points, 2500);

        let mut reader = las::Reader::from_path(dir.path().join("scans/north.las")).unwrap();
        let points = points_of(&mut reader);
        assert_eq!(points.len(), 2500);
        for (i, p) in points.iter().enumerate() {
            let f = i as f64;
            assert!((p.x - (600_000.0 + f * 0.01)).abs() < 0.0011, "x of {i}: {}", p.x);
            assert!(
                (p.y - (5_400_000.0 + f * 0.02)).abs() < 0.0011,
                "y of {i}: {}",
                p.y
            );
            assert!((p.z - f * 0.003).abs() < 0.0011, "z of {i}: {}", p.z);
            let color = p.color.unwrap();
            assert_eq!(
                (color.red, color.green, color.blue),
                (65535, ((i % 256) as f32 / 255.0 * 65535.0).round() as u16, 0)
            );
            let expected = ((i % 100) as f32 / 99.0 * 65535.0).round() as u16;
            assert!(p.intensity.abs_diff(expected) <= 1, "intensity of {i}");
        }
    }

    #[test]
    fn merges_scans_into_one_file() {
        let dir = tempfile::tempdir().unwrap();
        write_e57(&dir.path().join("a.e57"), 100, false, 0.0);
        write_e57(&dir.path().join("b.e57"), 150, false, 10.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let (plan, out) = call(
            &scope,
            json!({ "sources": ["a.e57", "b.e57"], "merge_into": "site.las" }),
        );
        assert_eq!(plan.effects.len(), 1);
        assert_eq!(out.points, 250);
        let reader = las::Reader::from_path(dir.path().join("site.las")).unwrap();
        assert_eq!(reader.header().number_of_points(), 250);
        assert!(!dir.path().join("a.las").exists());
    }

    /// A georeferenced scan and a local one 3,000 km apart share a file:
    /// offsets come from both (the first point's offset overflowed, and the
    /// LAS writer panicked while dropped).
    #[test]
    fn scans_far_apart_share_a_file_when_their_span_fits() {
        let dir = tempfile::tempdir().unwrap();
        write_e57(&dir.path().join("local.e57"), 100, false, 0.0);
        write_e57(&dir.path().join("utm.e57"), 100, false, 3_000_000.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let (_, out) = call(
            &scope,
            json!({ "sources": ["local.e57", "utm.e57"], "merge_into": "site.las" }),
        );
        assert_eq!(out.points, 200);
        let mut reader = las::Reader::from_path(dir.path().join("site.las")).unwrap();
        let xs: Vec<f64> = points_of(&mut reader).iter().map(|p| p.x).collect();
        assert!((xs[0] - 0.0).abs() < 0.0006, "{}", xs[0]);
        assert!(
            (xs[199] - (3_000_000.0 + 99.0 * 0.01)).abs() < 0.0006,
            "{}",
            xs[199]
        );
    }

    /// 5,000 km do not fit at millimetre scale: refused before anything is
    /// written, with what to do, and nothing left behind.
    #[test]
    fn a_span_too_wide_for_one_file_is_refused_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        write_e57(&dir.path().join("local.e57"), 10, false, 0.0);
        write_e57(&dir.path().join("utm.e57"), 10, false, 5_000_000.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let input = json!({ "sources": ["local.e57", "utm.e57"], "merge_into": "site.las" });
        let e = plan_and_apply(&scope, input).1.unwrap_err();
        assert_eq!(e.code().as_str(), "invalid_input");
        assert!(e.to_string().contains("separate files"), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".e57"))
            .collect();
        assert!(names.is_empty(), "nothing left behind: {names:?}");
    }

    /// `thin_m` keeps the first point of each cube of that edge: as many
    /// points as the cubes they fill, counted here from the same
    /// coordinates; the plan says "up to"; an edge out of range and a span
    /// too wide to tell cubes apart are refused with nothing written.
    #[test]
    fn thinning_keeps_one_point_per_cube() {
        let dir = tempfile::tempdir().unwrap();
        write_e57(&dir.path().join("north.e57"), 2000, true, 512_000.0);
        write_e57(&dir.path().join("south.e57"), 500, true, 512_003.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let input = json!({ "sources": ["north.e57", "south.e57"], "merge_into": "site.laz", "thin_m": 0.1 });
        let (plan, out) = call(&scope, input);
        assert!(
            plan.summary
                .contains("up to 2500 points, thinned to one per 0.1 m cube"),
            "{}",
            plan.summary
        );
        let cubes: std::collections::HashSet<[i64; 3]> = [(2000, 512_000.0), (500, 512_003.0)]
            .into_iter()
            .flat_map(|(n, shift)| {
                (0..n).map(move |i| {
                    let f = i as f64;
                    [shift + f * 0.01, 5_400_000.0 + f * 0.02, f * 0.003].map(|v| (v / 0.1).floor() as i64)
                })
            })
            .collect();
        assert_eq!(out.points, cubes.len() as u64);
        assert!(out.points < 2500 / 3, "thinned: {}", out.points);
        let mut reader = las::Reader::from_path(dir.path().join("site.laz")).unwrap();
        assert_eq!(reader.header().number_of_points(), out.points);
        let kept: std::collections::HashSet<[i64; 3]> = points_of(&mut reader)
            .into_iter()
            .map(|p| {
                // The LAS millimetre grid can move a point across a cube's
                // edge by half a millimetre: look it up from its cube's middle.
                [p.x, p.y, p.z].map(|v| (v / 0.1).floor() as i64)
            })
            .collect();
        assert!(
            kept.len() as u64 >= out.points * 99 / 100,
            "one point per cube: {}",
            kept.len()
        );

        for edge in [0.0, -1.0, 1e6] {
            let input = json!({ "sources": ["north.e57"], "to": "las", "thin_m": edge });
            let e = ConvertE57ToLas.plan(&Context::new(&scope), &serde_json::from_value(input).unwrap());
            let e = e.unwrap_err();
            assert!(e.to_string().contains("thin_m"), "{e}");
        }
        write_e57(&dir.path().join("far.e57"), 10, false, 0.0);
        write_e57(&dir.path().join("farther.e57"), 10, false, 30_000.0);
        let input =
            json!({ "sources": ["far.e57", "farther.e57"], "merge_into": "wide.las", "thin_m": 0.01 });
        let e = plan_and_apply(&scope, input).1.unwrap_err();
        assert!(e.to_string().contains("choose a larger thin_m"), "{e}");
        assert!(!dir.path().join("wide.las").exists(), "nothing written");
    }

    #[test]
    fn laz_is_written_compressed_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        write_e57(&dir.path().join("north.e57"), 5_000, true, 0.0);
        write_e57(&dir.path().join("south.e57"), 5_000, true, 10.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let (plan, out) = call(&scope, json!({ "sources": ["north.e57"], "to": "laz" }));
        assert!(plan.summary.contains("into 1 LAZ file"), "{}", plan.summary);
        assert_eq!(out.points, 5_000);
        let (_, out) = call(
            &scope,
            json!({ "sources": ["north.e57", "south.e57"], "merge_into": "site.laz" }),
        );
        assert_eq!(out.points, 10_000);
        for name in ["north.laz", "site.laz"] {
            let path = dir.path().join(name);
            let mut reader = las::Reader::from_path(&path).unwrap();
            assert!(reader.header().point_format().is_compressed, "{name}");
            assert!(reader.header().date().is_some(), "{name} has a creation date");
            let first = points_of(&mut reader).swap_remove(0);
            assert!((first.y - 5_400_000.0).abs() < 0.001, "{name}: {first:?}");
            assert_eq!(first.color.unwrap().red, 65535);
        }
        let plain = std::fs::metadata(dir.path().join("north.e57")).unwrap().len();
        let laz = std::fs::metadata(dir.path().join("north.laz")).unwrap().len();
        assert!(laz < plain, "compressed: {laz} bytes against the E57's {plain}");
    }

    /// COPC: a LAZ 1.4 file whose chunks are the octree's nodes. Read
    /// node by node through the `las` crate's own COPC reader, every point
    /// of the LAZ conversion of the same scans is there once, in a node
    /// whose cube holds it, and the root is a sample of the whole.
    #[test]
    fn copc_holds_every_point_once_in_its_node() {
        const WKT: &str = r#"PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],UNIT["metre",1]]"#;
        let dir = tempfile::tempdir().unwrap();
        write_e57_in(
            &dir.path().join("north.e57"),
            150_000,
            true,
            500_000.0,
            Some(WKT),
            Some(1.4e9),
        );
        write_e57_in(
            &dir.path().join("south.e57"),
            120_000,
            true,
            500_900.0,
            Some(WKT),
            Some(1.4e9),
        );
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let sources = json!(["north.e57", "south.e57"]);
        let (plan, out) = call(
            &scope,
            json!({ "sources": sources, "merge_into": "site.copc.laz" }),
        );
        assert!(plan.summary.contains("into 1 COPC file"), "{}", plan.summary);
        assert_eq!(
            std::path::Path::new(&out.outputs[0].output).file_name().unwrap(),
            "site.copc.laz"
        );
        assert_eq!(out.points, 270_000);
        let (_, laz) = call(&scope, json!({ "sources": sources, "merge_into": "site.laz" }));
        assert_eq!(laz.points, out.points);

        // The file is LAZ 1.4 with a chunk per node: read whole, its points
        // come node after node in the order of the chunks' offsets.
        let mut reader = las::Reader::from_path(dir.path().join("site.copc.laz")).unwrap();
        let header = reader.header().clone();
        assert_eq!(header.version(), las::Version::new(1, 4));
        assert_eq!(header.point_format().to_u8().unwrap(), 7, "colour and time");
        assert_eq!(header.number_of_points(), out.points);
        // The WKT record ends in a NUL, as LAS 1.4 asks.
        let wkt = header.get_wkt_crs_bytes().unwrap();
        assert_eq!(
            wkt.strip_suffix(b"\0").unwrap_or(wkt),
            WKT.as_bytes(),
            "the shared coordinate system"
        );
        assert!(
            header.vlrs()[0].is_copc_info(),
            "the COPC info record comes first"
        );
        let info = header.copc_info_vlr().unwrap();
        let mut entries: Vec<las::copc::Entry> = header
            .copc_hierarchy_evlr()
            .unwrap()
            .iter_entries()
            .map(|e| *e.unwrap())
            .filter(|e| e.point_count > 0)
            .collect();
        assert!(
            entries.len() > 1,
            "an octree, not one chunk: {} nodes",
            entries.len()
        );
        entries.sort_by_key(|e| e.offset);
        let points = points_of(&mut reader);
        let mut rest = &points[..];
        for entry in &entries {
            let (node, after) = rest.split_at(entry.point_count as usize);
            rest = after;
            let cube = entry.key.bounds(header.copc_info_vlr().unwrap());
            for p in node {
                // Half a millimetre of rounding either side of a face.
                let inside = |v: f64, lo: f64, hi: f64| v >= lo - 0.0005 && v <= hi + 0.0005;
                assert!(
                    inside(p.x, cube.min.x, cube.max.x)
                        && inside(p.y, cube.min.y, cube.max.y)
                        && inside(p.z, cube.min.z, cube.max.z),
                    "{p:?} lies outside its node {:?}",
                    entry.key
                );
            }
        }
        assert!(rest.is_empty(), "the nodes hold every point of the file");
        assert!(info.halfsize > 0.0 && info.spacing > 0.0);
        let root = entries
            .iter()
            .find(|e| e.key.l == 0)
            .expect("a root node with points");
        assert!(
            root.point_count > 0 && (root.point_count as u64) < out.points,
            "the root is a sample: {} points",
            root.point_count
        );
        let key = |p: &las::Point| {
            let c = p.color.unwrap();
            (
                [p.x, p.y, p.z].map(|v| (v * 1000.0).round() as i64),
                [c.red, c.green, c.blue, p.intensity],
                (p.gps_time.unwrap() * 1e6).round() as i64,
            )
        };
        let mut got: Vec<_> = points.iter().map(key).collect();
        let mut reader = las::Reader::from_path(dir.path().join("site.laz")).unwrap();
        let mut want: Vec<_> = points_of(&mut reader).iter().map(key).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "the COPC file holds the LAZ file's points, each once"
        );

        // One per scan, and the same refusals as the other formats.
        let (_, out) = call(&scope, json!({ "sources": ["north.e57"], "to": "copc" }));
        assert_eq!(
            std::path::Path::new(&out.outputs[0].output).file_name().unwrap(),
            "north.copc.laz"
        );
        let toolbox = crate::toolbox::toolbox();
        let cx = Context::new(&scope);
        let refused = |input| {
            toolbox
                .call(&cx, "convert_e57_to_las", Mode::Plan, input, None)
                .unwrap_err()
        };
        let e = refused(json!({ "sources": ["south.e57"], "merge_into": "site.copc.laz" }));
        assert_eq!(e.code().as_str(), "already_exists", "{e}");
        let e = refused(json!({ "sources": ["south.e57"], "merge_into": "x.copc.laz", "to": "laz" }));
        assert!(e.to_string().contains("x.copc.laz is COPC"), "{e}");
    }

    /// A call cancelled once every point is read stops the COPC writer's
    /// octree build, which runs after the last point, and leaves no file
    /// behind. The scan holds exactly one progress step of points (65,536):
    /// the cancel comes with the last point's report, so only the build can
    /// see it.
    #[test]
    fn a_copc_conversion_cancelled_during_its_octree_build_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write_e57(&dir.path().join("north.e57"), 65_536, true, 0.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let toolbox = crate::toolbox::toolbox();
        let input = json!({ "sources": ["north.e57"], "to": "copc" });
        let plan = plan_of(&toolbox, &Context::new(&scope), &input);
        let cancel = fusion_tools::Cancellation::new();
        let on_last = cancel.clone();
        let cx =
            Context::new(&scope)
                .with_cancellation(cancel)
                .with_progress(fusion_tools::ProgressSink::new(move |done, _, _| {
                    if done == 65_536 {
                        on_last.cancel();
                    }
                }));
        let e = apply_as_planned(&toolbox, &cx, input, &plan).unwrap_err();
        assert_eq!(e.code().as_str(), "cancelled", "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["north.e57"], "no output and no half-written file");
    }

    /// Writes `digits` over the first `recordCount` of the E57 file at
    /// `path` (the same number of digits), and seals the page again with
    /// its CRC, as a writer that miscounted would have: a header that
    /// disagrees with the binary section.
    fn miscount(path: &std::path::Path, digits: &str) {
        const PAGE: usize = 1024;
        let mut bytes = std::fs::read(path).unwrap();
        let attribute = b"recordCount=\"";
        let start = bytes
            .windows(attribute.len())
            .position(|w| w == attribute)
            .unwrap()
            + attribute.len();
        let end = start + digits.len();
        assert_eq!(bytes[end], b'"', "the count has {} digits", digits.len());
        bytes[start..end].copy_from_slice(digits.as_bytes());
        let page = start / PAGE * PAGE;
        let crc = crc32c::crc32c(&bytes[page..page + PAGE - 4]);
        bytes[page + PAGE - 4..page + PAGE].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(path, bytes).unwrap();
    }

    /// A header whose point count disagrees with its binary section: more
    /// points than the section holds fail when the section ends, naming
    /// the file, and leave nothing; fewer are what the file says it holds.
    #[test]
    fn a_point_count_the_data_does_not_hold_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        write_e57(&dir.path().join("over.e57"), 100, false, 0.0);
        miscount(&dir.path().join("over.e57"), "900");
        let (plan, applied) = plan_and_apply(&scope, json!({ "sources": ["over.e57"] }));
        assert!(plan.summary.contains(", 900 points,"), "{}", plan.summary);
        let e = applied.unwrap_err();
        assert_eq!(e.code().as_str(), "invalid_input", "{e}");
        assert!(
            e.to_string().contains("over.e57 is not a readable E57 file"),
            "{e}"
        );
        assert!(!dir.path().join("over.las").exists(), "nothing written");
        // The COPC writer, which holds the points until the last, is told
        // the set is incomplete and builds nothing.
        let (_, applied) = plan_and_apply(&scope, json!({ "sources": ["over.e57"], "to": "copc" }));
        assert!(
            applied
                .unwrap_err()
                .to_string()
                .contains("over.e57 is not a readable E57 file")
        );
        assert!(!dir.path().join("over.copc.laz").exists(), "nothing written");

        write_e57(&dir.path().join("under.e57"), 100, false, 0.0);
        miscount(&dir.path().join("under.e57"), "050");
        let (plan, out) = call(&scope, json!({ "sources": ["under.e57"] }));
        assert!(plan.summary.contains(", 50 points,"), "{}", plan.summary);
        assert_eq!(out.points, 50);
    }

    /// E57 timestamps count from the scan's start; LAS gets adjusted
    /// standard GPS time (GPS seconds − 10⁹), in point format 1 or 3 for
    /// LAS 1.2 and 6 or 7 for 1.4. A point whose time is marked invalid,
    /// or a scan without times merged with a timed one, gets 0.
    #[test]
    fn gps_time_is_kept() {
        const START: f64 = 1_400_000_000.25;
        const WKT: &str = r#"GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]"#;
        let dir = tempfile::tempdir().unwrap();
        write_e57_in(&dir.path().join("timed.e57"), 20, false, 0.0, None, Some(START));
        write_e57_in(
            &dir.path().join("color.e57"),
            20,
            true,
            1.0,
            Some(WKT),
            Some(START),
        );
        write_e57_in(&dir.path().join("untimed.e57"), 5, false, 2.0, None, None);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        call(
            &scope,
            json!({ "sources": ["timed.e57", "color.e57", "untimed.e57"] }),
        );
        call(
            &scope,
            json!({ "sources": ["timed.e57", "untimed.e57"], "merge_into": "both.laz" }),
        );
        let read = |name: &str| {
            let mut reader = las::Reader::from_path(dir.path().join(name)).unwrap();
            let header = reader.header().clone();
            let points = points_of(&mut reader);
            (header, points)
        };
        let expect = |i: usize| {
            if i % 7 == 6 {
                0.0
            } else {
                START - 1e9 + i as f64 * 0.001
            }
        };

        let (header, points) = read("timed.las");
        assert_eq!(header.point_format().to_u8().unwrap(), 1);
        assert_eq!(header.gps_time_type(), las::GpsTimeType::Standard);
        for (i, p) in points.iter().enumerate() {
            let t = p.gps_time.unwrap();
            assert!((t - expect(i)).abs() < 1e-6, "point {i}: {t}");
        }
        let (header, points) = read("color.las");
        assert_eq!(header.version(), las::Version::new(1, 4));
        assert_eq!(header.point_format().to_u8().unwrap(), 7);
        assert!((points[3].gps_time.unwrap() - expect(3)).abs() < 1e-6);
        let (header, _) = read("untimed.las");
        assert_eq!(header.point_format().to_u8().unwrap(), 0);
        let (header, points) = read("both.laz");
        assert_eq!(header.point_format().to_u8().unwrap(), 1);
        assert_eq!(points.len(), 25);
        assert!((points[1].gps_time.unwrap() - expect(1)).abs() < 1e-6);
        assert_eq!(points[24].gps_time, Some(0.0));
    }

    #[test]
    fn a_coordinate_system_the_scans_share_is_kept() {
        const UTM33: &str = r#"PROJCS["ETRS89 / UTM zone 33N",GEOGCS["ETRS89",DATUM["European_Terrestrial_Reference_System_1989",SPHEROID["GRS 1980",6378137,298.257222101]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],UNIT["metre",1],AUTHORITY["EPSG","25833"]]"#;
        let dir = tempfile::tempdir().unwrap();
        write_e57_in(&dir.path().join("north.e57"), 100, false, 0.0, Some(UTM33), None);
        write_e57_in(&dir.path().join("south.e57"), 100, false, 10.0, Some(UTM33), None);
        write_e57_in(
            &dir.path().join("local.e57"),
            100,
            false,
            20.0,
            Some("site grid, origin at the gate"),
            None,
        );
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        call(
            &scope,
            json!({ "sources": ["north.e57", "south.e57"], "merge_into": "utm.las" }),
        );
        let reader = las::Reader::from_path(dir.path().join("utm.las")).unwrap();
        assert_eq!(reader.header().version(), las::Version::new(1, 4));
        assert!(reader.header().has_wkt_crs());
        assert_eq!(reader.header().get_wkt_crs_bytes(), Some(UTM33.as_bytes()));
        // Scans that disagree (or one that is not WKT): no CRS rather than a wrong one.
        call(
            &scope,
            json!({ "sources": ["north.e57", "local.e57"], "merge_into": "mixed.las" }),
        );
        let reader = las::Reader::from_path(dir.path().join("mixed.las")).unwrap();
        assert_eq!(reader.header().version(), las::Version::new(1, 2));
        assert!(reader.header().get_wkt_crs_bytes().is_none());
    }

    #[test]
    fn the_output_format_is_never_guessed() {
        let dir = tempfile::tempdir().unwrap();
        write_e57(&dir.path().join("a.e57"), 10, false, 0.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let cx = Context::new(&scope);
        let toolbox = crate::toolbox::toolbox();
        for (input, says) in [
            (
                json!({ "sources": ["a.e57"], "merge_into": "site.txt" }),
                "must end in .las, .laz (compressed) or .copc.laz",
            ),
            (
                json!({ "sources": ["a.e57"], "merge_into": "site.copc" }),
                "must end in .las, .laz (compressed) or .copc.laz",
            ),
            (
                json!({ "sources": ["a.e57"], "merge_into": "site.las", "to": "laz" }),
                "leave `to` out",
            ),
            (json!({ "sources": ["a.e57"], "to": "ply" }), "unknown variant"),
        ] {
            let e = toolbox
                .call(&cx, "convert_e57_to_las", Mode::Plan, input.clone(), None)
                .unwrap_err();
            assert!(e.to_string().contains(says), "{input}: {e}");
        }
    }

    #[test]
    fn empty_scans_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write_e57(&dir.path().join("empty.e57"), 0, false, 0.0);
        write_e57(&dir.path().join("full.e57"), 20, false, 0.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let (_, out) = call(
            &scope,
            json!({ "sources": ["empty.e57", "full.e57"], "merge_into": "site.las" }),
        );
        assert_eq!(out.points, 20);
        // A COPC file has an octree: with no point there is none to build.
        let toolbox = crate::toolbox::toolbox();
        let cx = Context::new(&scope);
        let e = toolbox
            .call(
                &cx,
                "convert_e57_to_las",
                Mode::Plan,
                json!({ "sources": ["empty.e57"], "to": "copc" }),
                None,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("holds no valid points, and a COPC file needs at least one"),
            "{e}"
        );
    }

    #[test]
    fn refusals_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        write_e57(&dir.path().join("a.e57"), 10, false, 0.0);
        std::fs::write(dir.path().join("a.las"), "old").unwrap();
        std::fs::write(dir.path().join("fake.e57"), "not an e57").unwrap();
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let mut toolbox = Toolbox::new();
        toolbox.add_mutating(ConvertE57ToLas);
        let cx = Context::new(&scope);
        let plan = |input| {
            toolbox
                .call(&cx, "convert_e57_to_las", Mode::Plan, input, None)
                .unwrap_err()
        };
        assert_eq!(
            plan(json!({ "sources": ["a.e57"] })).code().as_str(),
            "already_exists"
        );
        let e = plan(json!({ "sources": ["fake.e57"] }));
        assert!(e.to_string().contains("not a readable E57 file"), "{e}");
        assert_eq!(plan(json!({ "sources": [] })).code().as_str(), "invalid_input");
        assert_eq!(
            plan(json!({ "sources": ["../x.e57"] })).code().as_str(),
            "outside_scope"
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("a.las")).unwrap(), "old");
    }
}
