//! From a scan's raw records to the points a LAS file holds, in one pass.
//!
//! Each record is decoded once, by the `e57` crate's raw reader; what its
//! fields mean is decided here, field by field, because files in the field
//! carry optional fields absent, inconsistent or wrong: a header is read as
//! a hint, and a field that cannot be trusted falls back to the next best
//! source rather than refusing the scan (see `docs/TOOLS.md`).

use e57::{PointCloud, RecordDataType, RecordName, RecordValue};
use fusion_tools::{Error, Location, Result};

use super::e57_error;

/// The points of one scan, each record decoded once.
pub(super) struct Samples<'r, R: std::io::Read + std::io::Seek> {
    raw: e57::PointCloudReaderRaw<'r, R>,
    decoder: Decoder,
}

impl<R: std::io::Read + std::io::Seek> Iterator for Samples<'_, R> {
    /// A point, `None` for a record without a position, or why the record
    /// could not be read.
    type Item = e57::Result<Option<Sample>>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.raw.next()?.and_then(|values| self.decoder.decode(&values)))
    }
}

/// The points of `pc`, a scan of the file at `loc`.
pub(super) fn samples<'r, R: std::io::Read + std::io::Seek>(
    loc: &Location<'_>,
    reader: &'r mut e57::E57Reader<R>,
    pc: &PointCloud,
) -> Result<Samples<'r, R>> {
    let decoder = Decoder::new(pc).map_err(|why| {
        Error::invalid_input(
            "convert_e57_to_las",
            "sources",
            format!(
                "scan {} of {}: {why}; nothing was written",
                pc.name.as_deref().unwrap_or("(unnamed)"),
                loc.display()
            ),
        )
    })?;
    let raw = reader.pointcloud_raw(pc).map_err(|e| e57_error(loc, e))?;
    Ok(Samples { raw, decoder })
}

/// One point of a scan, posed, as the output takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Sample {
    pub(super) xyz: [f64; 3],
    /// 0 to 1, from the scan's intensity limits.
    pub(super) intensity: Option<f32>,
    /// 0 to 1 a channel; a scan with intensity and no colour gives grey.
    pub(super) color: Option<[f32; 3]>,
    /// Adjusted standard GPS time.
    pub(super) gps_time: Option<f64>,
}

/// A scan's pose: a rotation (its quaternion normalised) and a translation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Pose {
    rotation: [[f64; 3]; 3],
    translation: [f64; 3],
}

impl Pose {
    const IDENTITY: Pose = Pose {
        rotation: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        translation: [0.0; 3],
    };

    /// The pose a scan declares: none is the identity; a quaternion that is
    /// not of unit length (rounded by its writer) is normalised; one of
    /// length zero or not finite is no rotation at all, and refused.
    pub(super) fn of(pc: &PointCloud) -> Result<Pose, String> {
        let Some(t) = &pc.transform else {
            return Ok(Pose::IDENTITY);
        };
        let q = &t.rotation;
        let norm = (q.w * q.w + q.x * q.x + q.y * q.y + q.z * q.z).sqrt();
        let translation = [t.translation.x, t.translation.y, t.translation.z];
        if !(norm.is_finite() && norm > 1e-9) || translation.iter().any(|v| !v.is_finite()) {
            return Err(format!(
                "its pose is not a rotation and a translation (quaternion {} {} {} {}, translation {} {} {})",
                q.w, q.x, q.y, q.z, t.translation.x, t.translation.y, t.translation.z
            ));
        }
        let (w, x, y, z) = (q.w / norm, q.x / norm, q.y / norm, q.z / norm);
        Ok(Pose {
            rotation: [
                [
                    1.0 - 2.0 * (y * y + z * z),
                    2.0 * (x * y - w * z),
                    2.0 * (x * z + w * y),
                ],
                [
                    2.0 * (x * y + w * z),
                    1.0 - 2.0 * (x * x + z * z),
                    2.0 * (y * z - w * x),
                ],
                [
                    2.0 * (x * z - w * y),
                    2.0 * (y * z + w * x),
                    1.0 - 2.0 * (x * x + y * y),
                ],
            ],
            translation,
        })
    }

    /// `v` in the site's frame.
    pub(super) fn apply(&self, v: [f64; 3]) -> [f64; 3] {
        let r = &self.rotation;
        let row = |i: usize| r[i][0] * v[0] + r[i][1] * v[1] + r[i][2] * v[2] + self.translation[i];
        [row(0), row(1), row(2)]
    }
}

/// What maps a value onto 0–1.
#[derive(Debug, Clone, Copy)]
struct Range {
    min: f64,
    scale: f64,
}

impl Range {
    fn new(min: f64, max: f64) -> Option<Range> {
        (min.is_finite() && max.is_finite() && max > min).then(|| Range {
            min,
            scale: 1.0 / (max - min),
        })
    }

    /// The range to scale a field by: the scan's limits when they are a
    /// range (both given, finite, minimum below maximum); else the bounds of
    /// the field's type when it declares both; else 0 to 1 (floating-point
    /// values without bounds).
    fn of(limits: Option<(&Option<RecordValue>, &Option<RecordValue>)>, data_type: &RecordDataType) -> Range {
        let value = |v: &Option<RecordValue>| match v {
            Some(RecordValue::Double(d)) => Some(*d),
            Some(RecordValue::Single(s)) => Some(f64::from(*s)),
            Some(RecordValue::Integer(i)) => Some(*i as f64),
            Some(RecordValue::ScaledInteger(i)) => match data_type {
                RecordDataType::ScaledInteger { scale, offset, .. } => Some(*i as f64 * scale + offset),
                _ => Some(*i as f64),
            },
            None => None,
        };
        if let Some((min, max)) = limits
            && let (Some(min), Some(max)) = (value(min), value(max))
            && let Some(range) = Range::new(min, max)
        {
            return range;
        }
        let typed = match data_type {
            RecordDataType::Integer { min, max } => Range::new(*min as f64, *max as f64),
            RecordDataType::ScaledInteger {
                min,
                max,
                scale,
                offset,
            } => Range::new(*min as f64 * scale + offset, *max as f64 * scale + offset),
            RecordDataType::Single {
                min: Some(min),
                max: Some(max),
            } => Range::new(f64::from(*min), f64::from(*max)),
            RecordDataType::Double {
                min: Some(min),
                max: Some(max),
            } => Range::new(*min, *max),
            RecordDataType::Single { .. } | RecordDataType::Double { .. } => None,
        };
        typed.unwrap_or(Range { min: 0.0, scale: 1.0 })
    }

    fn unit(&self, v: f64) -> f32 {
        ((v - self.min) * self.scale).clamp(0.0, 1.0) as f32
    }
}

/// How the records of one scan become [`Sample`]s.
pub(super) struct Decoder {
    types: Vec<RecordDataType>,
    cartesian: Option<[usize; 3]>,
    cartesian_state: Option<usize>,
    spherical: Option<[usize; 3]>,
    spherical_state: Option<usize>,
    intensity: Option<(usize, Range)>,
    intensity_invalid: Option<usize>,
    color: Option<([usize; 3], [Range; 3])>,
    color_invalid: Option<usize>,
    time: Option<ScanTime>,
    pose: Pose,
}

impl Decoder {
    /// The decoder for `pc`, or why its pose cannot be applied.
    pub(super) fn new(pc: &PointCloud) -> Result<Decoder, String> {
        let find = |name: RecordName| pc.prototype.iter().position(|r| r.name == name);
        let three = |a, b, c| Some([find(a)?, find(b)?, find(c)?]);
        let types: Vec<RecordDataType> = pc.prototype.iter().map(|r| r.data_type.clone()).collect();
        let intensity = find(RecordName::Intensity).map(|i| {
            let limits = pc
                .intensity_limits
                .as_ref()
                .map(|l| (&l.intensity_min, &l.intensity_max));
            (i, Range::of(limits, &types[i]))
        });
        let color = three(
            RecordName::ColorRed,
            RecordName::ColorGreen,
            RecordName::ColorBlue,
        )
        .map(|at| {
            let l = pc.color_limits.as_ref();
            let ranges = [
                Range::of(l.map(|l| (&l.red_min, &l.red_max)), &types[at[0]]),
                Range::of(l.map(|l| (&l.green_min, &l.green_max)), &types[at[1]]),
                Range::of(l.map(|l| (&l.blue_min, &l.blue_max)), &types[at[2]]),
            ];
            (at, ranges)
        });
        Ok(Decoder {
            cartesian: three(
                RecordName::CartesianX,
                RecordName::CartesianY,
                RecordName::CartesianZ,
            ),
            cartesian_state: find(RecordName::CartesianInvalidState),
            spherical: three(
                RecordName::SphericalRange,
                RecordName::SphericalAzimuth,
                RecordName::SphericalElevation,
            ),
            spherical_state: find(RecordName::SphericalInvalidState),
            intensity,
            intensity_invalid: find(RecordName::IsIntensityInvalid),
            color,
            color_invalid: find(RecordName::IsColorInvalid),
            time: ScanTime::of(pc),
            pose: Pose::of(pc)?,
            types,
        })
    }

    /// The point one record holds, or `None` when it holds no position (an
    /// invalid or direction-only record).
    pub(super) fn decode(&self, values: &[RecordValue]) -> e57::Result<Option<Sample>> {
        let number = |i: usize| values[i].to_f64(&self.types[i]);
        // A state field says whether the coordinates are a position: 0 yes;
        // 1 (a direction only), 2 (none) or anything else, no.
        let valid = |state: Option<usize>| -> e57::Result<bool> {
            Ok(match state {
                Some(i) => number(i)? == 0.0,
                None => true,
            })
        };
        let local = match (self.cartesian, self.spherical) {
            (Some([x, y, z]), _) if valid(self.cartesian_state)? => [number(x)?, number(y)?, number(z)?],
            // A scanner's native form, used when it has no cartesian position.
            (_, Some([r, a, e])) if valid(self.spherical_state)? => {
                let (range, azimuth, elevation) = (number(r)?, number(a)?, number(e)?);
                let flat = range * elevation.cos();
                [
                    flat * azimuth.cos(),
                    flat * azimuth.sin(),
                    range * elevation.sin(),
                ]
            }
            _ => return Ok(None),
        };
        if local.iter().any(|v| !v.is_finite()) {
            return Ok(None);
        }
        let flagged = |at: Option<usize>| -> e57::Result<bool> {
            Ok(match at {
                Some(i) => number(i)? != 0.0,
                None => false,
            })
        };
        let intensity = match self.intensity {
            Some((i, range)) if !flagged(self.intensity_invalid)? => Some(range.unit(number(i)?)),
            _ => None,
        };
        let color = match &self.color {
            Some((at, ranges)) if !flagged(self.color_invalid)? => Some([
                ranges[0].unit(number(at[0])?),
                ranges[1].unit(number(at[1])?),
                ranges[2].unit(number(at[2])?),
            ]),
            // Grey from intensity for a point without colour of its own.
            _ => intensity.map(|i| [i; 3]),
        };
        Ok(Some(Sample {
            xyz: self.pose.apply(local),
            intensity,
            color,
            gps_time: self.time.as_ref().and_then(|t| t.of_record(values)),
        }))
    }
}

/// How a scan's points are timed: E57 `timeStamp` is seconds since the
/// scan's `acquisitionStart` (GPS seconds); LAS takes adjusted standard GPS
/// time, GPS seconds minus 10⁹. A scan with timestamps but no start has no
/// absolute time, and is written without one.
pub(super) struct ScanTime {
    /// `acquisitionStart` as adjusted standard GPS time.
    start: f64,
    /// Where `timeStamp` is in a raw record, and its type.
    field: usize,
    data_type: RecordDataType,
    /// Where `isTimeStampInvalid` is, when the scan has one.
    invalid: Option<(usize, RecordDataType)>,
}

impl ScanTime {
    pub(super) fn of(pc: &PointCloud) -> Option<ScanTime> {
        let start = pc.acquisition_start.as_ref()?.gps_time - 1e9;
        let find = |name: RecordName| {
            pc.prototype
                .iter()
                .position(|r| r.name == name)
                .map(|i| (i, pc.prototype[i].data_type.clone()))
        };
        let (field, data_type) = find(RecordName::TimeStamp)?;
        Some(ScanTime {
            start,
            field,
            data_type,
            invalid: find(RecordName::IsTimeStampInvalid),
        })
    }

    /// The time of one raw record, unless it is marked invalid.
    fn of_record(&self, values: &[RecordValue]) -> Option<f64> {
        if let Some((i, dt)) = &self.invalid
            && values.get(*i)?.to_f64(dt).ok()? != 0.0
        {
            return None;
        }
        Some(self.start + values.get(self.field)?.to_f64(&self.data_type).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rotation a quarter turn about the vertical, its quaternion written
    /// at twice unit length: normalised, it turns x into y.
    #[test]
    fn a_pose_rotates_then_translates() {
        let mut pc = e57::PointCloud::default();
        let half = std::f64::consts::FRAC_PI_4;
        pc.transform = Some(e57::Transform {
            rotation: e57::Quaternion {
                w: 2.0 * half.cos(),
                x: 0.0,
                y: 0.0,
                z: 2.0 * half.sin(),
            },
            translation: e57::Translation {
                x: 10.0,
                y: 20.0,
                z: 30.0,
            },
        });
        let p = Pose::of(&pc).unwrap().apply([1.0, 0.0, 2.0]);
        for (got, want) in p.iter().zip([10.0, 21.0, 32.0]) {
            assert!((got - want).abs() < 1e-12, "{p:?}");
        }
        pc.transform.as_mut().unwrap().rotation = e57::Quaternion {
            w: 0.0,
            x: 0.0,
            y: 0.0,
            z: 0.0,
        };
        assert!(Pose::of(&pc).unwrap_err().contains("not a rotation"));
    }

    /// Limits that are not a range fall back to the field's type; a float
    /// field without either is taken as 0 to 1.
    #[test]
    fn ranges_come_from_limits_then_the_type() {
        let int = RecordDataType::Integer { min: 0, max: 255 };
        let float = RecordDataType::Single { min: None, max: None };
        let (lo, hi) = (Some(RecordValue::Integer(100)), Some(RecordValue::Integer(200)));
        assert_eq!(Range::of(Some((&lo, &hi)), &int).unit(150.0), 0.5);
        // Minimum above maximum, as some writers put them: the type decides.
        assert_eq!(Range::of(Some((&hi, &lo)), &int).unit(51.0), 0.2);
        assert_eq!(Range::of(None, &int).unit(255.0), 1.0);
        assert_eq!(Range::of(None, &float).unit(0.25), 0.25);
        assert_eq!(Range::of(None, &float).unit(7.0), 1.0, "clamped");
        let bounded = RecordDataType::Single {
            min: Some(0.0),
            max: Some(2048.0),
        };
        assert_eq!(Range::of(None, &bounded).unit(512.0), 0.25);
    }

    /// A scanner's native record: spherical only, its range a scaled
    /// integer, with a state per record, an intensity whose limits are the
    /// wrong way round, and no colour (grey from intensity).
    #[test]
    fn spherical_records_become_points() {
        let record = |name, data_type| e57::Record { name, data_type };
        let double = RecordDataType::Double { min: None, max: None };
        let mut pc = PointCloud::default();
        pc.prototype = vec![
            record(
                RecordName::SphericalRange,
                RecordDataType::ScaledInteger {
                    min: 0,
                    max: 1 << 20,
                    scale: 0.001,
                    offset: 0.0,
                },
            ),
            record(RecordName::SphericalAzimuth, double.clone()),
            record(RecordName::SphericalElevation, double),
            record(
                RecordName::SphericalInvalidState,
                RecordDataType::Integer { min: 0, max: 2 },
            ),
            record(
                RecordName::Intensity,
                RecordDataType::Integer { min: 0, max: 4095 },
            ),
        ];
        pc.intensity_limits = Some(e57::IntensityLimits {
            intensity_min: Some(RecordValue::Integer(4095)),
            intensity_max: Some(RecordValue::Integer(0)),
        });
        let decoder = Decoder::new(&pc).unwrap();
        let values = |range: i64, state: i64| {
            [
                RecordValue::ScaledInteger(range),
                RecordValue::Double(std::f64::consts::FRAC_PI_2),
                RecordValue::Double(0.0),
                RecordValue::Integer(state),
                RecordValue::Integer(4095),
            ]
        };
        let p = decoder.decode(&values(10_000, 0)).unwrap().unwrap();
        assert!(
            p.xyz[0].abs() < 1e-9 && (p.xyz[1] - 10.0).abs() < 1e-9 && p.xyz[2].abs() < 1e-9,
            "{p:?}"
        );
        assert_eq!(p.intensity, Some(1.0));
        assert_eq!(p.color, Some([1.0; 3]), "grey from intensity");
        assert_eq!(p.gps_time, None);
        // A direction only (1), no position (2), or a state no writer
        // should use (7): no point.
        for state in [1, 2, 7] {
            assert_eq!(decoder.decode(&values(10_000, state)).unwrap(), None);
        }
    }
}
