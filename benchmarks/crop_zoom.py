"""Test-time zoom-out on box crops (quality log section 38, item 1): a diagnostic, not an option.

Each image (with ``--crop-to-box``, its ground-truth-box crop) is shrunk to ``z`` x S pixels,
centred and padded with zeros (the normalised mean colour) to the network's S x S input, so
that a bird filling the crop appears at the scale the network was trained on. Keypoints are
mapped back through the same affine map. Runs :func:`lmpcli.evaluate.evaluate` with its
transform and its coordinate map replaced for this one run (``z = 1`` reproduces
``lmp evaluate --crop-to-box``).

    python benchmarks/crop_zoom.py --data ../shared/data/cub50 --zoom 1,0.75,0.6,0.5 --limit 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lmpcli.evaluate as E
from lmpcli import inference

COLUMNS = ["KP1", "KP2", "KP3", "KP4", "KP5", "avg", "recall", "recall_head", "recall_body", "recall_wings",
           "recall_tail", "recall_legs", "acc"]


def run(data: str, z: float, methods: list[str], limit: int, crop: bool) -> list[dict]:
    geometry: dict = {}

    def padded(image_size: int, mean, std) -> v2.Transform:
        inner = round(image_size * z)
        off = (image_size - inner) // 2
        geometry.update(S=image_size, inner=inner, off=off)
        far = image_size - inner - off
        return v2.Compose([v2.ToImage(), v2.Resize((inner, inner), antialias=True),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
                           v2.Pad([off, off, far, far], fill=0.0)])

    plain = inference.iterate

    def remapped(loader, kp_methods, device, with_cache=False):
        for item in plain(loader, kp_methods, device, with_cache):
            batch, results = item[0], item[1]
            size = batch["size"].float()
            for r in results.values():  # run_methods scaled input pixels by W / S: undo, then map through the padding
                u = r["xy"] / (size / geometry["S"])[:, None, :]
                r["xy"] = (u - geometry["off"]) * (size / geometry["inner"])[:, None, :]
            yield item

    saved = E.eval_transform, E.iterate
    E.eval_transform, E.iterate = padded, remapped
    try:
        report = E.evaluate(data, methods=methods, limit=limit, fit_images=0, crop_to_box=crop, baselines=False)
    finally:
        E.eval_transform, E.iterate = saved
    return report["table"].to_dict("records")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--zoom", default="1,0.75,0.6,0.5", help="comma-separated z (1 = no zoom-out)")
    ap.add_argument("--methods", default="lmpnet,parts")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--full-images", action="store_true", help="whole images instead of box crops")
    args = ap.parse_args()
    print("| z | method | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for z in (float(v) for v in args.zoom.split(",")):
        t0 = time.perf_counter()
        for row in run(args.data, z, args.methods.split(","), args.limit, not args.full_images):
            print(f"| {z:g} | {row['method']} | " + " | ".join(f"{row.get(c, float('nan')):.1f}" for c in COLUMNS) + " |")
        print(f"<!-- z = {z:g}: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
