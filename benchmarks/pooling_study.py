#!/usr/bin/env python
"""Pooling / filter-selection study (Guo & Farrell, Sec. 4.1 Table 1, Figs. 5-7; Sec. 4.2 Table 2).

Trains one LMPNet per *training variant* (pooling avg / max / lmp eps 0.1 / lmp eps 0.01) with
:func:`lmpcli.train.fit` (or reuses the run folder when its ``model.pt`` exists), scores greedy
PCK with :func:`lmpcli.evaluate.evaluate`, measures the mean feature-map entropy
(``evaluate(entropy=True)``, same pass, Fig. 6); scores the *test-time variants* (filter-selection
size m, erase radius thr, replica fusion off) of ``--test-weights`` (default: the study's own
``lmp`` model) in one shared pass; and writes ``<out-dir>/results.md`` with the tables, the exact
commands and three figures beside it:

* ``results_entropy.png``: mean feature-map entropy per pooling (Fig. 6);
* ``results_pooling_filters.png``: the same filter indices' maps under the avg / max / lmp
  models on one test image (Fig. 5);
* ``results_keypoints.png``: k=5 keypoints on test images of several species (Fig. 7).

Every variant's numbers are cached in ``<runs-dir>/results/<variant>.json``, so the study
runs piecewise (``--variants avg,max`` now, ``--variants lmp,m32`` later) and the report
always shows every variant done so far.

Examples::

    python benchmarks/pooling_study.py --data ../shared/data/cub50                 # everything
    python benchmarks/pooling_study.py --data ../shared/data/cub50 --variants avg,max,lmp,lmp-eps0.01 \\
        --epochs 2 --no-replica --eval-limit 400 --workers 1 --runs-dir runs/study-e2   # docs/results.md, part 1
    python benchmarks/pooling_study.py --data ../shared/data/cub50 --variants m32,m128,m512,thr1,thr2,thr3,no-fusion,gate0.2 \\
        --test-weights weights/lmpnet-lite0-cub50.pt --workers 1 --runs-dir runs/study-e2  # part 2 (shipped model)
    python benchmarks/pooling_study.py --data ../shared/data/cub50 --variants avg,max --eval-limit 200
    python benchmarks/pooling_study.py --data ../shared/data/cub50 --variants avg \\
        --image-size 64 --epochs 1 --limit 16 --eval-limit 8 --runs-dir /tmp/ps/runs --out-dir /tmp/ps  # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lmpcli.checkpoint import read_checkpoint
from lmpcli.evaluate import evaluate
from lmpcli.outputs import atomic_write_image, atomic_write_text
from lmpcli.settings import KeypointSettings
from lmpcli.train import fit

#: Training variants: name -> (description, keywords of :func:`lmpcli.train.fit`).
TRAIN_VARIANTS: dict[str, tuple[str, dict]] = {
    "avg": ("average pooling (Eq. 1)", {"pooling": "avg"}),
    "max": ("max pooling (Eq. 2)", {"pooling": "max"}),
    "lmp": ("leaky max pooling, eps 0.1 (Eq. 3)", {"pooling": "lmp", "eps": 0.1}),
    "lmp-eps0.01": ("leaky max pooling, eps 0.01", {"pooling": "lmp", "eps": 0.01}),
    "lmp-norep": ("leaky max pooling, eps 0.1, trained without replica", {"pooling": "lmp", "eps": 0.1,
                                                                          "replica": False}),
}
#: Test-time variants of the ``lmp`` model: name -> (description, changes of its keypoint settings: evaluate's ``variants``).
TEST_VARIANTS: dict[str, tuple[str, dict]] = {
    "m32": ("filter selection m=32", {"num_filters": 32}),
    "m128": ("filter selection m=128", {"num_filters": 128}),
    "m512": ("filter selection m=512", {"num_filters": 512}),
    "thr1": ("erase radius thr=1 cell", {"thr": 1.0}),
    "thr2": ("erase radius thr=2 cells", {"thr": 2.0}),
    "thr3": ("erase radius thr=3 cells", {"thr": 3.0}),
    "no-fusion": ("replica proposals not fused at test time", {"replica": False}),
    "gate0.2": ("object gate F=0.2 (an extension, not in the paper)", {"gate": 0.2}),
}
ALL_VARIANTS = [*TRAIN_VARIANTS, *TEST_VARIANTS]
POOLING_FIGURE = ("avg", "max", "lmp")
#: The paper's Table 1 (test accuracy %, ResNet-50, CUB-200-2011) and Table 2 (greedy PCK, KP1-5, avg):
#: quoted beside our measurements for reference.
PAPER_ACCURACY = {"avg": 85.0, "max": 86.1, "lmp": 81.4, "lmp-eps0.01": 85.3}
PAPER_PCK = {"thr1": (96.5, 91.4, 91.4, 90.7, 87.6, 91.5), "thr2": (97.5, 89.1, 87.8, 83.1, 74.8, 86.5),
             "thr3": (96.2, 89.2, 86.6, 82.4, 75.4, 86.0)}


class PrintProgress:
    """:class:`lmpcli.progress.Progress` printing a line every ~10 % to stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet, self.total, self.done, self.next, self.t0, self.desc = quiet, None, 0, 0.0, 0.0, ""

    def start(self, description: str, total: int | None) -> None:
        self.desc, self.total, self.done, self.next, self.t0 = description, total, 0, 0.1, time.perf_counter()

    def advance(self, n: int = 1, **metrics: float) -> None:
        self.done += n
        if self.quiet or not self.total or self.done / self.total < self.next:
            return
        self.next = self.done / self.total + 0.1
        extra = " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        self.log(f"  {self.desc}: {self.done}/{self.total} {extra} ({time.perf_counter() - self.t0:.0f} s)")

    def finish(self) -> None:
        pass

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- commands


def _q(x) -> str:
    return shlex.quote(str(x))


def train_command(args, run: Path, kw: dict) -> str:
    cmd = ["lmp train", _q(args.data), "--out", _q(run), "--backbone", args.backbone,
           "--image-size", str(args.image_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--pooling", kw["pooling"]]
    if kw["pooling"] == "lmp":
        cmd += ["--eps", f"{kw['eps']:g}"]
    if not kw.get("replica", True):
        cmd.append("--no-replica")
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if not args.pretrained:
        cmd.append("--no-pretrained")
    cmd += ["--seed", str(args.seed), "--workers", str(args.workers)]
    return " ".join(cmd)


def eval_command(args, weights: Path, kw: dict, baselines: bool, limit: int | None) -> str:
    cmd = ["lmp evaluate --data", _q(args.data), "--split", args.split, "--weights", _q(weights), "--k", str(args.k)]
    if "thr" in kw:
        cmd += ["--thr", f"{kw['thr']:g}"]
    if "num_filters" in kw:
        cmd += ["--num-filters", str(kw["num_filters"])]
    if kw.get("replica") is False:
        cmd.append("--no-replica")
    if not baselines:
        cmd.append("--no-baselines")
    if limit:
        cmd += ["--limit", str(limit)]
    return " ".join(cmd)


# ----------------------------------------------------------------------------- steps


def train_settings(args, name: str) -> dict:
    """Keywords of :func:`lmpcli.train.fit` for a training variant (``--no-replica`` drops the replica)."""
    kw = dict(TRAIN_VARIANTS[name][1])
    if not args.replica:
        kw["replica"] = False
    return kw


def ensure_trained(args, name: str, progress: PrintProgress) -> Path:
    """``<runs-dir>/<name>/model.pt``, training it first when missing (or with ``--retrain``)."""
    kw = train_settings(args, name)
    run = Path(args.runs_dir) / name
    weights = run / "model.pt"
    if weights.is_file() and not args.retrain:
        cfg = read_checkpoint(weights)["config"]
        if cfg.get("image_size") != args.image_size or cfg.get("backbone") != args.backbone:
            raise SystemExit(f"{weights} was trained with {cfg.get('backbone')} at {cfg.get('image_size')} px, "
                             f"not {args.backbone} at {args.image_size} px: pass --retrain or another --runs-dir")
        progress.log(f"[{name}] reusing {weights}")
        return weights
    progress.log(f"[{name}] training: {train_command(args, run, kw)}")
    return fit(args.data, run, backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
               batch_size=args.batch_size, limit=args.limit, pretrained=args.pretrained, seed=args.seed,
               device=args.device, workers=args.workers, overwrite=True, progress=progress, **kw)


def _stamp(args, result: dict, name: str, desc: str, weights: Path, seconds: float) -> dict:
    """Add provenance to a variant's result and cache it as ``<runs-dir>/results/<name>.json``."""
    result.update(variant=name, description=desc, weights=str(weights),
                  study_command=" ".join(["python", *map(_q, sys.argv)]),
                  date=dt.datetime.now().isoformat(timespec="seconds"),
                  machine=f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}",
                  seconds=seconds)
    path = Path(args.runs_dir) / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1, default=str) + "\n")
    return result


def run_train_variant(args, name: str, progress: PrintProgress) -> dict:
    """Train (or reuse), evaluate and measure entropy of one pooling variant; cache the result."""
    start = time.perf_counter()
    desc, kw = TRAIN_VARIANTS[name][0], train_settings(args, name)
    weights = ensure_trained(args, name, progress)
    run = weights.parent
    meta = read_checkpoint(weights)["meta"]
    progress.log(f"[{name}] evaluating keypoints and feature-map entropy (one pass)")
    report = evaluate(args.data, split=args.split, weights=weights, methods=("lmpnet",), settings=KeypointSettings(k=args.k), entropy=True,
                      limit=args.eval_limit, batch_size=args.eval_batch_size, device=args.device,
                      workers=args.workers, progress=progress)
    cfg = report["config"]
    e, m = cfg["entropy"], cfg["num_filters"]  # top-m entropy over the filters filter selection keeps
    ent = {"entropy": e["all_filters"], "entropy_active": e["active_filters"], "entropy_top": e[f"top{m}_filters"],
           "top_m": m, "max_entropy": e["uniform_map"], "zero_fraction": e["dead_fraction"],
           "images": cfg["images"], "map_size": [cfg["feature_map"]] * 2}
    result = {"kind": "train", "settings": kw, "train_command": train_command(args, run, kw),
              "eval_command": eval_command(args, weights, {}, True, args.eval_limit) + " --entropy", "entropy": ent,
              "evaluation": {"table": report["table"].to_dict("records"), "config": cfg},
              "train": {"images": meta.get("train_images"), "epochs": meta.get("epochs"),
                        "seconds": meta.get("train_seconds"), "device": meta.get("device"),
                        "train_acc": (meta.get("history") or [{}])[-1].get("train_acc")}}
    return _stamp(args, result, name, desc, weights, time.perf_counter() - start)


def run_test_variants(args, names: list[str], progress: PrintProgress) -> dict[str, dict]:
    """Score the test-time variants in one shared pass of :func:`lmpcli.evaluate.evaluate` over
    ``--test-weights`` (default: the study's own ``lmp`` model); cache one result per variant."""
    start = time.perf_counter()
    if args.test_weights:
        weights = Path(args.test_weights)
        train_cmd = read_checkpoint(weights)["meta"].get("command", "unknown")
    else:
        weights = ensure_trained(args, "lmp", progress)
        train_cmd = train_command(args, weights.parent, train_settings(args, "lmp"))
    progress.log(f"[{', '.join(names)}] evaluating {weights} in one pass")
    report = evaluate(args.data, split=args.split, weights=weights, methods=(), baselines=True, settings=KeypointSettings(k=args.k),
                      variants={n: TEST_VARIANTS[n][1] for n in names}, limit=args.test_eval_limit,
                      batch_size=args.eval_batch_size, device=args.device, workers=args.workers, progress=progress)
    rows = report["table"].to_dict("records")
    seconds = time.perf_counter() - start
    out = {}
    for n in names:
        desc, kw = TEST_VARIANTS[n]
        table = [{**r, "method": "lmpnet"} if r["method"] == n else r for r in rows
                 if r["method"] == n or r["method"] not in TEST_VARIANTS]
        result = {"kind": "test", "settings": kw, "train_command": train_cmd,
                  "eval_command": eval_command(args, weights, kw, False, args.test_eval_limit),
                  "evaluation": {"table": table, "config": report["config"]}}
        out[n] = _stamp(args, result, n, desc, weights, seconds)
    return out


def load_results(runs_dir: Path) -> dict[str, dict]:
    found = {p.stem: json.loads(p.read_text()) for p in sorted((runs_dir / "results").glob("*.json"))}
    return {n: found[n] for n in ALL_VARIANTS if n in found}


# ----------------------------------------------------------------------------- figures


def active_entropy(e: dict) -> float | None:
    """Mean entropy over the maps that fire. Older cached results lack it; there it follows exactly
    from the all-maps mean and the dead share, since a dead map counts as uniform (log(h*w))."""
    if e.get("entropy_active") is not None:
        return e["entropy_active"]
    z = e["zero_fraction"]
    return None if z >= 1 else (e["entropy"] - z * e["max_entropy"]) / (1 - z)


def figure_entropy(results: dict[str, dict], path: Path) -> bool:
    """Bar chart of mean feature-map entropy per training variant (Fig. 6); False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print('no matplotlib: the entropy figure is skipped (pip install -e ".[bench]")')
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, r["entropy"]) for n, r in results.items() if r["kind"] == "train"]
    if not rows:
        return False
    names = [n for n, _ in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 + 1.3 * len(rows)), 3.8), dpi=120)
    m = rows[0][1].get("top_m")
    bars = [("all filters (dead maps count as uniform)", [e["entropy"] for _, e in rows], "#4c72b0"),
            ("maps that fire", [active_entropy(e) or 0.0 for _, e in rows], "#55a868"),
            (f"top-{m} filters per image", [e["entropy_top"] or 0.0 for _, e in rows], "#dd8452")]
    for i, (label, values, colour) in enumerate(bars):
        b = ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label, color=colour)
        ax.bar_label(b, fmt="%.2f", fontsize=7)
    hmax = rows[0][1]["max_entropy"]
    h, w = rows[0][1]["map_size"]
    ax.axhline(hmax, color="grey", ls="--", lw=1)
    ax.text(-0.45, hmax * 1.01, f"uniform map: log({h}x{w}) = {hmax:.2f}", ha="left", va="bottom", fontsize=8,
            color="grey")
    ax.set_xticks(x, names)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel("mean entropy (nats)")
    ax.set_ylim(0, hmax * 1.3)
    split = results[names[0]]["evaluation"]["config"]["split"]
    ax.set_title(f"Feature-map entropy, {rows[0][1]['images']} {split} images (lower = sparser)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _first_test_images(args, n: int) -> list[str]:
    """The first test image of each of the first ``n`` classes (several species)."""
    from lmpcli.data import CUBDataset

    ds = CUBDataset(args.data, args.split)
    table = ds.table.assign(label=ds.labels.numpy()).drop_duplicates("label").head(n)
    return [str(ds.root / "images" / f) for f in table["file"]]


def figure_pooling_filters(args, results: dict[str, dict], path: Path) -> dict | None:
    """The same filter indices' maps under the avg / max / lmp models on one test image (Fig. 5)."""
    import cv2

    from lmpcli.checkpoint import load_model
    from lmpcli.data import ImagePathDataset, collate_skip_errors, eval_transform
    from lmpcli.device import prepare_model, resolve_device
    from lmpcli.filters import choose_grid, collect_filter_peaks, render_filter_grid

    names = [n for n in POOLING_FIGURE if n in results]
    if not names:
        return None
    image = args.figure_image or _first_test_images(args, 1)[0]
    dev = resolve_device(args.device)
    models, stats = {}, {}
    for n in names:
        model, _ = load_model(results[n]["weights"], "cpu")
        model = prepare_model(model, dev)
        cfg = model.config
        loader = torch.utils.data.DataLoader(
            ImagePathDataset([image], eval_transform(cfg.image_size, cfg.mean, cfg.std)), batch_size=1,
            collate_fn=collate_skip_errors)
        models[n], stats[n] = model, collect_filter_peaks(model, loader, "main", dev)
    ref = "lmp" if "lmp" in names else names[0]
    ids = stats[ref].peaks[0].topk(args.figure_filters).indices.tolist()  # the reference model's strongest filters
    strips = []
    for n in names:
        sel = choose_grid(stats[n].peaks, n_rows=1, filters=ids)
        strips.append(render_filter_grid(models[n], stats[n], sel, tile=args.tile, normalize="tile", device=dev,
                                         title=f"{n}: {TRAIN_VARIANTS[n][0]}"))
    atomic_write_image(path, cv2.cvtColor(np.concatenate(strips), cv2.COLOR_RGB2BGR))
    return {"image": image, "filters": ids, "reference": ref, "models": names}


def figure_keypoints(args, results: dict[str, dict], path: Path) -> dict | None:
    """k=5 keypoints of ``--test-weights`` (else the study's lmp model) on several species (Fig. 7)."""
    import cv2

    from lmpcli.data import load_rgb
    from lmpcli.outputs import draw_keypoints
    from lmpcli.predict import predict_images

    trained = [n for n, r in results.items() if r["kind"] == "train"]
    if args.test_weights:
        name, weights = str(args.test_weights), args.test_weights
    elif trained:
        name = "lmp" if "lmp" in trained else trained[0]
        weights = results[name]["weights"]
    else:
        return None
    paths = _first_test_images(args, args.figure_images)
    side, cols = 256, 4
    tiles = []
    for item in predict_images(paths, weights=weights, settings=KeypointSettings(k=5), device=args.device, workers=0):
        rgb = np.asarray(load_rgb(item.image))
        h, w = rgb.shape[:2]
        s = side / max(h, w)
        small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        label = Path(item.image).parent.name.split(".", 1)[-1].replace("_", " ")
        drawn = draw_keypoints(bgr, item.xy * s, item.score, label)
        tile = np.full((side, side, 3), 255, np.uint8)
        y0, x0 = (side - drawn.shape[0]) // 2, (side - drawn.shape[1]) // 2
        tile[y0:y0 + drawn.shape[0], x0:x0 + drawn.shape[1]] = drawn
        tiles.append(tile)
    rows = []
    for i in range(0, len(tiles), cols):
        row = tiles[i:i + cols] + [np.full((side, side, 3), 255, np.uint8)] * (cols - len(tiles[i:i + cols]))
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in row], 1))
    atomic_write_image(path, np.concatenate(rows))
    return {"model": name, "images": paths}


# ----------------------------------------------------------------------------- report


def _f(v, nd: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{v:.{nd}f}"


def _method_row(result: dict, method: str) -> dict:
    return next((r for r in result["evaluation"]["table"] if r["method"] == method), {})


def write_report(args, results: dict[str, dict], figures: dict) -> Path:
    out_dir = Path(args.out_dir)
    k = args.k
    kp_cols = [f"KP{i}" for i in range(1, k + 1)]
    lines = ["# Pooling and filter-selection study", "",
             "Generated by `benchmarks/pooling_study.py` (Guo & Farrell, Sec. 4.1 Table 1 and Figs. 5-7, "
             "Sec. 4.2 Table 2). Short CPU schedules: numbers are for comparing variants under the same "
             "budget, not the paper's fully trained ResNet-50. Greedy PCK@0.1 (%): a prediction is correct "
             "within 0.1 x the shorter image side of any visible part. Entropy: mean over images and "
             "filters of each final-conv map normalised to a distribution over its cells (nats).", "",
             f"This file and its figures: `{' '.join(['python', *map(_q, sys.argv)])}` (per-variant commands "
             "at the end).", ""]
    train = {n: r for n, r in results.items() if r["kind"] == "train"}
    test = {n: r for n, r in results.items() if r["kind"] == "test"}
    if train:
        any_r = next(iter(train.values()))
        ev = any_r["evaluation"]["config"]
        m = any_r["entropy"].get("top_m")
        lines += ["## Pooling variants (Table 1, Fig. 6)", "",
                  f"Evaluated on {ev['images']} `{ev['split']}` images of `{ev['data']}` spread evenly over the "
                  f"split, k={ev['k']}, {ev['backbone']} at {ev['image_size']} px "
                  f"({ev['feature_map']}x{ev['feature_map']} maps), the checkpoint's keypoint settings (thr "
                  f"{ev['thr']:g} cells, m={ev['num_filters']}). Every variant: same seed, data order and schedule "
                  "(`train images x epochs`); `replica`: whether the replica was trained (and fused at test "
                  "time). `paper acc`: the paper's Table 1 (ResNet-50, all 200 classes, full training), quoted "
                  "for reference, not measured here.", "",
                  f"| variant | acc | paper acc | train acc | PCK avg | {' | '.join(kp_cols)} | part recall | "
                  f"entropy (all) | entropy (firing) | entropy (top-{m}) | dead maps | channel-mean PCK | centre PCK | replica | "
                  "train images x epochs | train s |",
                  "|---|" + "---:|" * (k + 14)]
        for n, r in train.items():
            row, e, t = _method_row(r, "lmpnet"), r["entropy"], r["train"]
            train_acc = None if t.get("train_acc") is None else 100 * t["train_acc"]
            lines.append(
                f"| {n} | {_f(row.get('acc'))} | {_f(PAPER_ACCURACY.get(n))} | {_f(train_acc)} | {_f(row.get('avg'))} | "
                + " | ".join(_f(row.get(c)) for c in kp_cols)
                + f" | {_f(row.get('recall'))} | {_f(e['entropy'], 3)} | {_f(active_entropy(e), 3)} | "
                f"{_f(e['entropy_top'], 3)} | "
                f"{_f(100 * e['zero_fraction'])}% | {_f(_method_row(r, 'channel-mean').get('avg'))} | "
                f"{_f(_method_row(r, 'centre').get('avg'))} | {'yes' if r['settings'].get('replica', True) else 'no'} | "
                f"{t['images']} x {t['epochs']} | {_f(t['seconds'], 0)} |")
        lines += ["", "Dead maps: share of (image, filter) maps that are all zero. The all-filters entropy "
                  "counts them as uniform (maximal), so it mixes sparsity with the number of dead filters; "
                  "`firing` averages only the maps with a positive peak, `top-m` only the filters that filter "
                  "selection keeps.", ""]
        if "entropy" in figures:
            lines += [f"![feature-map entropy]({figures['entropy']})", ""]
    if test:
        first = next(iter(test.values()))
        ev = first["evaluation"]["config"]
        groups = [c[len("recall_"):] for c in _method_row(first, "lmpnet") if c.startswith("recall_")]
        lines += ["## Test-time variants (Sec. 3.2 filter selection size m, Sec. 3.3 replica fusion, "
                  "Table 2 erase radius thr)", "",
                  f"Checkpoint `{first['weights']}` ({ev['backbone']} at {ev['image_size']} px, "
                  f"{ev['feature_map']}x{ev['feature_map']} maps; trained by `{first['train_command']}`), "
                  f"{ev['images']} `{ev['split']}` images, k={ev['k']}; all variants and both baselines scored "
                  "in one pass over the same images (shared forwards). Part recall: share of visible parts "
                  "within reach of some keypoint, overall and per part group.", "",
                  f"| variant | setting | PCK avg | {' | '.join(kp_cols)} | part recall | "
                  + " | ".join(groups) + " |",
                  "|---|---|" + "---:|" * (k + 2 + len(groups))]
        base_rows = [r for r in first["evaluation"]["table"] if r["method"] != "lmpnet"]
        for n, r in [*test.items(), *((b["method"], None) for b in base_rows)]:
            row = _method_row(r, "lmpnet") if r else next(b for b in base_rows if b["method"] == n)
            setting = ", ".join(f"{a}={b}" for a, b in r["settings"].items()) if r else "baseline"
            lines.append(f"| {n} | {setting} | {_f(row.get('avg'))} | " + " | ".join(_f(row.get(c)) for c in kp_cols)
                         + f" | {_f(row.get('recall'))} | " + " | ".join(_f(row.get(f"recall_{g}")) for g in groups)
                         + " |")
        if k == 5 and any(n in PAPER_PCK for n in test):
            lines += ["", "The paper's Table 2 (ResNet-50, all 200 classes, 448 px; quoted, not measured here):", "",
                      "| paper | KP1 | KP2 | KP3 | KP4 | KP5 | avg |", "|---|" + "---:|" * 6]
            lines += [f"| {n} | " + " | ".join(f"{v:.1f}" for v in PAPER_PCK[n]) + " |" for n in test if n in PAPER_PCK]
        lines.append("")
    if "pooling_filters" in figures:
        info = figures["pooling_filters_info"]
        lines += ["## Filter maps under each pooling (Fig. 5)", "",
                  f"Filters {', '.join(map(str, info['filters']))} (the {info['reference']} model's strongest on "
                  f"this image), the same indices under each model (rows: {', '.join(info['models'])}); every "
                  f"tile is scaled to its own peak, so the spread of the colour shows sparsity. Image: "
                  f"`{info['image']}`.", "", f"![filter maps per pooling]({figures['pooling_filters']})", ""]
    if "keypoints" in figures:
        info = figures["keypoints_info"]
        lines += ["## Keypoints, k=5 (Fig. 7)", "",
                  f"`{info['model']}` on the first test image of {len(info['images'])} species.", "",
                  f"![keypoints]({figures['keypoints']})", ""]
    lines += ["## Commands", "",
              "Each variant as CLI commands equivalent to what the study ran (`fit()` / `evaluate()` with the "
              "same arguments); entropy through the library call shown.", ""]
    for n, r in results.items():
        lines += [f"**{n}** ({r['description']}; {r['date']}, {r['machine']}, study step {_f(r['seconds'], 0)} s):",
                  "", "```sh", r["train_command"] if r["kind"] == "train" else f"# model: {r['train_command']}",
                  r["eval_command"]]
        if r["kind"] == "train":
            if "entropy_command" in r:  # results cached before entropy moved into the evaluation pass
                lines.append(f"python -c \"import lmpcli.sparsity; print({r['entropy_command']})\"")
        lines += ["```", "", f"Produced by: `{r['study_command']}`", ""]
    path = out_dir / "results.md"
    atomic_write_text(path, "\n".join(lines))
    return path


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="variants: " + ", ".join(ALL_VARIANTS))
    p.add_argument("--data", required=True, help="CUB-200-2011-layout folder (train split to train, --split to score).")
    p.add_argument("--variants", default=",".join(ALL_VARIANTS), help="Comma-separated variants (default: all).")
    p.add_argument("--runs-dir", default="runs/pooling_study", help="Run folders and cached results per variant.")
    p.add_argument("--out-dir", default="docs", help="Where results.md and its PNGs go.")
    p.add_argument("--split", default="test", help="Split to evaluate on.")
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="Train on a random subset of this many images.")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="Score the training variants on N images spread evenly over the split (default: all).")
    p.add_argument("--test-weights", default=None,
                   help="Checkpoint for the test-time variants (default: the study's own lmp model), e.g. the shipped weights.")
    p.add_argument("--test-eval-limit", type=int, default=None,
                   help="Score the test-time variants on N images spread over the split (default: all).")
    p.add_argument("--k", type=int, default=5, help="Keypoints scored per image.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-replica", dest="replica", action="store_false",
                   help="Train the pooling variants without the replica network (about half the cost).")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="Train from scratch.")
    p.add_argument("--retrain", action="store_true", help="Train again even when model.pt exists.")
    p.add_argument("--report-only", action="store_true", help="Only write the report and figures from the cached results of finished variants.")
    p.add_argument("--no-figures", dest="figures", action="store_false")
    p.add_argument("--figure-image", default=None, help="Image for the Fig. 5 strip (default: first test image).")
    p.add_argument("--figure-filters", type=int, default=8, help="Filters in the Fig. 5 strip.")
    p.add_argument("--figure-images", type=int, default=8, help="Species in the Fig. 7 panel.")
    p.add_argument("--tile", type=int, default=128, help="Tile side of the Fig. 5 strip, pixels.")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in ALL_VARIANTS]
    if unknown:
        p.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(ALL_VARIANTS)}")
    if not (Path(args.data) / "images.txt").is_file():
        p.error(f"{args.data} is not a CUB-200-2011-layout folder (no images.txt)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = PrintProgress(args.quiet)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # training variants first, so test-time variants reuse a fresh lmp model
    done: dict[str, dict] = {}
    if not args.report_only:
        for name in [v for v in args.variant_list if v in TRAIN_VARIANTS]:
            done[name] = run_train_variant(args, name, progress)
        test_names = [v for v in args.variant_list if v in TEST_VARIANTS]
        if test_names:
            done.update(run_test_variants(args, test_names, progress))
    for name, r in done.items():
        row = _method_row(r, "lmpnet")
        ent = f", entropy {r['entropy']['entropy']:.3f}" if "entropy" in r else ""
        progress.log(f"[{name}] PCK avg {_f(row.get('avg'))}, acc {_f(row.get('acc'))}{ent} ({r['seconds']:.0f} s)")
    results = load_results(Path(args.runs_dir))
    figures: dict = {}
    if args.figures:
        if figure_entropy(results, out_dir / "results_entropy.png"):
            figures["entropy"] = "results_entropy.png"
        info = figure_pooling_filters(args, results, out_dir / "results_pooling_filters.png")
        if info:
            figures.update(pooling_filters="results_pooling_filters.png", pooling_filters_info=info)
        info = figure_keypoints(args, results, out_dir / "results_keypoints.png")
        if info:
            figures.update(keypoints="results_keypoints.png", keypoints_info=info)
    path = write_report(args, results, figures)
    progress.log(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
