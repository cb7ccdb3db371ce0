#!/usr/bin/env python3
"""E57 files written by another library than the converter's own: pye57, on
libE57Format, the most common way point-cloud scripts write E57. The tests
make small fixtures with it and check each conversion point by point against
pye57's own reading of the scans (read_scan(transform=True)).

usage:
  e57-writers.py write DIR                      writes the fixtures, prints their names
  e57-writers.py write-dense DIR                writes dense.e57 (320,000 points), for COPC
  e57-writers.py check OUT.las SRC.e57 [...]    compares OUT with the scans, to the millimetre
  e57-writers.py thin-check OUT EDGE SRC.e57 [...]
                                                OUT holds one point per cube of EDGE metres the scans fill
  e57-writers.py copc-check OUT.copc.laz SRC.e57 [...]
                                                OUT is COPC that laspy's CopcReader reads: every point of
                                                the scans once, to the millimetre, found by its octree

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


def write_dense(folder: str) -> None:
    """dense.e57: two posed stations of 160,000 points each, more than one
    COPC node holds."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "dense.e57")
    if os.path.exists(path):
        os.remove(path)
    e57 = pye57.E57(path, mode="w")
    for k, (degrees, translation) in enumerate([(30.0, SITE), (150.0, SITE + [120.0, 40.0, 1.5])]):
        e57.write_scan_raw(
            scan(160_000, 10 + k),
            name=f"Dense {k + 1}",
            rotation=quaternion_z(degrees),
            translation=np.asarray(translation, dtype=float),
        )
    e57.close()
    print("dense.e57")


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


def scans_xyz(sources: list) -> np.ndarray:
    """Every point of the scans as pye57 reads them, posed, one row each."""
    parts = []
    for src in sources:
        e57 = pye57.E57(src)
        for i in range(e57.scan_count):
            parts.append(e57.read_scan(i, transform=True, ignore_missing_fields=True))
    return np.column_stack(
        [np.concatenate([p[k] for p in parts]) for k in ("cartesianX", "cartesianY", "cartesianZ")]
    )


def copc_check(output: str, sources: list) -> None:
    """The COPC file, read through laspy's CopcReader (lazrs): a LAS 1.4
    header with point format 6 or 7, the scans' points each once within a
    millimetre of pye57's reading, a root level that samples them, and
    spatial queries through the octree that miss no point."""
    from laspy.copc import Bounds, CopcReader

    want = scans_xyz(sources)
    with CopcReader.open(output) as reader:
        header = reader.header
        if str(header.version) != "1.4" or header.point_format.id not in (6, 7):
            sys.exit(f"{output}: LAS {header.version}, point format {header.point_format.id}; COPC is 1.4 with 6, 7 or 8")
        if header.point_count != len(want):
            sys.exit(f"{output}: the header counts {header.point_count} points, the scans hold {len(want)}")
        every = reader.query()
        got = np.column_stack([np.asarray(every.x), np.asarray(every.y), np.asarray(every.z)])
        if len(got) != len(want):
            sys.exit(f"{output}: the octree yields {len(got)} points, the scans hold {len(want)}")
        # Each point once: both sides on the file's grid, as one integer a
        # point, sorted, are the same list; a point rounded the other way
        # (pose applied in another order) may sit one step off.
        grid = lambda a: np.round((a - header.offsets) / header.scales).astype(np.int64)
        g, w = grid(got), grid(want)
        low = np.minimum(g.min(axis=0), w.min(axis=0))
        key = lambda a: ((a[:, 0] - low[0]) << 42) | ((a[:, 1] - low[1]) << 21) | (a[:, 2] - low[2])
        kg, kw = np.sort(key(g)), np.sort(key(w))
        extra, missing = np.setdiff1d(kg, kw), np.setdiff1d(kw, kg)
        if len(np.unique(kg)) != len(np.unique(kw)) or len(extra) != len(missing) or len(extra) > len(kw) // 1000:
            sys.exit(
                f"{output}: {len(extra)} points are not where pye57 reads them and {len(missing)} of its points "
                f"are missing ({len(kg) - len(np.unique(kg))} repeated, against {len(kw) - len(np.unique(kw))})"
            )
        unpack = lambda k: np.column_stack([k >> 42, (k >> 21) & 0x1FFFFF, k & 0x1FFFFF])
        for p in unpack(extra):
            if np.min(np.max(np.abs(unpack(missing) - p), axis=1)) > 1:
                sys.exit(f"{output}: a point at grid {p + low} is more than a step from every point pye57 reads")
        root = len(reader.level_query(0).x)
        # A cloud larger than any node holds is spread over levels, the root
        # a sample of the whole.
        if root == 0 or (len(want) > 200_000 and root >= len(want)):
            sys.exit(f"{output}: the root level holds {root} of {len(want)} points; it should sample them")
        # Queries through the hierarchy: a box per quarter of the extent finds
        # exactly the points inside it.
        lo, hi = got.min(axis=0), got.max(axis=0)
        mid = (lo + hi) / 2
        for qlo, qhi in (
            (lo, mid),
            (mid, hi),
            (np.array([lo[0], mid[1], lo[2]]), np.array([mid[0], hi[1], hi[2]])),
            (np.array([mid[0], lo[1], lo[2]]), np.array([hi[0], mid[1], hi[2]])),
        ):
            found = len(reader.query(bounds=Bounds(qlo, qhi)).x)
            inside = int(np.sum(np.all((got >= qlo - 0.0005) & (got <= qhi + 0.0005), axis=1)))
            if abs(found - inside) > max(2, inside // 10000):
                sys.exit(f"{output}: a query of {qlo} to {qhi} found {found} points, {inside} lie there")
    print(
        f"{output}: COPC format {header.point_format.id}, {len(want)} points, each once on the grid point where "
        f"pye57's reading lands ({len(extra)} a step off), {root} at the root, quarter queries complete"
    )


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "write-dense":
        write_dense(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "copc-check":
        copc_check(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 5 and sys.argv[1] == "thin-check":
        thin_check(sys.argv[2], float(sys.argv[3]), sys.argv[4:])
    else:
        sys.exit(__doc__)
