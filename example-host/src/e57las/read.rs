//! Reading scans: how many points a plan can promise, how each point is
//! timed, and the coordinate system the scans share.

use std::io::BufReader;

use fusion_tools::{Context, Location, Result};

use super::decode::samples;
use super::e57_error;

/// The open inputs, each with where it lies.
pub(super) type Readers<'s> = Vec<(Location<'s>, e57::E57Reader<BufReader<std::fs::File>>)>;

/// Records a plan decodes to count the points of scans whose headers
/// cannot say (seconds of decoding, not minutes); past it, the plan says
/// "up to".
pub(crate) const PLAN_DECODE_RECORDS: u64 = 10_000_000;

/// A file's points, as the conversion will write them, and whether the
/// count is exact. A scan with coordinates and no invalid-state field has a
/// point per record (from its header, nothing decoded); one that can mark
/// records invalid or direction-only is decoded and counted while `budget`
/// (records) lasts, and counted as its records, not exactly, after.
pub(crate) fn scan_points(cx: &Context<'_>, loc: &Location<'_>, budget: &mut u64) -> Result<(u64, bool)> {
    use e57::RecordName as N;
    let (file, _) = loc.open_file()?;
    let mut reader = e57::E57Reader::new(BufReader::new(file)).map_err(|e| e57_error(loc, e))?;
    let (mut points, mut exact) = (0, true);
    for pc in reader.pointclouds() {
        let has = |name: N| pc.prototype.iter().any(|r| r.name == name);
        let cartesian = has(N::CartesianX) && has(N::CartesianY) && has(N::CartesianZ);
        let spherical = has(N::SphericalRange) && has(N::SphericalAzimuth) && has(N::SphericalElevation);
        let flagged = has(N::CartesianInvalidState) || has(N::SphericalInvalidState);
        if (cartesian || spherical) && !flagged || pc.records == 0 {
            points += pc.records;
        } else if pc.records <= *budget {
            *budget -= pc.records;
            for (i, point) in samples(loc, &mut reader, &pc)?.enumerate() {
                if i % 65_536 == 0 {
                    cx.checkpoint()?;
                }
                points += u64::from(point.map_err(|e| e57_error(loc, e))?.is_some());
            }
        } else {
            points += pc.records;
            exact = false;
        }
    }
    Ok((points, exact))
}

/// The coordinate system every scan of a job declares, when they all declare
/// the same one as WKT (E57's `coordinateMetadata`); scans that disagree, or
/// one without, leave the output without a CRS rather than a wrong one.
pub(super) fn shared_wkt(systems: &[Option<String>]) -> Option<String> {
    const WKT: [&str; 8] = [
        "PROJCS[",
        "GEOGCS[",
        "COMPD_CS[",
        "GEOCCS[",
        "PROJCRS[",
        "GEOGCRS[",
        "COMPOUNDCRS[",
        "GEODCRS[",
    ];
    let first = systems.first()?.as_ref()?;
    let is_wkt = WKT.iter().any(|k| first.to_ascii_uppercase().starts_with(k));
    (is_wkt && systems.iter().all(|s| s.as_ref() == Some(first))).then(|| first.clone())
}
