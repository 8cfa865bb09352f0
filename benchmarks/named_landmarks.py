"""Named landmarks: Kp against the number of labelled images N, for the parts and the ranks
(docs/quality-log.md section 35, item 2; docs/part-metrics.md).

Two steps, so that a killed run continues where it stopped:

  # 1. one forward of each network per image of both splits: the ranks (lmpnet, k = 5), the
  #    checkpoint's parts, and the main network's final-conv maps (float16), in chunks of 100
  #    under --cache (an existing chunk is skipped)
  python benchmarks/named_landmarks.py cache --data ../shared/data/cub50 --cache runs/named_landmarks

  # 2. fit the regressors on N = 10, 30, 100 random train images (10 draws each) and on all of
  #    them, score all cached test images, print the table
  python benchmarks/named_landmarks.py table --data ../shared/data/cub50 --cache runs/named_landmarks [--ridge]

  # section 32's --fit-images rule: protocol Kp with N = 100, 300 random or spread fit images
  python benchmarks/named_landmarks.py fit-images --data ../shared/data/cub50 --cache runs/named_landmarks

Frames (the error is always in units of the ground-truth box, Huang & Li's Kp):
``box``: the evaluation protocol (``lmp evaluate``'s Kp, :mod:`lmpcli.landmarks`); ``image``:
what ``lmp fit-landmarks`` / ``lmp predict --landmarks`` do, with no box at predict time
(:mod:`lmpcli.named_landmarks`). Landmarks labelled on none of the N images are left out of
that draw's fit and score, as ``lmp fit-landmarks`` leaves them out of its file.

``--ridge`` adds the pre-registered follow-up: the same draws with each landmark's least squares
replaced by ``sklearn.linear_model.RidgeCV`` (no intercept, leave-one-out over alphas
10^-2..10^3 on the N labelled images alone) on the same scaled inputs.

Section 37's named landmarks by descriptor prototypes, from the same cache:

  python benchmarks/named_landmarks.py prototypes --data ../shared/data/cub50 --cache runs/named_landmarks [--cosine-only | --label-thresholds]
  python benchmarks/named_landmarks.py per-landmark --data ../shared/data/cub50 --cache runs/named_landmarks

``benchmarks/parts_held_out.py`` reads the same cache.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.checkpoint import atomic_torch_save
from lmpcli.data import CUBDataset, eval_transform
from lmpcli.evaluate import _collate
from lmpcli.inference import iterate, load_for_inference, make_loader
from lmpcli.landmarks import fit_landmark_regressor, normalise_to_box
from lmpcli.methods import create_method
from lmpcli.settings import KeypointSettings
from lmpcli.named_landmarks import reference_boxes
from lmpcli.part_metrics import part_metric_rows

from _markdown import emit_table

CHUNK = 100
METHODS = ("parts", "lmpnet")
FIT_SIZES = (10, 30, 100)  # and all train images
SEEDS = tuple(range(10))
FRAMES = ("box", "image")
RIDGE_ALPHAS = np.logspace(-2, 3, 11)


def class_range(text: str) -> set[int]:
    """``"1-40"`` -> {1, ..., 40} (CUB class ids)."""
    lo, hi = (int(v) for v in text.split("-"))
    return set(range(lo, hi + 1))


def cache(args) -> None:
    """Run both methods over every image of both splits; chunks ``SPLIT-NNN.pt`` under ``--cache``."""
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    (model, *_), _ = load_for_inference(args.weights, dev, KeypointSettings(output_stride=args.output_stride),
                                        backend=args.backend)
    cfg = model.config
    names = args.methods.split(",")
    methods = [create_method(n, model, KeypointSettings(k=args.k)) for n in names]
    out = Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    transform = eval_transform(cfg.image_size, cfg.mean, cfg.std)
    for split in args.splits.split(","):
        ds = CUBDataset(args.data, split, transform, classes=args.train_classes if split == "train" else None)
        class_ids = torch.tensor(ds.table["class_id"].to_numpy())
        total = len(ds) if args.limit is None else min(args.limit, len(ds))
        for start in range(0, total, CHUNK):
            path = out / f"{split}-{start // CHUNK:03d}.pt"
            if path.exists():
                continue
            t0 = time.perf_counter()
            idx = list(range(start, min(start + CHUNK, total)))
            loader = make_loader(torch.utils.data.Subset(ds, idx), 8, args.workers, _collate, dev)
            got: dict = {"xy": {n: [] for n in names}, "features": [], "keypoints": [], "visible": [], "box": [],
                         "size": []}
            for batch, results, shared in iterate(loader, methods, dev, with_cache=True):
                for name in names:
                    got["xy"][name].append(results[name]["xy"])
                got["features"].append(shared["main"][1].detach().cpu().half())
                for key in ("keypoints", "visible", "box", "size"):
                    got[key].append(batch[key])
            atomic_torch_save({"indices": torch.tensor(idx), "class_id": class_ids[idx],
                               "xy": {n: torch.cat(v) for n, v in got["xy"].items()},
                               **{key: torch.cat(got[key]) for key in ("features", "keypoints", "visible", "box", "size")}},
                              path)
            print(f"{path.name}: {len(idx)} images, {time.perf_counter() - t0:.0f} s", flush=True)


def load_split(cache_dir: str, split: str, features: bool = False) -> dict:
    """The cached chunks of ``split`` in dataset order: ``indices``, ``class_id`` (CUB ids), ``xy``
    {method: (N, k, 2) original pixels, NaN = absent}, ``keypoints`` (N, 15, 2), ``visible``,
    ``box`` (N, 4) x, y, w, h, ``size`` (N, 2) W, H, and with ``features`` the (N, 1280, 14, 14)
    float16 maps."""
    chunks = sorted(Path(cache_dir).glob(f"{split}-*.pt"))
    if not chunks:
        raise SystemExit(f"no cached {split} images in {cache_dir}; run the cache step first")
    keys = ["indices", "class_id", "keypoints", "visible", "box", "size"] + (["features"] if features else [])
    parts = []
    for c in chunks:
        d = torch.load(c, weights_only=True)
        parts.append({key: d[key] for key in keys} | {"xy": d["xy"]})
    return {**{key: torch.cat([p[key] for p in parts]) for key in keys},
            "xy": {n: torch.cat([p["xy"][n] for p in parts]) for n in parts[0]["xy"]}}


def take(d: dict, rows) -> dict:
    """The images at positions ``rows`` of a loaded split (every per-image key)."""
    rows = torch.as_tensor(rows)
    return {key: ({n: v[rows] for n, v in val.items()} if key == "xy" else val[rows]) for key, val in d.items()}


def frame_boxes(d: dict, method: str, frame: str) -> np.ndarray:
    """(N, 4) boxes the coordinates are normalised by: the ground-truth box (``box``) or the
    predict-time frame of :func:`lmpcli.named_landmarks.reference_boxes`."""
    if frame == "box":
        return d["box"].numpy().astype(np.float64)
    return reference_boxes(d["xy"][method], d["size"], frame).numpy()


def ridge_coefficients(reg, keypoints, landmarks, visible) -> np.ndarray:
    """(L, D, 2) coefficients of ``RidgeCV`` on the regressor's own scaled inputs and targets
    (its scalers unchanged), per landmark on the images where it is visible."""
    from sklearn.linear_model import RidgeCV

    z = reg._scaled_inputs(keypoints)  # (L, N, D), absent keypoints 0
    t = (np.asarray(landmarks, np.float64).transpose(1, 0, 2) - reg.out_mean[:, None]) / reg.out_scale[:, None]
    vis = np.asarray(visible)
    coef = np.zeros_like(reg.coef)
    for lm in range(len(coef)):
        rows = vis[:, lm]
        coef[lm] = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=False).fit(z[lm, rows], t[lm, rows]).coef_.T
    return coef


def landmark_kp(fit: dict, test: dict, method: str, frame: str, ridge: bool = False) -> float:
    """Kp (x 100, units of the ground-truth box) of regressors fit on ``fit`` in ``frame`` and
    applied to ``test``; landmarks labelled on no fit image are left out of both."""
    seen = fit["visible"].any(0).numpy()
    fb, tb = frame_boxes(fit, method, frame), frame_boxes(test, method, frame)
    kp = normalise_to_box(fit["xy"][method], fb)
    lm = normalise_to_box(fit["keypoints"][:, seen], fb)
    vis = fit["visible"][:, seen].numpy()
    reg = fit_landmark_regressor(kp, lm, vis)
    if ridge:
        reg.coef = ridge_coefficients(reg, kp, lm, vis)
    pred = reg.predict(normalise_to_box(test["xy"][method], tb)) * tb[:, None, 2:] + tb[:, None, :2]  # pixels
    box = test["box"].numpy().astype(np.float64)
    d = np.linalg.norm((pred - test["keypoints"][:, seen].numpy()) / box[:, None, 2:], axis=-1)
    return 100.0 * float(d[test["visible"][:, seen].numpy()].mean())


def table(args) -> None:
    test, train = load_split(args.cache, "test"), load_split(args.cache, "train")
    n_pool = len(train["indices"])
    check = part_metric_rows(train, test, list(METHODS))  # lmp evaluate's rows on the same keypoints
    emit_table(f"check: lmp evaluate's Kp / NMI / ARI from the cache, {len(test['indices'])} test images, "
               f"regressors fit on all {n_pool} train images",
               ["row", "Kp", "NMI", "ARI"],
               [[n, *(f"{r[c]:.2f}" for c in ("Kp", "NMI", "ARI"))] for n, r in check.items()])
    print()
    variants = [False, True] if args.ridge else [False]
    head = ["labelled images N", *[f"{m}, {f} frame" + (", ridge" if r else "")
                                   for m in METHODS for r in variants for f in FRAMES]]
    cells, raw = [], {}
    for n in [*(n for n in FIT_SIZES if n < n_pool), n_pool]:
        draws = SEEDS if n < n_pool else (0,)
        row = [f"{n}" + ("" if n < n_pool else " (all)")]
        for m in METHODS:
            for r in variants:
                for f in FRAMES:
                    vals = [landmark_kp(take(train, np.random.default_rng(s).choice(n_pool, n, replace=False)),
                                        test, m, f, r) for s in draws]
                    raw[f"{n}/{m}/{f}" + ("/ridge" if r else "")] = vals
                    row.append(f"{np.mean(vals):.2f} ± {np.std(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}")
        cells.append(row)
        print(f"N = {n} done", file=sys.stderr, flush=True)
    emit_table(f"Kp of named landmarks against the labelled train images N (mean ± sd over {len(SEEDS)} random "
               f"draws, seeds {SEEDS[0]}-{SEEDS[-1]}), all {len(test['indices'])} cached test images, error in units "
               f"of the ground-truth box; parts = the checkpoint's part model, lmpnet = the ranks (k = {args.k})",
               head, cells, args.out)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"check": check, "draws": raw}, indent=1) + "\n")


def fit_images(args) -> None:
    """Section 32's ``--fit-images`` rule: protocol Kp with regressors on N random or evenly spread
    train images (``lmp evaluate --fit-images N`` uses the spread ones) against all of them."""
    from lmpcli.data import spread_subset

    test, train = load_split(args.cache, "test"), load_split(args.cache, "train")
    n_pool = len(train["indices"])
    full = {m: landmark_kp(train, test, m, "box") for m in METHODS}
    cells = []
    for n in (100, 300):
        row = [str(n)]
        for m in METHODS:
            draws = [landmark_kp(take(train, np.random.default_rng(s).choice(n_pool, n, replace=False)), test, m, "box")
                     for s in SEEDS]
            spread = landmark_kp(take(train, spread_subset(n_pool, n)), test, m, "box")
            row += [f"{np.mean(draws[:5]):.2f} ({np.mean(draws[:5]) - full[m]:+.2f})",
                    f"{np.mean(draws):.2f} ± {np.std(draws):.2f}", f"{spread:.2f} ({spread - full[m]:+.2f})"]
        cells.append(row)
    cells.append([f"{n_pool} (all)", *[c for m in METHODS for c in (f"{full[m]:.2f}", "", "")]])
    emit_table(f"Kp (box frame) against the train images the regressors are fit on, {len(test['indices'])} test "
               "images; random: mean over seeds 0-4 (the rule; difference to all images) and over seeds 0-9 (± sd); "
               "spread: the subset lmp evaluate --fit-images N uses",
               ["fit images N", *[f"{m}, {c}" for m in METHODS for c in ("random, seeds 0-4", "random, seeds 0-9",
                                                                         "spread")]], cells, args.out)


def stack_mid(cache_dir: str, **splits: dict) -> int:
    """Section 38 item 9: add ``stacked`` (the final maps and the mid-level maps of
    ``benchmarks/mid_level_parts.py``'s cache in the same folder, :func:`lmpcli.parts.stack_maps`)
    to each loaded split; returns the mid-level channels."""
    from lmpcli.parts import stack_maps
    from mid_level_parts import load_mid

    for split, d in splits.items():
        m = load_mid(cache_dir, split)
        if not torch.equal(m["indices"], d["indices"]):
            raise SystemExit(f"the mid-level maps of {split} do not match the cached images")
        d["stacked"] = stack_maps(d["features"], m["block10"])
        mid = int(d["stacked"].shape[1] - d["features"].shape[1])
    return mid


def prototype_rows(args) -> None:
    """Section 37: named landmarks by descriptor prototypes (:func:`lmpcli.named_landmarks.fit_landmark_prototypes`)
    on the same N and draws as :func:`table`, beside the parts' regressors in both frames."""
    from lmpcli.head import cells_to_pixels
    from lmpcli.named_landmarks import fit_landmark_prototypes
    from lmpcli.parts import PartModel, calibrate, centred_cells

    class CentredCosine(PartModel):
        """Section 37 item 1b (rejected): response = the centred cosine, without the energy factor."""

        def responses(self, features):
            b, c, h, w = features.shape
            f = features.float().flatten(2).transpose(1, 2)
            return (centred_cells(f) @ self.projection.T).clamp_min(0).transpose(1, 2).reshape(b, -1, h, w)

    test, train = load_split(args.cache, "test", features=True), load_split(args.cache, "train", features=True)
    mid = stack_mid(args.cache, train=train, test=test) if args.mid_level else 0
    s = args.image_size
    n_pool = len(train["indices"])
    to_input = lambda d: d["keypoints"] * (s / d["size"])[:, None, :]  # noqa: E731 - original -> input pixels
    train_pts, truth = to_input(train), test["keypoints"].numpy()
    box = test["box"].numpy().astype(np.float64)
    tvis = test["visible"].numpy()
    sizes = [n for n in FIT_SIZES if n < n_pool] + [n_pool]
    variants = {"prototypes": (True, True, "median"), "prototypes, raw cells": (False, True, "median")}
    if args.cosine_only:
        variants = {"prototypes": (True, True, "median"), "prototypes, cosine only": (True, False, "median")}
    if args.label_thresholds:
        variants = {"prototypes": (True, True, "median"), "prototypes, label thresholds": (True, True, "labels")}
    if args.mid_level:  # both with today's label thresholds
        variants = {"prototypes": (True, True, "labels"), "prototypes, final + mid maps": (True, True, "labels")}
    cells, raw = [], {}
    for n in sizes:
        draws = SEEDS if n < n_pool else (0,)
        row = [f"{n}" + ("" if n < n_pool else " (all)")]
        for m in ("parts",):
            for f in FRAMES:
                vals = [landmark_kp(take(train, np.random.default_rng(sd).choice(n_pool, n, replace=False)), test, m, f)
                        for sd in draws]
                raw[f"{n}/regression/{f}"] = vals
                row.append(f"{np.mean(vals):.2f} ± {np.std(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}")
        for name, (centred, energy, rule) in variants.items():
            t0 = time.perf_counter()
            models, seen_sets = [], []
            for sd in draws:
                rows = torch.as_tensor(np.random.default_rng(sd).choice(n_pool, n, replace=False))
                vis = train["visible"][rows]
                seen = vis.any(0)
                use_mid = name.endswith("mid maps")
                feats = train["stacked" if use_mid else "features"][rows]
                m = fit_landmark_prototypes(feats, train_pts[rows][:, seen], vis[:, seen], (s, s),
                                            centred=centred, threshold=rule, mid_channels=mid if use_mid else 0)
                if not energy:  # item 1b: the same prototypes, the centred cosine alone, the median rule
                    m = CentredCosine(m.method, m.projection, m.threshold, m.scale)
                    calibrate(m, train["features"][rows], vis[:, seen])
                models.append(m)
                seen_sets.append(seen.numpy())
            fit_s = time.perf_counter() - t0
            # all draws' prototypes in one model: one pass over the test maps; the peak is used whatever its score
            proj = torch.cat([mm.projection for mm in models])
            scoring = type(models[0])(models[0].method, proj, torch.full((len(proj),), -torch.inf), torch.ones(len(proj)),
                                      mid_channels=models[0].mid_channels)
            xy, peaks = [], []
            for i in range(0, len(test["indices"]), 64):
                feat = test["stacked" if models[0].mid_channels else "features"][i: i + 64]
                cxy, _, _, pk = scoring.locate(feat)
                xy.append(cells_to_pixels(cxy, feat.shape[-2:], (s, s)))
                peaks.append(pk)
            xy = torch.cat(xy) * (test["size"] / s)[:, None, :]  # original pixels
            peaks = torch.cat(peaks)
            vals, recall, reject = [], [], []
            start = 0
            for mm, seen in zip(models, seen_sets):
                stop = start + mm.k
                pred = xy[:, start:stop].numpy().astype(np.float64)
                d = np.linalg.norm((pred - truth[:, seen]) / box[:, None, 2:], axis=-1)
                v = tvis[:, seen]
                vals.append(100.0 * float(d[v].mean()))
                said = (peaks[:, start:stop] >= mm.threshold).numpy()
                recall.append(100.0 * said[v].mean())
                reject.append(100.0 * (~said[~v]).mean())
                start = stop
            raw[f"{n}/{name}"] = vals
            raw[f"{n}/{name}/visibility"] = [recall, reject]
            row.append((f"{np.mean(vals):.2f} ± {np.std(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}")
                       + f" ({np.mean(recall):.0f} / {np.mean(reject):.0f}"
                       + (f"; balanced {(np.mean(recall) + np.mean(reject)) / 2:.1f})" if args.label_thresholds else ")"))
            print(f"N = {n} {name}: fit {fit_s:.1f} s, score {time.perf_counter() - t0 - fit_s:.1f} s",
                  file=sys.stderr, flush=True)
        cells.append(row)
    emit_table(f"Kp of named landmarks against the labelled train images N (mean ± sd over {len(SEEDS)} random draws, "
               f"seeds {SEEDS[0]}-{SEEDS[-1]}), all {len(test['indices'])} cached test images, error in units of the "
               "ground-truth box. regression: the parts' regressors (lmp fit-landmarks today); prototypes: section 37 "
               "(in brackets: % of labelled test landmarks reported visible / % of unlabelled ones reported absent)",
               ["labelled images N", *[f"regression, {f} frame" for f in FRAMES], *variants], cells, args.out)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(raw, indent=1) + "\n")


def per_landmark(args) -> None:
    """Section 37's diagnostic: error per landmark with all labelled train images, prototypes against
    the parts' regressors in the image frame; for the left / right pairs also the prototype's error
    to the nearer of the two annotations where both are visible."""
    from lmpcli.head import cells_to_pixels
    from lmpcli.named_landmarks import fit_landmark_prototypes

    test, train = load_split(args.cache, "test", features=True), load_split(args.cache, "train", features=True)
    mid = stack_mid(args.cache, train=train, test=test) if args.mid_level else 0
    key = "stacked" if mid else "features"
    s = args.image_size
    model = fit_landmark_prototypes(train[key], train["keypoints"] * (s / train["size"])[:, None, :],
                                    train["visible"], (s, s), mid_channels=mid)
    model.threshold[:] = -torch.inf  # the peak on every landmark, as in the table
    xy = []
    for i in range(0, len(test["indices"]), 64):
        f = test[key][i: i + 64]
        xy.append(cells_to_pixels(model.locate(f)[0], f.shape[-2:], (s, s)))
    xy = (torch.cat(xy) * (test["size"] / s)[:, None, :]).numpy()
    box = test["box"].numpy().astype(np.float64)[:, None, 2:]
    vis, gt = test["visible"].numpy(), test["keypoints"].numpy()
    d_proto = np.linalg.norm((xy - gt) / box, axis=-1) * 100
    fb, tb = frame_boxes(train, "parts", "image"), frame_boxes(test, "parts", "image")
    reg = fit_landmark_regressor(normalise_to_box(train["xy"]["parts"], fb), normalise_to_box(train["keypoints"], fb),
                                 train["visible"].numpy())
    pred = reg.predict(normalise_to_box(test["xy"]["parts"], tb)) * tb[:, None, 2:] + tb[:, None, :2]
    d_reg = np.linalg.norm((pred - gt) / box, axis=-1) * 100
    names = [line.split(" ", 1)[1].strip() for line in (Path(args.data) / "parts" / "parts.txt").read_text().splitlines()
             if line.strip()]
    partner = {}
    for side in ("eye", "leg", "wing"):
        a, b = names.index(f"left {side}"), names.index(f"right {side}")
        partner[a], partner[b] = b, a
    cells = []
    for j, name in enumerate(names):
        v = vis[:, j]
        nearer = ""
        if j in partner:
            k = partner[j]
            swap = np.linalg.norm((xy[:, j] - gt[:, k]) / box[:, 0], axis=-1) * 100
            nearer = f"{np.where(v & vis[:, k], np.minimum(d_proto[:, j], swap), d_proto[:, j])[v].mean():.2f}"
        cells.append([name, str(int(v.sum())), f"{d_proto[:, j][v].mean():.2f}", f"{d_reg[:, j][v].mean():.2f}", nearer])
    cells.append(["all", str(int(vis.sum())), f"{d_proto[vis].mean():.2f}", f"{d_reg[vis].mean():.2f}", ""])
    emit_table(f"error per landmark (units of the ground-truth box x 100), all {len(test['indices'])} cached test images, "
               f"all {len(train['indices'])} train images labelled; prototypes on the "
               + ("final and mid-level maps" if mid else "final map"),
               ["landmark", "visible test", "prototypes", "regression (parts, image frame)",
                "prototypes, nearer of the left/right pair"], cells, args.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["cache", "table", "fit-images", "prototypes", "per-landmark"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", default="runs/named_landmarks")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--backend", default="auto", help="network runtime of the cache step (as lmp evaluate)")
    ap.add_argument("--k", type=int, default=5, help="ranked keypoints per image")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="cache only the first N images of each split (smoke tests)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS), help="cache step: keypoint methods to run")
    ap.add_argument("--train-classes", default=None, help="cache step: only these CUB class ids of the train split, e.g. 1-40")
    ap.add_argument("--output-stride", type=int, default=None, help="cache step: run the networks at this stride")
    ap.add_argument("--splits", default="test,train", help="cache step: the splits to cache")
    ap.add_argument("--cosine-only", action="store_true", help="prototypes step: the section 37 item 1b variant")
    ap.add_argument("--label-thresholds", action="store_true", help="prototypes step: the section 37 item 1c variant")
    ap.add_argument("--mid-level", action="store_true",
                    help="prototypes and per-landmark steps: section 38 item 9, prototypes on the final and "
                         "mid-level maps (the cache also needs `benchmarks/mid_level_parts.py cache`)")
    ap.add_argument("--image-size", type=int, default=448, help="prototypes step: the network input size of the cache")
    ap.add_argument("--ridge", action="store_true", help="also the RidgeCV follow-up (quality log 35)")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--json", default=None, help="also write every draw's Kp here")
    args = ap.parse_args()
    if args.train_classes:
        args.train_classes = sorted(class_range(args.train_classes))
    {"cache": cache, "table": table, "fit-images": fit_images, "prototypes": prototype_rows,
     "per-landmark": per_landmark}[args.step](args)


if __name__ == "__main__":
    main()
