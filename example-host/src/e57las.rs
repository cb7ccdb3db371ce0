//! `convert_e57_to_las`: E57 point clouds to LAS, natively (the `e57` and
//! `las` crates), one LAS per scan or all scans merged into one.
//!
//! Every path goes through the scope: scans are read through the root's
//! handle, and each LAS file is written beside its final name and renamed into
//! place only when complete.

use std::io::BufReader;

use fusion_tools::{
    Context, Effect, EffectOp, Error, Expectation, Location, Mode, MutateTool, PathState, Plan, Precondition,
    Result, ToolSpec, Toolbox,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The tool.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConvertE57ToLas;

/// Input of `convert_e57_to_las`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConvertInput {
    /// E57 files, or folders whose `.e57` files (at any depth) are converted.
    pub(crate) sources: Vec<String>,
    /// Merge every scan into this one LAS file. Without it each scan becomes
    /// `NAME.las` beside `NAME.e57`.
    #[serde(default)]
    pub(crate) merge_into: Option<String>,
}

/// One LAS file to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Job {
    /// The LAS file.
    pub(crate) output: String,
    /// The E57 files that go into it.
    pub(crate) sources: Vec<String>,
    /// Points, as the scans' headers count them.
    pub(crate) points: u64,
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
             intensity and colour when present) to LAS 1.2, one LAS per scan or merged into one file. \
             The plan lists each output with its point count; outputs must not exist yet.",
        )
    }

    fn plan(&self, cx: &Context<'_>, input: &ConvertInput) -> Result<(Plan, Vec<Job>)> {
        let scans = collect_scans(cx, &input.sources)?;
        let mut expect = Vec::new();
        for scan in &scans {
            let loc = cx.scope().resolve(scan)?;
            expect.push(Expectation {
                path: loc.display(),
                state: loc.state(cx, false)?,
            });
        }
        let jobs = jobs(cx, &scans, input.merge_into.as_deref())?;
        let mut effects = Vec::new();
        for job in &jobs {
            let out = cx.scope().resolve(&job.output)?;
            out.require_writable()?;
            if out.state(cx, false)? != PathState::Absent {
                return Err(Error::AlreadyExists {
                    path: out.path(),
                    hint: "move or delete it first, or choose merge_into",
                });
            }
            expect.push(Expectation {
                path: out.display(),
                state: PathState::Absent,
            });
            effects.push(Effect::new(EffectOp::CreateFile, out.display()));
        }
        let points: u64 = jobs.iter().map(|j| j.points).sum();
        let summary = format!(
            "convert {} E57 scan(s), {points} points, into {} LAS file(s)",
            scans.len(),
            jobs.len()
        );
        Ok((Plan::new(summary, effects, Precondition::new(expect)), jobs))
    }

    fn apply(&self, cx: &Context<'_>, _: &ConvertInput, jobs: Vec<Job>) -> Result<ConvertOutput> {
        let mut points = 0;
        for job in &jobs {
            points += convert(cx, job, &mut |_| {})?;
        }
        Ok(ConvertOutput {
            outputs: jobs,
            points,
        })
    }
}

/// The LAS files to write for `scans`: one beside each scan, or all merged
/// into `merge_into`. Point counts come from the scans' headers.
pub(crate) fn jobs(cx: &Context<'_>, scans: &[String], merge_into: Option<&str>) -> Result<Vec<Job>> {
    let mut counted = Vec::new();
    for scan in scans {
        let loc = cx.scope().resolve(scan)?;
        counted.push((loc.display(), count_points(&loc)?));
    }
    Ok(match merge_into {
        Some(target) => vec![Job {
            output: cx.scope().resolve(target)?.display(),
            sources: counted.iter().map(|(s, _)| s.clone()).collect(),
            points: counted.iter().map(|(_, n)| n).sum(),
        }],
        None => counted
            .into_iter()
            .map(|(source, points)| Job {
                output: std::path::Path::new(&source)
                    .with_extension("las")
                    .display()
                    .to_string(),
                sources: vec![source],
                points,
            })
            .collect(),
    })
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
        match loc.state(cx, false)? {
            PathState::Directory { .. } => {
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
            PathState::File { .. } => scans.push(loc.display()),
            PathState::Absent => return Err(Error::NotFound { path: loc.path() }),
            _ => {
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

fn e57_error(loc: &Location<'_>, e: e57::Error) -> Error {
    Error::invalid_input(
        "convert_e57_to_las",
        "sources",
        format!("{} is not a readable E57 file: {e}", loc.display()),
    )
}

/// Points in a scan, from its header (nothing is decoded).
pub(crate) fn count_points(loc: &Location<'_>) -> Result<u64> {
    let (file, _) = loc.open_file()?;
    let reader = e57::E57Reader::new(BufReader::new(file)).map_err(|e| e57_error(loc, e))?;
    Ok(reader.pointclouds().iter().map(|pc| pc.records).sum())
}

/// Writes one LAS file from its scans; `progress` gets the points written so
/// far. Returns the points written.
pub(crate) fn convert(cx: &Context<'_>, job: &Job, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    let out = cx.scope().resolve(&job.output)?;
    let las_error = |e: las::Error| Error::Io {
        path: out.path(),
        source: std::io::Error::other(e),
    };

    let mut readers = Vec::new();
    let mut has_color = false;
    for source in &job.sources {
        let loc = cx.scope().resolve(source)?;
        let (file, _) = loc.open_file()?;
        let reader = e57::E57Reader::new(BufReader::new(file)).map_err(|e| e57_error(&loc, e))?;
        has_color |= reader.pointclouds().iter().any(|pc| pc.has_color());
        readers.push((loc, reader));
    }

    let pending = out.create_file(false)?;
    let mut writer: Option<las::Writer<std::io::BufWriter<std::fs::File>>> = None;
    let mut written = 0u64;
    for (loc, reader) in &mut readers {
        for pc in reader.pointclouds() {
            let iter = reader.pointcloud_simple(&pc).map_err(|e| e57_error(loc, e))?;
            for point in iter {
                let point = point.map_err(|e| e57_error(loc, e))?;
                let e57::CartesianCoordinate::Valid { x, y, z } = point.cartesian else {
                    continue;
                };
                if writer.is_none() {
                    // Offsets near the first point keep millimetre scale valid
                    // for projected coordinates (UTM northings are ~10^6 m).
                    let mut builder = las::Builder::from((1, 2));
                    builder.point_format =
                        las::point::Format::new(if has_color { 2 } else { 0 }).map_err(las_error)?;
                    builder.generating_software = "fusion-host".into();
                    let axis = |v: f64| las::Transform {
                        scale: 0.001,
                        offset: (v / 1000.0).round() * 1000.0,
                    };
                    builder.transforms = las::Vector {
                        x: axis(x),
                        y: axis(y),
                        z: axis(z),
                    };
                    let header = builder.into_header().map_err(las_error)?;
                    let file = std::io::BufWriter::new(pending.try_clone_file()?);
                    writer = Some(las::Writer::new(file, header).map_err(las_error)?);
                }
                let to_u16 = |v: f32| (v.clamp(0.0, 1.0) * 65535.0).round() as u16;
                let las_point = las::Point {
                    x,
                    y,
                    z,
                    intensity: point.intensity.map_or(0, to_u16),
                    color: has_color.then(|| {
                        let c = point.color.unwrap_or(e57::Color {
                            red: 0.0,
                            green: 0.0,
                            blue: 0.0,
                        });
                        las::Color::new(to_u16(c.red), to_u16(c.green), to_u16(c.blue))
                    }),
                    ..las::Point::default()
                };
                if let Some(w) = writer.as_mut() {
                    w.write_point(las_point).map_err(las_error)?;
                }
                written += 1;
                if written.is_multiple_of(65_536) {
                    cx.checkpoint()?;
                    progress(written);
                }
            }
        }
    }
    match writer.as_mut() {
        Some(w) => w.close().map_err(las_error)?,
        None => {
            return Err(Error::invalid_input(
                "convert_e57_to_las",
                "sources",
                "the scans hold no points with cartesian coordinates; nothing to convert",
            ));
        }
    }
    drop(writer);
    progress(written);
    pending.commit()?;
    Ok(written)
}

#[cfg(test)]
pub(crate) mod tests {
    use fusion_tools::{Access, Scope};

    use super::*;

    /// Writes a small E57 file with `n` points (cartesian, intensity, and
    /// colour when asked), the way a scanner's export would.
    pub(crate) fn write_e57(path: &std::path::Path, n: usize, color: bool, shift: f64) {
        use e57::{Record, RecordDataType, RecordName, RecordValue};
        let mut writer = e57::E57Writer::from_file(path, "test-guid").unwrap();
        let double = RecordDataType::Double { min: None, max: None };
        let mut prototype = vec![
            Record {
                name: RecordName::CartesianX,
                data_type: double.clone(),
            },
            Record {
                name: RecordName::CartesianY,
                data_type: double.clone(),
            },
            Record {
                name: RecordName::CartesianZ,
                data_type: double,
            },
            Record {
                name: RecordName::Intensity,
                data_type: RecordDataType::Single {
                    min: Some(0.0),
                    max: Some(1.0),
                },
            },
        ];
        if color {
            for name in [
                RecordName::ColorRed,
                RecordName::ColorGreen,
                RecordName::ColorBlue,
            ] {
                prototype.push(Record {
                    name,
                    data_type: RecordDataType::Integer { min: 0, max: 255 },
                });
            }
        }
        let mut pc = writer.add_pointcloud(&format!("pc-{shift}"), prototype).unwrap();
        for i in 0..n {
            let f = i as f64;
            let mut values = vec![
                RecordValue::Double(shift + f * 0.01),
                RecordValue::Double(5_400_000.0 + f * 0.02),
                RecordValue::Double(f * 0.003),
                RecordValue::Single((i % 100) as f32 / 99.0),
            ];
            if color {
                values.extend([
                    RecordValue::Integer(255),
                    RecordValue::Integer((i % 256) as i64),
                    RecordValue::Integer(0),
                ]);
            }
            pc.add_point(values).unwrap();
        }
        pc.finalize().unwrap();
        writer.finalize().unwrap();
    }

    fn call(scope: &Scope, input: serde_json::Value) -> (Plan, ConvertOutput) {
        let mut toolbox = Toolbox::new();
        toolbox.add_mutating(ConvertE57ToLas);
        let cx = Context::new(scope);
        let fusion_tools::Outcome::Plan(plan) = toolbox
            .call(&cx, "convert_e57_to_las", Mode::Plan, input.clone(), None)
            .unwrap()
        else {
            panic!("expected a plan")
        };
        let out = toolbox
            .call(
                &cx,
                "convert_e57_to_las",
                Mode::Apply,
                input,
                Some(&plan.precondition),
            )
            .unwrap();
        (plan, serde_json::from_value(out.into_value()).unwrap())
    }

    #[test]
    fn converts_each_scan_and_the_points_read_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scans")).unwrap();
        write_e57(&dir.path().join("scans/north.e57"), 2500, true, 600_000.0);
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let (plan, out) = call(&scope, json!({ "sources": ["scans"] }));
        assert!(plan.summary.contains("2500 points"), "{}", plan.summary);
        assert_eq!(out.points, 2500);

        let mut reader = las::Reader::from_path(dir.path().join("scans/north.las")).unwrap();
        let points: Vec<las::Point> = reader.points().map(|p| p.unwrap()).collect();
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
