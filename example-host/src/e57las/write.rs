//! Writing one LAS or LAZ file from its scans, atomically.

use std::io::BufReader;

use fusion_tools::{Context, Error, Location, Result};

use super::decode::{ScanTime, samples};
use super::e57_error;
use super::offsets::{Extent, fits, header_extents, scan_extent};
use super::read::{Readers, shared_wkt};
use super::{Job, OutputFormat};

/// Writes one LAS file from its scans; `progress` gets the points written so
/// far. Returns the points written.
pub(crate) fn convert(cx: &Context<'_>, job: &Job, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    let out = cx.scope().resolve(&job.output)?;

    let mut readers = Vec::new();
    let (mut has_color, mut has_time) = (false, false);
    let mut systems = Vec::new();
    for source in &job.sources {
        let loc = cx.scope().resolve(source)?;
        let (file, _) = loc.open_file()?;
        let reader = e57::E57Reader::new(BufReader::new(file)).map_err(|e| e57_error(&loc, e))?;
        has_color |= reader.pointclouds().iter().any(|pc| pc.has_color());
        has_time |= reader.pointclouds().iter().any(|pc| ScanTime::of(pc).is_some());
        systems.push(reader.coordinate_metadata().map(str::trim).map(str::to_string));
        readers.push((loc, reader));
    }
    let crs = shared_wkt(&systems);

    // Scale and offsets before anything is written. Headers' bounds are a
    // hint that saves reading every scan twice; files in the wild carry them
    // in the scan's frame, already posed, or with minimum above maximum, so
    // a hint that is absent, inconsistent or wrong (a point outside it, or a
    // span too wide to hold) falls back to the extent of the points
    // themselves, and only that can refuse a job.
    let hinted = header_extents(cx, &readers)?;
    let mut reported = 0u64;
    let mut report = |n: u64| {
        // Progress only ever grows, across a second attempt too.
        if n > reported {
            reported = n;
            progress(n);
        }
    };
    let target = Target {
        out: &out,
        crs: crs.as_deref(),
        color: has_color,
        time: has_time,
        // The plan's count is exact or an upper bound: never fewer than
        // will be written.
        points: job.points,
        thin_m: job.thin_m,
        format: OutputFormat::of(&job.output).unwrap_or(OutputFormat::Las),
    };
    if let Some(extent) = hinted
        && let Ok(transforms) = extent.transforms(&job.sources)
    {
        match write_las(cx, &target, &mut readers, &transforms, &mut report)? {
            Written::All(n) => return Ok(n),
            Written::Outside => {
                tracing::info!(output = %out.display(), "a scan's header bounds do not hold its points; taking the extent from the points");
            }
        }
    }
    let mut extent = Extent::empty();
    for (loc, reader) in &mut readers {
        for pc in reader.pointclouds() {
            cx.checkpoint()?;
            scan_extent(loc, reader, &pc, &mut extent)?;
        }
    }
    if extent.is_empty() {
        return Err(Error::invalid_input(
            "convert_e57_to_las",
            "sources",
            "the scans hold no points with cartesian coordinates; nothing to convert",
        ));
    }
    let transforms = extent.transforms(&job.sources)?;
    match write_las(cx, &target, &mut readers, &transforms, &mut report)? {
        Written::All(n) => Ok(n),
        Written::Outside => Err(Error::Io {
            path: out.path(),
            source: std::io::Error::other("a point lies outside the extent read from the same scans"),
        }),
    }
}

/// The file a job writes, and what its points carry.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub(super) out: &'a Location<'a>,
    /// The coordinate system the scans share, as WKT.
    pub(super) crs: Option<&'a str>,
    pub(super) color: bool,
    pub(super) time: bool,
    /// At most this many points will be written.
    pub(super) points: u64,
    /// Keep one point per cube of this edge, in metres.
    pub(super) thin_m: Option<f64>,
    pub(super) format: OutputFormat,
}

/// The cubes of `thin_m` that already hold a point, each packed into 63
/// bits relative to the first point's cube (21 bits an axis: a million
/// cubes either way, 10 km at 1 cm).
struct Cubes {
    edge: f64,
    origin: Option<[i64; 3]>,
    taken: std::collections::HashSet<u64>,
}

impl Cubes {
    const HALF: i64 = 1 << 20;

    fn new(edge: f64) -> Cubes {
        Cubes {
            edge,
            origin: None,
            taken: std::collections::HashSet::new(),
        }
    }

    /// Whether the point is the first in its cube; `None` when it lies too
    /// far from the first point to be told apart at this edge.
    fn first(&mut self, p: [f64; 3]) -> Option<bool> {
        let cube = p.map(|v| (v / self.edge).floor() as i64);
        let origin = *self.origin.get_or_insert(cube);
        let mut key = 0u64;
        for axis in 0..3 {
            let d = cube[axis] - origin[axis] + Cubes::HALF;
            if !(0..2 * Cubes::HALF).contains(&d) {
                return None;
            }
            key = (key << 21) | d as u64;
        }
        Some(self.taken.insert(key))
    }
}

/// LAS's version and point format for an output: 1.2 (formats 0–3, which
/// every reader takes) unless the output needs 1.4 (formats 6 and 7) for a
/// coordinate system as WKT, or for more points than 1.2's 32-bit count
/// holds (2³² − 1; 1.4 counts in 64 bits).
pub(super) fn layout(crs: bool, time: bool, color: bool, points: u64) -> ((u8, u8), u8) {
    if crs || points > u64::from(u32::MAX) {
        ((1, 4), if color { 7 } else { 6 })
    } else {
        let format = match (time, color) {
            (false, false) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (true, true) => 3,
        };
        ((1, 2), format)
    }
}

/// Points handed to the LAS writer at once: one LAZ chunk (50,000 points)
/// per core, at most eight, so every core compresses one. 2 MiB a core of
/// [`Kept`] points waiting.
fn batch_points() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    cores * 50_000
}

/// A point on its way to the writer, in 40 bytes (a `las::Point` takes
/// three times that): the writer's thread makes the record of it, next to
/// compressing, while this one decodes the next.
#[derive(Debug, Clone, Copy)]
struct Kept {
    xyz: [f64; 3],
    intensity: u16,
    rgb: [u16; 3],
    gps_time: f64,
}

impl Kept {
    fn las(self, color: bool, time: bool) -> las::Point {
        let [x, y, z] = self.xyz;
        let [red, green, blue] = self.rgb;
        las::Point {
            x,
            y,
            z,
            intensity: self.intensity,
            color: color.then(|| las::Color::new(red, green, blue)),
            gps_time: time.then_some(self.gps_time),
            ..las::Point::default()
        }
    }

    fn copc(self) -> copc_core::LasPointRecord {
        let [x, y, z] = self.xyz;
        let [red, green, blue] = self.rgb;
        copc_core::LasPointRecord {
            x,
            y,
            z,
            intensity: self.intensity,
            red,
            green,
            blue,
            gps_time: self.gps_time,
            ..copc_core::LasPointRecord::default()
        }
    }
}

/// How a write ended.
pub(super) enum Written {
    /// Every point, committed.
    All(u64),
    /// A point the transforms cannot hold: nothing was kept.
    Outside,
}

/// Where the points go: a LAS or LAZ writer, or the COPC writer, which
/// takes them all (spilled to a private folder) before it builds the
/// octree there, and whose file is then copied into the pending output.
enum Sink {
    Las {
        writer: las::Writer<std::io::BufWriter<std::fs::File>>,
        points: las::PointDataBuilder,
    },
    Copc {
        staging: tempfile::TempDir,
        layout: copc_core::StreamingLayout,
        metadata: copc_writer::CopcWriteMetadata,
        output: std::fs::File,
    },
}

/// Stops the COPC writer when the call is cancelled or past its deadline,
/// or when reading the scans failed and its points are incomplete.
struct Stop<'a> {
    cx: &'a Context<'a>,
    abandoned: &'a std::sync::atomic::AtomicBool,
}

impl copc_core::CancelCheck for Stop<'_> {
    fn check(&self) -> copc_core::Result<()> {
        if self.abandoned.load(std::sync::atomic::Ordering::Relaxed) || self.cx.checkpoint().is_err() {
            return Err(copc_core::Error::Cancelled);
        }
        Ok(())
    }
}

/// Points per COPC octree node (one LAZ chunk): what viewers fetch at once.
const COPC_NODE_POINTS: u32 = 100_000;

/// Writes the output with `transforms`, atomically: the file appears whole,
/// or not at all.
pub(super) fn write_las(
    cx: &Context<'_>,
    target: &Target<'_>,
    readers: &mut Readers<'_>,
    transforms: &las::Vector<las::Transform>,
    progress: &mut dyn FnMut(u64),
) -> Result<Written> {
    let Target {
        out,
        crs,
        color: has_color,
        time: has_time,
        points: planned,
        thin_m,
        format: output_format,
    } = *target;
    let out_path = out.path();
    let las_error = |e: las::Error| Error::Io {
        path: out_path.clone(),
        source: std::io::Error::other(e),
    };
    let pending = out.create_file(false)?;
    let copc = output_format == OutputFormat::Copc;
    // COPC is LAS 1.4 with point format 6 or 7, whatever it holds.
    let (version, format) = if copc {
        ((1, 4), if has_color { 7 } else { 6 })
    } else {
        layout(crs.is_some(), has_time, has_color, planned)
    };
    let mut builder = las::Builder::from(version);
    builder.point_format = las::point::Format::new(format).map_err(las_error)?;
    let with_time = builder.point_format.has_gps_time;
    if has_time {
        builder.gps_time_type = las::GpsTimeType::Standard;
    }
    builder.generating_software = "fusion-host".into();
    builder.transforms = *transforms;
    builder.date = Some(chrono::Utc::now().date_naive());
    builder.point_format.is_compressed = output_format != OutputFormat::Las;
    let sink = if copc {
        let mut metadata = copc_writer::CopcWriteMetadata::default();
        metadata.wkt_crs = crs.map(str::to_string);
        metadata.gps_standard_time = has_time;
        metadata.system_identifier = Some("fusion-host".into());
        metadata.generating_software = Some("fusion-host".into());
        let [x, y, z] = [transforms.x, transforms.y, transforms.z];
        metadata.scale = Some((x.scale, y.scale, z.scale));
        metadata.offset = Some((x.offset, y.offset, z.offset));
        // The points wait, spilled, in a folder only this process uses, so
        // that nothing in the user's folders is opened by name.
        let staging = tempfile::Builder::new()
            .prefix("fusion-host-copc-")
            .tempdir()
            .map_err(|e| Error::io(&std::env::temp_dir(), e))?;
        Sink::Copc {
            staging,
            layout: copc_core::StreamingLayout::from_las_format(builder.point_format),
            metadata,
            output: pending.try_clone_file()?,
        }
    } else {
        let mut header = builder.into_header().map_err(las_error)?;
        if let Some(wkt) = crs {
            header.set_wkt_crs(wkt.as_bytes().to_vec()).map_err(las_error)?;
        }
        let points = las::PointDataBuilder::new().for_header(&header);
        let file = std::io::BufWriter::new(pending.try_clone_file()?);
        Sink::Las {
            writer: las::Writer::new(file, header).map_err(las_error)?,
            points,
        }
    };
    // Reading ahead of writing: this thread decodes the scans while another
    // writes (and, for LAZ, compresses) what was decoded before, in batches
    // of one LAZ chunk per core that the `laz` crate compresses on every
    // core. At most two batches wait between them.
    let (to_writer, batches) = std::sync::mpsc::sync_channel::<Vec<Kept>>(2);
    let abandoned = std::sync::atomic::AtomicBool::new(false);
    let stop = Stop {
        cx,
        abandoned: &abandoned,
    };
    let outcome = std::thread::scope(|scope| {
        let writing = scope.spawn(|| -> Result<()> {
            match sink {
                Sink::Las { mut writer, points } => {
                    for batch in batches {
                        let batch = points
                            .clone()
                            .build_from_points(batch.into_iter().map(|p| p.las(has_color, with_time)))
                            .map_err(las_error)?;
                        writer.write_points(&batch).map_err(las_error)?;
                    }
                    if !abandoned.load(std::sync::atomic::Ordering::Relaxed) {
                        writer.close().map_err(las_error)?;
                    }
                    Ok(())
                }
                Sink::Copc {
                    staging,
                    layout,
                    metadata,
                    mut output,
                } => {
                    let built = staging.path().join("points.copc.laz");
                    let records = batches.into_iter().flatten().map(|p| Ok(p.copc()));
                    copc_writer::write_streaming_with_cancel(
                        &built,
                        layout,
                        records,
                        &copc_writer::CopcWriterParams::new(COPC_NODE_POINTS),
                        &metadata,
                        staging.path(),
                        &stop,
                    )
                    .map_err(|e| match e {
                        copc_core::Error::Cancelled => cx.checkpoint().err().unwrap_or(Error::Cancelled),
                        copc_core::Error::Io { source, .. } => Error::io(staging.path(), source),
                        other => Error::Io {
                            path: out_path.clone(),
                            source: std::io::Error::other(other),
                        },
                    })?;
                    let mut built = std::fs::File::open(&built).map_err(|e| Error::io(&built, e))?;
                    std::io::copy(&mut built, &mut output).map_err(|e| Error::io(&out_path, e))?;
                    Ok(())
                }
            }
        });
        let decoded = (|| -> Result<Option<Written>> {
            let mut batch: Vec<Kept> = Vec::with_capacity(batch_points());
            let mut written = 0u64;
            let mut cubes = thin_m.map(Cubes::new);
            for (loc, reader) in readers.iter_mut() {
                for pc in reader.pointclouds() {
                    // A scan with no points may have no data section at all.
                    if pc.records == 0 {
                        continue;
                    }
                    for point in samples(loc, reader, &pc)? {
                        let Some(point) = point.map_err(|e| e57_error(loc, e))? else {
                            continue;
                        };
                        let [x, y, z] = point.xyz;
                        // A point the offsets cannot hold must not reach the LAS
                        // writer (it fails, and panics when dropped): the caller
                        // tries again with offsets from the points.
                        if !fits(transforms, [x, y, z]) {
                            return Ok(Some(Written::Outside));
                        }
                        if let Some(cubes) = &mut cubes {
                            match cubes.first([x, y, z]) {
                                Some(true) => {}
                                Some(false) => continue,
                                None => {
                                    return Err(Error::invalid_input(
                                        "convert_e57_to_las",
                                        "thin_m",
                                        format!(
                                            "the points of {} span more than {} cubes of {} m along an axis; \
                                             nothing was written: choose a larger thin_m",
                                            loc.display(),
                                            2 * Cubes::HALF,
                                            cubes.edge
                                        ),
                                    ));
                                }
                            }
                        }
                        let to_u16 = |v: f32| (v.clamp(0.0, 1.0) * 65535.0).round() as u16;
                        let kept = Kept {
                            xyz: [x, y, z],
                            intensity: point.intensity.map_or(0, to_u16),
                            rgb: point.color.unwrap_or([0.0; 3]).map(to_u16),
                            // A point without a time of its own gets 0.
                            gps_time: point.gps_time.unwrap_or(0.0),
                        };
                        // Never past what the plan counted: a 1.2 header's count
                        // would wrap, and the person approved that many.
                        if written == planned {
                            return Err(Error::InvalidInput {
                                tool: "convert_e57_to_las".into(),
                                field: "sources".into(),
                                message: format!(
                                    "{} holds more points than the plan counted ({planned}); nothing was written: plan again",
                                    loc.display()
                                ),
                            });
                        }
                        batch.push(kept);
                        if batch.len() == batch.capacity() {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_points()));
                            if to_writer.send(full).is_err() {
                                // The writer stopped: its error is what matters.
                                return Ok(None);
                            }
                        }
                        written += 1;
                        if written.is_multiple_of(65_536) {
                            cx.checkpoint()?;
                            progress(written);
                        }
                    }
                }
            }
            if written == 0 && copc {
                return Err(Error::invalid_input(
                    "convert_e57_to_las",
                    "sources",
                    "the scans hold no valid points; a COPC file needs at least one",
                ));
            }
            let _ = to_writer.send(batch);
            Ok(Some(Written::All(written)))
        })();
        // The writer learns whether what it got is whole before its input
        // ends: an incomplete set is dropped, not finished.
        if !matches!(decoded, Ok(Some(Written::All(_)))) {
            abandoned.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        drop(to_writer);
        let written = writing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (decoded, written)
    });
    let (decoded, written_out) = outcome;
    let written = match decoded {
        Ok(Some(Written::All(n))) => n,
        Ok(Some(Written::Outside)) => return Ok(Written::Outside),
        // The writer stopped first: its error is what matters.
        Ok(None) => {
            written_out?;
            unreachable!("the writer stopped without an error")
        }
        Err(e) => return Err(e),
    };
    written_out?;
    progress(written);
    pending.commit()?;
    Ok(Written::All(written))
}

#[cfg(test)]
mod tests {
    use super::layout;

    /// LAS 1.2 counts points in 32 bits: an output that may hold more is
    /// written as 1.4, whose count is 64 bits, never with a count that wraps.
    #[test]
    fn more_points_than_a_32_bit_count_take_las_1_4() {
        let most = u64::from(u32::MAX);
        assert_eq!(layout(false, true, true, most), ((1, 2), 3));
        assert_eq!(layout(false, true, true, most + 1), ((1, 4), 7));
        assert_eq!(layout(false, false, false, 5_000_000_000), ((1, 4), 6));
        // A coordinate system takes 1.4 whatever the count.
        assert_eq!(layout(true, false, true, 10), ((1, 4), 7));
        assert_eq!(layout(false, false, false, 10), ((1, 2), 0));
    }
}
