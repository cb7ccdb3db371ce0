//! E57 files for the converter's tests and bench, written with the `e57`
//! crate the way a scanner's export is: scans of cartesian points with the
//! optional fields asked for. Shared by the unit tests (`src/e57las`), the
//! command-line tests and `benches/convert.rs`.
#![allow(dead_code)]

use std::path::Path;

use e57::{DateTime, E57Writer, Record, RecordDataType, RecordName, RecordValue};

/// The optional fields every point of a scan carries.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fields {
    /// Intensity, 0 to 1.
    pub(crate) intensity: bool,
    /// Colour, 0 to 255 per channel.
    pub(crate) color: bool,
    /// A timestamp (seconds from the scan's acquisition start).
    pub(crate) time: bool,
    /// With `time`: an `isTimeStampInvalid` flag per point.
    pub(crate) time_invalid: bool,
    /// A `cartesianInvalidState` per point (0 valid, 2 no position).
    pub(crate) invalid_state: bool,
}

/// One point's values; those of fields a scan lacks are not written.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Point {
    pub(crate) xyz: [f64; 3],
    pub(crate) intensity: f32,
    pub(crate) rgb: [i64; 3],
    pub(crate) time: f64,
    pub(crate) time_invalid: bool,
    pub(crate) invalid_state: i64,
}

/// One scan: `points` points, point `i` made by `point(i)`.
pub(crate) struct Scan<'a> {
    pub(crate) name: String,
    pub(crate) fields: Fields,
    /// The scan's `acquisitionStart`, GPS seconds.
    pub(crate) acquisition_start: Option<f64>,
    /// The station's pose: the points are written in its frame.
    pub(crate) pose: Option<e57::Transform>,
    pub(crate) points: usize,
    pub(crate) point: &'a dyn Fn(usize) -> Point,
}

/// Writes `scans` to `path`, with `crs` as the file's `coordinateMetadata`.
pub(crate) fn write(path: &Path, crs: Option<&str>, scans: &[Scan<'_>]) {
    let mut writer = E57Writer::from_file(path, "test-guid").expect("an E57 writer");
    writer.set_coordinate_metadata(crs.map(str::to_string));
    for scan in scans {
        let mut pc = writer
            .add_pointcloud(&scan.name, prototype(scan.fields))
            .expect("a point cloud");
        pc.set_transform(scan.pose.clone());
        pc.set_acquisition_start(scan.acquisition_start.map(|gps_time| DateTime {
            gps_time,
            atomic_reference: true,
        }));
        for i in 0..scan.points {
            pc.add_point(values(scan.fields, &(scan.point)(i)))
                .expect("a point");
        }
        pc.finalize().expect("the point cloud finalized");
    }
    writer.finalize().expect("the E57 file finalized");
}

fn prototype(fields: Fields) -> Vec<Record> {
    let double = RecordDataType::Double { min: None, max: None };
    let mut records: Vec<Record> = [
        RecordName::CartesianX,
        RecordName::CartesianY,
        RecordName::CartesianZ,
    ]
    .into_iter()
    .map(|name| Record {
        name,
        data_type: double.clone(),
    })
    .collect();
    if fields.invalid_state {
        records.push(Record {
            name: RecordName::CartesianInvalidState,
            data_type: RecordDataType::Integer { min: 0, max: 2 },
        });
    }
    if fields.intensity {
        records.push(Record {
            name: RecordName::Intensity,
            data_type: RecordDataType::Single {
                min: Some(0.0),
                max: Some(1.0),
            },
        });
    }
    if fields.color {
        for name in [
            RecordName::ColorRed,
            RecordName::ColorGreen,
            RecordName::ColorBlue,
        ] {
            records.push(Record {
                name,
                data_type: RecordDataType::Integer { min: 0, max: 255 },
            });
        }
    }
    if fields.time {
        records.push(Record {
            name: RecordName::TimeStamp,
            data_type: double,
        });
        if fields.time_invalid {
            records.push(Record {
                name: RecordName::IsTimeStampInvalid,
                data_type: RecordDataType::Integer { min: 0, max: 1 },
            });
        }
    }
    records
}

fn values(fields: Fields, p: &Point) -> Vec<RecordValue> {
    let mut values: Vec<RecordValue> = p.xyz.iter().map(|&v| RecordValue::Double(v)).collect();
    if fields.invalid_state {
        values.push(RecordValue::Integer(p.invalid_state));
    }
    if fields.intensity {
        values.push(RecordValue::Single(p.intensity));
    }
    if fields.color {
        values.extend(p.rgb.iter().map(|&c| RecordValue::Integer(c)));
    }
    if fields.time {
        values.push(RecordValue::Double(p.time));
        if fields.time_invalid {
            values.push(RecordValue::Integer(i64::from(p.time_invalid)));
        }
    }
    values
}
