"""Kp, NMI, ARI beside greedy PCK and part recall, on full images and on box crops, and Kp against
the number of labelled images the regressors see (named landmarks).

Two steps, so that a killed run continues where it stopped:

  # 1. run the methods (LMPNet ranks, centre, channel-mean) over test and train images, cached in
  #    chunks of 16 under --cache; every split is visited in "spread" order (any prefix is an even
  #    spread over the classes): test and train images on full images, then on box crops, then
  #    more of each
  python benchmarks/part_metrics.py cache --data ../shared/data/cub50 --cache runs/part_metrics

  # 2. print the tables from whatever is cached
  python benchmarks/part_metrics.py table --data ../shared/data/cub50 --cache runs/part_metrics

The rows use the same computations as ``lmp evaluate`` (lmpcli.metrics, lmpcli.part_metrics), so
``lmp evaluate --data ../shared/data/cub50 [--crop-to-box]`` reproduces the first tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from lmpcli.data import CUBDataset, eval_transform, spread_subset
from lmpcli.inference import load_for_inference
from lmpcli.landmarks import MEAN_LANDMARK, keypoint_regression_error, normalise_to_box
from lmpcli.methods import create_method
from lmpcli.meters import KeypointMeter
from lmpcli.settings import KeypointSettings
from lmpcli.named_landmarks import NORMALISATIONS, landmark_regression_error
from lmpcli.part_metrics import collect_predictions, part_metric_rows

from _markdown import emit_table

METHODS = ("lmpnet", "centre", "channel-mean")
CHUNK = 16
STAGES = ((100, 60), (300, 150), (1389, 1500))  # (test, train) images cached per mode, stage by stage
FIT_SIZES = (10, 30, 100, 300)  # and all cached train images
SEEDS = (0, 1, 2, 3, 4)


def spread_order(n: int, sizes) -> list[list[int]]:
    """Indices ``0..n-1`` in stages: the i-th stage completes ``spread_subset(n, sizes[i])``; inside
    a stage the order is random (seed 0), so an unfinished stage adds a random sample."""
    done: set[int] = set()
    stages = []
    for size in sizes:
        new = [i for i in spread_subset(n, size) if i not in done]
        done.update(new)
        stages.append([new[j] for j in np.random.default_rng(0).permutation(len(new))])
    return stages


def plan(data: str) -> list[tuple[str, str, list[int]]]:
    """(mode, split, dataset indices) per cache step, in the order they are computed."""
    n_test, n_train = len(CUBDataset(data, "test")), len(CUBDataset(data, "train"))
    test = spread_order(n_test, [t for t, _ in STAGES])
    train = spread_order(n_train, [t for _, t in STAGES])
    return [(i, mode, split, stage[i]) for i in range(len(STAGES)) for mode in ("full", "crop")
            for split, stage in (("test", test), ("train", train))]


def cache(args) -> None:
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    (model, *_), _ = load_for_inference(args.weights, dev)
    cfg = model.config
    methods = [create_method(n, model, KeypointSettings(k=args.k)) for n in METHODS]
    out = Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    steps = plan(args.data)
    transform = eval_transform(cfg.image_size, cfg.mean, cfg.std)
    sets = {(mode, split): CUBDataset(args.data, split, transform, crop_to_box=mode == "crop")
            for mode in ("full", "crop") for split in ("test", "train")}
    for stage in range(len(STAGES)):  # inside a stage, one chunk of each (mode, split) in turn
        todo = [(mode, split, indices) for s, mode, split, indices in steps if s == stage]
        chunks = [(mode, split, start, indices[start:start + CHUNK]) for mode, split, indices in todo
                  for start in range(0, len(indices), CHUNK)]
        chunks.sort(key=lambda c: c[2])
        for mode, split, start, chunk in chunks:
            ds = sets[mode, split]
            path = out / f"{mode}-{split}-s{stage}-{start // CHUNK:03d}.pt"
            if path.exists():
                continue
            t0 = time.perf_counter()
            pred = collect_predictions(torch.utils.data.Subset(ds, chunk), methods, dev, batch_size=8,
                                       workers=args.workers)
            torch.save({"indices": chunk, **pred}, str(path) + ".tmp")
            Path(str(path) + ".tmp").replace(path)
            print(f"{path.name}: {len(chunk)} images, {time.perf_counter() - t0:.0f} s", flush=True)


def load(cache_dir: str, mode: str, split: str) -> dict | None:
    """All cached chunks of (mode, split), concatenated in dataset-index order; None if none."""
    parts = [torch.load(p) for p in sorted(Path(cache_dir).glob(f"{mode}-{split}-*.pt"))]
    if not parts:
        return None
    idx = torch.tensor([i for p in parts for i in p["indices"]])
    order = idx.argsort()
    cat = {"indices": idx[order], "xy": {n: torch.cat([p["xy"][n] for p in parts])[order] for n in parts[0]["xy"]}}
    for key in ("keypoints", "visible", "box", "size"):
        cat[key] = torch.cat([p[key] for p in parts])[order]
    return cat


def take(d: dict, rows) -> dict:
    """The images at positions ``rows`` of a loaded split."""
    rows = torch.as_tensor(rows)
    return {"indices": d["indices"][rows], "xy": {n: v[rows] for n, v in d["xy"].items()},
            **{key: d[key][rows] for key in ("keypoints", "visible", "box", "size")}}


def fmt(v: float) -> str:
    return "–" if v != v else f"{v:.1f}"


def table(args) -> None:
    for mode in ("full", "crop"):
        test, train = load(args.cache, mode, "test"), load(args.cache, mode, "train")
        if test is None or train is None:
            continue
        fit = train
        rows = part_metric_rows(fit, test, list(METHODS))
        cells = []
        for name in [*METHODS, MEAN_LANDMARK]:
            if name in test["xy"]:
                meter = KeypointMeter()
                meter.update(test["xy"][name], test["keypoints"], test["visible"], test["size"])
                pck, recall = (meter.compute()[c] for c in ("avg", "recall"))
            else:
                pck = recall = float("nan")
            cells.append([name, fmt(pck), fmt(recall), *(f"{rows[name][c]:.2f}" if rows[name][c] == rows[name][c]
                                                          else "–" for c in ("Kp", "NMI", "ARI"))])
        emit_table(f"{mode} images: {len(test['indices'])} cub50 test images, regressors fit on {len(fit['indices'])} "
                   f"train images, k = {args.k}, shipped weights",
                   ["method", "greedy PCK", "part recall", "Kp", "NMI", "ARI"], cells)
        print()
    test, train = load(args.cache, "full", "test"), load(args.cache, "full", "train")
    if test is None or train is None:
        return
    n_pool = len(train["indices"])
    sizes = [n for n in FIT_SIZES if n < n_pool] + [n_pool]
    head = ["labelled images N", "Kp, box-normalised (evaluation protocol)",
            *[f"Kp, {norm}-normalised (lmp predict --landmarks)" for norm in NORMALISATIONS]]
    cells = []
    for n in sizes:
        scores = {"box": [], **{norm: [] for norm in NORMALISATIONS}}
        for seed in SEEDS if n < n_pool else (0,):
            rows = np.random.default_rng(seed).choice(n_pool, n, replace=False)
            fit = take(train, rows)

            def split(d):
                return (normalise_to_box(d["xy"]["lmpnet"], d["box"]), normalise_to_box(d["keypoints"], d["box"]),
                        d["visible"].numpy())

            try:
                scores["box"].append(keypoint_regression_error(split(fit), split(test)))
            except ValueError:  # a landmark visible on none of the N images
                scores["box"].append(float("nan"))
            for norm in NORMALISATIONS:
                scores[norm].append(landmark_regression_error(fit, test, "lmpnet", norm))
        cells.append([f"{n}" + ("" if n < n_pool else " (all cached)"),
                      *[f"{np.nanmean(v):.2f} ± {np.nanstd(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"
                        for v in scores.values()]])
    emit_table(f"Kp of the LMPNet ranks (k = {args.k}) against the number of labelled train images N "
               f"(mean ± sd over seeds {SEEDS[0]}-{SEEDS[-1]}), {len(test['indices'])} cub50 test images, "
               "error always in units of the ground-truth box", head, cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["cache", "table"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", default="runs/part_metrics")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cache(args) if args.step == "cache" else table(args)


if __name__ == "__main__":
    main()
