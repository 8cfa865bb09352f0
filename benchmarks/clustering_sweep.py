"""Test-time sweep of LMPNet's keypoint branch on one checkpoint: prints a markdown table.

Both networks run once per image; every variant (erase radius, filter-selection size,
clustering iterations, replica fusion, sub-cell peaks, centroid keypoints, object gate) then re-runs only
filter selection + learnable clustering on the cached feature maps, so a sweep over the
whole cub50 test split costs about one ``lmp evaluate``.

    python benchmarks/clustering_sweep.py --data ../shared/data/cub50 [--weights W] [--limit N] [--out sweep.md]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from _markdown import emit_table
from lmpcli.checkpoint import load_model
from lmpcli.data import PART_GROUPS, CUBDataset, eval_transform, spread_subset
from lmpcli.evaluate import _collate
from lmpcli.head import KeypointHead
from lmpcli.inference import make_loader
from lmpcli.meters import KeypointMeter
from lmpcli.settings import KeypointSettings

VARIANTS = {
    "shipped config": {},
    "thr 1": {"thr": 1.0}, "thr 2": {"thr": 2.0}, "thr 3": {"thr": 3.0}, "thr 4": {"thr": 4.0},
    "no replica": {"replica": False},
    "filters 32": {"num_filters": 32}, "filters 64": {"num_filters": 64}, "filters 256": {"num_filters": 256},
    "filters 512": {"num_filters": 512},
    "iterations 0": {"iterations": 0}, "iterations 1": {"iterations": 1}, "iterations 5": {"iterations": 5},
    "sub-cell peaks": {"subcell": True}, "centroid keypoints": {"refine": True},
    "sub-cell + centroid": {"subcell": True, "refine": True},
    "gate 0.2": {"gate": 0.2}, "gate 0.35": {"gate": 0.35}, "gate 0.5": {"gate": 0.5},
    "thr 1 + gate 0.35": {"thr": 1.0, "gate": 0.35}, "thr 3 + gate 0.35": {"thr": 3.0, "gate": 0.35},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from the list above")
    ap.add_argument("--base", default="", help="overrides applied to every variant, e.g. subcell=1,refine=1")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    model, ckpt = load_model(args.weights)
    cfg = model.config
    ds = CUBDataset(args.data, args.split, eval_transform(cfg.image_size, cfg.mean, cfg.std))
    if args.limit:
        ds = torch.utils.data.Subset(ds, spread_subset(len(ds), args.limit))
    base = {}
    for item in filter(None, args.base.split(",")):
        key, value = item.split("=")
        base[key] = float(value) if key in ("thr", "gate") else int(value)
    names = [n.strip() for n in args.variants.split(",")]
    settings = {n: model.resolve(replace(KeypointSettings(k=args.k), **{**base, **VARIANTS[n]})) for n in names}
    heads = {n: KeypointHead(s, model.cell_centre()) for n, s in settings.items()}  # one keypoint head per variant
    meters = {n: KeypointMeter() for n in names}
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in make_loader(ds, args.batch_size, args.workers, _collate, torch.device("cpu")):
            logits, feats, rep = model.features(batch["image"])
            scale = batch["size"] / torch.tensor([cfg.image_size, cfg.image_size], dtype=torch.float32)
            for n in names:
                maps = [feats, rep] if settings[n].replica and rep is not None else [feats]
                xy, _ = heads[n](maps, (cfg.image_size, cfg.image_size))
                xy = xy * scale[:, None, :]
                meters[n].update(xy, batch["keypoints"], batch["visible"], batch["size"])
    head = ["variant"] + [f"KP{r + 1}" for r in range(args.k)] + ["avg", "recall"] + list(PART_GROUPS)
    caption = (f"Test-time sweep: {len(ds)} {args.split} images of {args.data}, k={args.k}, weights "
               f"{args.weights or 'shipped'} ({cfg.backbone}, {cfg.image_size} px, "
               f"{cfg.image_size // 32}x{cfg.image_size // 32} maps; config thr={cfg.keypoints.thr}, "
               f"filters={cfg.keypoints.num_filters}, iterations={cfg.keypoints.iterations}); base overrides {base or 'none'}; "
               f"{time.perf_counter() - start:.0f} s.")
    columns = head[1:-len(PART_GROUPS)] + [f"recall_{g}" for g in PART_GROUPS]
    rows = [[n] + [f"{row[c]:.1f}" for c in columns] for n, row in ((n, m.compute()) for n, m in meters.items())]
    emit_table(caption, head, rows, args.out)


if __name__ == "__main__":
    main()
