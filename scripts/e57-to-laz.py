#!/usr/bin/env python3
"""The reference converter for the E57 -> LAZ benchmark: pye57 (libE57Format)
reads every scan, laspy with the lazrs backend writes one LAZ file, point
format 2 (RGB) at millimetre scale: what a point-cloud user would script.

usage: e57-to-laz.py INPUT.e57 OUTPUT.laz

Prints one line of JSON: the points written, the seconds the work took
(reading and writing, without Python's start-up and imports), and the
versions of pye57, laspy and lazrs that did it.
"""
import json
import sys
import time
from importlib.metadata import version

import laspy
import numpy as np
import pye57


def main(src: str, dst: str) -> None:
    started = time.perf_counter()
    e57 = pye57.E57(src)
    parts = []
    for i in range(e57.scan_count):
        scan = e57.read_scan(i, intensity=True, colors=True, ignore_missing_fields=True)
        parts.append(scan)
    xs = np.concatenate([p["cartesianX"] for p in parts])
    ys = np.concatenate([p["cartesianY"] for p in parts])
    zs = np.concatenate([p["cartesianZ"] for p in parts])
    header = laspy.LasHeader(point_format=2, version="1.2")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.array([xs.min(), ys.min(), zs.min()])
    las = laspy.LasData(header)
    las.x, las.y, las.z = xs, ys, zs
    if all("intensity" in p for p in parts):
        las.intensity = (np.concatenate([p["intensity"] for p in parts]) * 65535).astype(np.uint16)
    if all("colorRed" in p for p in parts):
        for field, name in (("red", "colorRed"), ("green", "colorGreen"), ("blue", "colorBlue")):
            setattr(las, field, (np.concatenate([p[name] for p in parts]).astype(np.uint16) * 257))
    las.write(dst, laz_backend=laspy.LazBackend.Lazrs)
    work = time.perf_counter() - started
    print(json.dumps({
        "points": len(xs),
        "work_s": work,
        "versions": {name: version(name) for name in ("pye57", "laspy", "lazrs")},
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
