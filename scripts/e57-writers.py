#!/usr/bin/env python3
"""E57 files written by another library than the converter's own: pye57, on
libE57Format, the most common way point-cloud scripts write E57. The tests
make small fixtures with it and check each conversion point by point against
pye57's own reading of the scans (read_scan(transform=True)).

usage:
  e57-writers.py write DIR                      writes the fixtures, prints their names
  e57-writers.py check OUT.las SRC.e57 [...]    compares OUT with the scans, to the millimetre
  e57-writers.py thin-check OUT EDGE SRC.e57 [...]
                                                OUT holds one point per cube of EDGE metres the scans fill

Needs pye57, laspy with lazrs, and numpy (pip install pye57 'laspy[lazrs]').
"""
import math
import os
import sys

import laspy
import numpy as np
import pye57

# A site in UTM coordinates: what georeferenced scans carry.
SITE = np.array([512352.0, 5401245.0, 148.0])


def quaternion_z(degrees: float) -> np.ndarray:
    """A rotation about the vertical axis, as E57's (w, x, y, z)."""
    half = math.radians(degrees) / 2
    return np.array([math.cos(half), 0.0, 0.0, math.sin(half)])


def scan(n: int, seed: int, invalid_every: int = 0) -> dict:
    """A room-sized scan around its station, with intensity and colour."""
    rng = np.random.default_rng(seed)
    data = {
        "cartesianX": rng.uniform(-25, 25, n),
        "cartesianY": rng.uniform(-25, 25, n),
        "cartesianZ": rng.uniform(-2, 12, n),
        "intensity": rng.uniform(0.05, 0.95, n).astype("f"),
        "colorRed": rng.integers(0, 256, n).astype("B"),
        "colorGreen": rng.integers(0, 256, n).astype("B"),
        "colorBlue": rng.integers(0, 256, n).astype("B"),
    }
    if invalid_every:
        state = np.zeros(n, dtype="b")
        state[::invalid_every] = 1
        data["cartesianInvalidState"] = state
    return data


def write(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    fixtures = {
        # One posed scan: pye57 writes its bounds already posed, so a rotated
        # scan's xMinimum can exceed its xMaximum.
        "posed.e57": [(40.0, SITE, 1)],
        # Three stations a few hundred metres apart, one with invalid points.
        "site.e57": [(0.0, SITE, 2), (95.0, SITE + [310.0, -120.0, 2.5], 3), (200.0, SITE + [-80.0, 260.0, -1.0], 4)],
        # No pose worth the name: local coordinates.
        "local.e57": [(0.0, np.zeros(3), 5)],
    }
    for name, stations in fixtures.items():
        path = os.path.join(folder, name)
        if os.path.exists(path):
            os.remove(path)
        e57 = pye57.E57(path, mode="w")
        for k, (degrees, translation, seed) in enumerate(stations):
            e57.write_scan_raw(
                scan(4000 + 500 * k, seed, invalid_every=7 if k == 1 else 0),
                name=f"Station {k + 1}",
                rotation=quaternion_z(degrees),
                translation=np.asarray(translation, dtype=float),
            )
        e57.close()
        print(name)


def check(output: str, sources: list) -> None:
    las = laspy.read(output)
    parts = []
    for src in sources:
        e57 = pye57.E57(src)
        for i in range(e57.scan_count):
            parts.append(e57.read_scan(i, colors=True, transform=True, ignore_missing_fields=True))
    want = {k: np.concatenate([p[k] for p in parts]) for k in ("cartesianX", "cartesianY", "cartesianZ")}
    n = len(want["cartesianX"])
    if len(las.x) != n:
        sys.exit(f"{output}: {len(las.x)} points, the scans hold {n}")
    worst = max(
        float(np.max(np.abs(np.asarray(got) - want[axis])))
        for got, axis in ((las.x, "cartesianX"), (las.y, "cartesianY"), (las.z, "cartesianZ"))
    )
    if worst > 0.001:
        sys.exit(f"{output}: a coordinate is {worst:.4f} m from where pye57 reads it (more than 1 mm)")
    if all("colorRed" in p for p in parts):
        red = np.concatenate([p["colorRed"] for p in parts]).astype(np.int64) * 257
        off = int(np.max(np.abs(np.asarray(las.red, dtype=np.int64) - red)))
        if off > 1:
            sys.exit(f"{output}: a red value is {off} from the scan's")
    print(f"{output}: {n} points, every one within {worst * 1000:.2f} mm of pye57's reading")


def thin_check(output: str, edge: float, sources: list) -> None:
    """The thinned output holds one point per cube of `edge` that pye57's
    reading of the sources fills."""
    las = laspy.read(output)
    parts = []
    for src in sources:
        e57 = pye57.E57(src)
        for i in range(e57.scan_count):
            parts.append(e57.read_scan(i, transform=True, ignore_missing_fields=True))
    xyz = np.column_stack(
        [np.concatenate([p[k] for p in parts]) for k in ("cartesianX", "cartesianY", "cartesianZ")]
    )
    cubes = len(np.unique(np.floor(xyz / edge).astype(np.int64), axis=0))
    kept = len(las.x)
    # A point within a rounding error of a cube's face may fall either side.
    if abs(kept - cubes) > max(1, cubes // 1000):
        sys.exit(f"{output}: {kept} points, but pye57's reading fills {cubes} cubes of {edge} m")
    got = np.column_stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)])
    distinct = len(np.unique(np.floor(got / edge).astype(np.int64), axis=0))
    if distinct < kept * 0.99:
        sys.exit(f"{output}: {kept} points in only {distinct} cubes of {edge} m")
    print(f"{output}: {kept} points, one per cube of {edge} m that pye57's reading fills ({cubes})")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 5 and sys.argv[1] == "thin-check":
        thin_check(sys.argv[2], float(sys.argv[3]), sys.argv[4:])
    else:
        sys.exit(__doc__)
