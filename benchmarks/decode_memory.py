"""Peak memory and time of decoding a 10,000 x 10,000 JPEG for the network (issue 23, case 8).

Makes a photo-like 100-megapixel JPEG (an example bird upscaled, with film grain, quality 92),
then decodes it in fresh processes, each repeated ``--repeats`` times (best time kept):

* ``decode_image(min_side=448)``: what ``lmp predict`` does now (JPEG draft mode: libjpeg's DCT
  scaling to 1/8, EXIF orientation, RGB), plus the network's resize to 448 x 448;
* ``load_rgb`` (full decode) + resize: what it did before (and what ``--vis-dir`` still does to draw).

Peak memory is the process's peak resident set size (``VmHWM`` of /proc/self/status, Linux) and
its increase over the same process after its imports. Targets (issue 23): under 1 GB and under 1 s.

    python benchmarks/decode_memory.py [--side 10000] [--repeats 3] [--keep /tmp/big.jpg]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
from lmpcli.data.io import decode_image, load_rgb
from PIL import Image
def hwm():  # peak resident set of this process, kB (VmHWM: unlike ru_maxrss, not inherited across exec)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
base = hwm()
best = float("inf")
for _ in range({repeats}):
    t = time.perf_counter()
    if {reduced}:
        d = decode_image({path!r}, min_side=448)
        im = d.image
    else:
        im = load_rgb({path!r})
    small = im.resize((448, 448), Image.BILINEAR, reducing_gap=None)
    best = min(best, time.perf_counter() - t)
    decoded = im.size
    del im, small
peak = hwm()
print(json.dumps({{"seconds": best, "peak_mb": peak / 1024, "increase_mb": (peak - base) / 1024,
                  "decoded": decoded}}))
"""


def make_jpeg(path: Path, side: int) -> None:
    import numpy as np
    from PIL import Image

    src = sorted((REPO / "examples").glob("*.jpg"))[0]
    im = Image.open(src).convert("RGB").resize((side, side), Image.BICUBIC)
    a = np.asarray(im).astype(np.int16)
    del im
    rng = np.random.default_rng(0)
    for y in range(0, side, 1000):  # film grain, in strips to bound the setup's memory
        a[y:y + 1000] += rng.normal(0, 4, a[y:y + 1000].shape).round().astype(np.int16)
    Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(path, quality=92)


def measure(path: Path, reduced: bool, repeats: int) -> dict:
    code = CHILD.format(repo=str(REPO), path=str(path), repeats=repeats, reduced=reduced)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=10_000, help="JPEG side, pixels.")
    ap.add_argument("--repeats", type=int, default=3, help="Decodes per process; the best time is kept.")
    ap.add_argument("--keep", type=Path, default=None, help="Write (or reuse) the JPEG here instead of a temp file.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "big.jpg"
        if not path.exists():
            make_jpeg(path, args.side)
        rows = [("decode_image(min_side=448) (now)", measure(path, True, args.repeats)),
                ("load_rgb, full decode (before)", measure(path, False, args.repeats))]
        size_mb = os.path.getsize(path) / 1e6
    print(f"{args.side} x {args.side} JPEG, {size_mb:.1f} MB, {os.cpu_count()} cpus; best of {args.repeats}, "
          f"fresh process per row, then resized to 448 x 448\n")
    print("| decode | decoded size | seconds | peak RSS (MB) | increase over imports (MB) |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        w, h = r["decoded"]
        print(f"| {name} | {w} x {h} | {r['seconds']:.3f} | {r['peak_mb']:.0f} | {r['increase_mb']:.0f} |")


if __name__ == "__main__":
    main()
