//! Offsets: the box every point of a job lies in, from the headers as a
//! hint or from the points themselves, and whether a point fits.

use fusion_tools::{Context, Error, Location, Result};

use super::decode::{Pose, samples};
use super::e57_error;
use super::read::Readers;

/// Millimetres: what survey deliverables are checked at.
pub(super) const SCALE: f64 = 0.001;

/// The box every point of a job lies in, in output coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Extent {
    min: [f64; 3],
    max: [f64; 3],
}

impl Extent {
    pub(super) fn empty() -> Self {
        Extent {
            min: [f64::INFINITY; 3],
            max: [f64::NEG_INFINITY; 3],
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.min[0] > self.max[0]
    }

    pub(super) fn add(&mut self, p: [f64; 3]) {
        for ((min, max), v) in self.min.iter_mut().zip(&mut self.max).zip(p) {
            *min = min.min(v);
            *max = max.max(v);
        }
    }

    pub(super) fn merge(&mut self, other: &Extent) {
        if !other.is_empty() {
            self.add(other.min);
            self.add(other.max);
        }
    }

    /// Offsets at the middle of each axis, at millimetre scale, or why the
    /// extent cannot be held that way.
    pub(super) fn transforms(&self, sources: &[String]) -> Result<las::Vector<las::Transform>> {
        let axis = |i: usize| las::Transform {
            scale: SCALE,
            offset: ((self.min[i] + self.max[i]) / 2.0).round(),
        };
        let transforms = las::Vector {
            x: axis(0),
            y: axis(1),
            z: axis(2),
        };
        if fits(&transforms, self.min) && fits(&transforms, self.max) {
            return Ok(transforms);
        }
        let span = |i: usize| (self.max[i] - self.min[i]) / 1000.0;
        Err(Error::invalid_input(
            "convert_e57_to_las",
            "merge_into",
            format!(
                "the scans span {:.0} km × {:.0} km × {:.0} km; at millimetre precision a LAS file holds at most \
                 {:.0} km along an axis. Scans in different coordinate systems (a georeferenced one and a local \
                 one, say) cannot share a file: convert them into separate files ({})",
                span(0),
                span(1),
                span(2),
                f64::from(u32::MAX) * SCALE / 1000.0,
                sources.join(", ")
            ),
        ))
    }
}

/// Whether `p` can be stored with `transforms` (LAS keeps 32-bit integers).
pub(super) fn fits(transforms: &las::Vector<las::Transform>, p: [f64; 3]) -> bool {
    [
        (&transforms.x, p[0]),
        (&transforms.y, p[1]),
        (&transforms.z, p[2]),
    ]
    .iter()
    .all(|(t, v)| {
        let n = ((v - t.offset) / t.scale).round();
        n.is_finite() && n >= f64::from(i32::MIN) && n <= f64::from(i32::MAX)
    })
}

/// The extent every scan's header claims, when each has bounds that are
/// finite and ordered (minimum ≤ maximum); `None` otherwise. A hint only.
pub(super) fn header_extents(cx: &Context<'_>, readers: &Readers<'_>) -> Result<Option<Extent>> {
    let mut extent = Extent::empty();
    for (_, reader) in readers.iter() {
        for pc in reader.pointclouds() {
            cx.checkpoint()?;
            match header_extent(&pc) {
                Some(e) => extent.merge(&e),
                None => return Ok(None),
            }
        }
    }
    Ok((!extent.is_empty()).then_some(extent))
}

/// A scan's extent from its header: the bounds' corners, posed. `None` when
/// the header lacks any bound or holds one that is not finite and ordered.
pub(super) fn header_extent(pc: &e57::PointCloud) -> Option<Extent> {
    if pc.records == 0 {
        return Some(Extent::empty());
    }
    let b = pc.cartesian_bounds.as_ref()?;
    let (xs, ys, zs) = ([b.x_min?, b.x_max?], [b.y_min?, b.y_max?], [b.z_min?, b.z_max?]);
    if [xs, ys, zs]
        .iter()
        .any(|[min, max]| !min.is_finite() || !max.is_finite() || min > max)
    {
        return None;
    }
    // A pose that is no rotation is refused when the points are read.
    let pose = Pose::of(pc).ok()?;
    let mut extent = Extent::empty();
    for x in xs {
        for y in ys {
            for z in zs {
                extent.add(pose.apply([x, y, z]));
            }
        }
    }
    Some(extent)
}

/// A scan's extent by reading its points, for a header without bounds.
pub(super) fn scan_extent<R: std::io::Read + std::io::Seek>(
    loc: &Location<'_>,
    reader: &mut e57::E57Reader<R>,
    pc: &e57::PointCloud,
    extent: &mut Extent,
) -> Result<()> {
    for point in samples(loc, reader, pc)? {
        if let Some(point) = point.map_err(|e| e57_error(loc, e))? {
            extent.add(point.xyz);
        }
    }
    Ok(())
}
