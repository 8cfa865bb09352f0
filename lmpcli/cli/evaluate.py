"""``lmp evaluate``: greedy PCK, part recall, Kp / NMI / ARI and accuracy on a CUB-layout folder."""

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..choices import METHODS
from ..settings import KeypointSettings
from ._console import say
from ._progress import RichProgress
from .options import (IO, KEYPOINT_SETTINGS, METHOD, METHOD_OPTIONS, PERFORMANCE_OPTIONS, SCORING, SELECTION, Limit,
                      Overwrite, Quiet, WeightsList, command, method_keywords, parse_ids)

EPILOG = """Examples:

  lmp evaluate --data ../CUB_200_2011 --split test --k 5 --thr 3 --out results.csv

  lmp evaluate --data ../CUB_200_2011 --method lmpnet,parts --fit-images 1500 --out report.json

  lmp evaluate --data ../CUB_200_2011 --method parts --classes 41-50 --fit-classes 1-40 --weights runs/seen/model.pt

  lmp evaluate --data ../CUB_200_2011 --limit 400 --weights runs/seed0/model.pt --weights runs/seed1/model.pt
"""

@command(selection=SELECTION, keypoint=KEYPOINT_SETTINGS, per_method=METHOD_OPTIONS, performance=PERFORMANCE_OPTIONS)
def evaluate(
    data: Annotated[Path, typer.Option(metavar="DIR", show_default=False, rich_help_panel=IO,
                                       help="CUB-200-2011-layout folder.")],
    selection: dict = None,
    limit: Limit = None,
    weights: WeightsList = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE", rich_help_panel=IO,
                                                help="Also write the report to .csv or .json.")] = None,
    overwrite: Overwrite = False,
    method: Annotated[str, typer.Option(
        "--method", metavar="METHOD[,METHOD...]", rich_help_panel=METHOD,
        help=f"Comma-separated methods to score, of {', '.join(METHODS)}.")] = "lmpnet",
    baselines: Annotated[bool, typer.Option(rich_help_panel=SCORING,
                                            help="Also score the centre and channel-mean baselines.")] = True,
    alpha: Annotated[float, typer.Option(metavar="FRACTION", rich_help_panel=SCORING,
                                         help="PCK radius, fraction of the shorter image side.")] = 0.1,
    fit_images: Annotated[Optional[int], typer.Option(
        min=0, metavar="N", rich_help_panel=SCORING, show_default=False,
        help="Train-split images (spread over every class) the methods also run on to fit the Kp regressors; "
             "0 = no Kp / NMI / ARI; unset: all of them.")] = None,
    fit_classes: Annotated[Optional[str], typer.Option(
        metavar="IDS", callback=parse_ids, rich_help_panel=SCORING, show_default=False,
        help="CUB class ids of the train images the Kp regressors are fit on, e.g. 1-40 (unset: those of "
             "--classes).")] = None,
    crop_to_box: Annotated[bool, typer.Option(
        rich_help_panel=SCORING,
        help="Evaluate on images cropped to their ground-truth box (PCK radius from the crop's shorter side).")] = False,
    entropy: Annotated[bool, typer.Option(
        rich_help_panel=SCORING, help="Also report the mean feature-map entropy of the main network (Fig. 6).")] = False,
    keypoint: KeypointSettings = None,
    per_method: dict = None,
    performance: dict = None,
    quiet: Quiet = False,
) -> None:
    """Score keypoint methods on a CUB-layout folder, beside trivial baselines.

    Greedy PCK@alpha per keypoint rank, part recall and accuracy, where each keypoint rank lands
    (head, body, wings, tail, legs or a miss), and Kp / NMI / ARI; for the parts method also
    NMI / ARI read off its part maps, as PDiscoNet computes them. Exit status: 0 done, 1 error,
    2 refused before any work (docs/robustness.md)."""
    from ..validate import check_evaluate_call

    methods = [m.strip() for m in method.split(",") if m.strip()]
    check_evaluate_call(data, split=selection["split"], out=out, weights=weights or None, alpha=alpha, limit=limit,
                        overwrite=overwrite, methods=methods, settings=keypoint, **performance)
    from ..evaluate import evaluate as run_evaluate
    from ..evaluate import write_report

    report = run_evaluate(
        data, weights=weights or None, methods=methods, baselines=baselines, entropy=entropy, alpha=alpha,
        method_options=method_keywords(methods, per_method), limit=limit, fit_images=fit_images,
        fit_classes=fit_classes, crop_to_box=crop_to_box, progress=RichProgress(not quiet), settings=keypoint, **selection, **performance,
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 prints and writes
        return
    # piped or logged output gets a wide table instead of truncated numbers
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(pck_table(report, alpha, selection["split"], report["config"]["k"]))
    console.print(recall_table(report, alpha))
    console.print(landing_table(report, methods, alpha))
    if {"Kp", "NMI_map"} & set(report["table"].columns):
        console.print(part_discovery_table(report))
    if "entropy" in report["config"]:
        e = report["config"]["entropy"]
        say("feature-map entropy (nats, uniform map = {:.2f}): ".format(e["uniform_map"])
            + ", ".join(f"{key} {v:.3f}" for key, v in e.items() if key != "uniform_map"))
    if out is not None:
        write_report(report, out, overwrite=True)
        say(f"written {out}")


def _table(title: str, first: list[str], columns: list[str]):
    """An empty rich table: left-aligned ``first`` columns, then right-aligned number ``columns``."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, title=title)
    for col in first:
        table.add_column(col, no_wrap=True)
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True, min_width=max(len(col), 5))
    return table


def _cell(v: float, fmt: str = ".1f") -> str:
    return "–" if v != v else format(v, fmt)  # NaN (no network run, no score) -> dash


def _scored(report: dict):
    """The rows of ``report["table"]`` that have greedy PCK (the mean-landmark row has none)."""
    df = report["table"]
    return df[df["avg"].notna()]


def pck_table(report: dict, alpha: float, split: str, k: int):
    """Rich table of greedy PCK per rank, its average, part recall, accuracy and images/s (one row per method)."""
    cfg, df = report["config"], report["table"]
    ranks = [c for c in df.columns if c.startswith("KP")]
    table = _table(f"greedy PCK@{alpha} (%), {cfg['images']} {split} images, k={k}, "
                   f"thr={cfg['thr']:g} cells of {cfg['feature_map']}x{cfg['feature_map']}",
                   ["method"], [*ranks, "avg", "recall", "acc", "img/s"])
    for _, row in _scored(report).iterrows():
        table.add_row(row["method"], *[_cell(row[c]) for c in [*ranks, "avg", "recall", "acc"]],
                      _cell(row["images_per_s"], ".3g"))
    return table


def recall_table(report: dict, alpha: float):
    """Rich table of part recall per part group (one row per method)."""
    groups = [c for c in report["table"].columns if c.startswith("recall_")]
    table = _table(f"part recall@{alpha} (%) by part group", ["method"], [g.removeprefix("recall_") for g in groups])
    for _, row in _scored(report).iterrows():
        table.add_row(row["method"], *[_cell(row[c]) for c in groups])
    return table


def part_discovery_table(report: dict):
    """Rich table of the Kp / NMI / ARI columns of ``report["table"]`` (one row per method)."""
    from ..meters import MAP_COLUMNS
    from ..part_metrics import PART_COLUMNS

    df, cfg = report["table"], report["config"]
    columns = [c for c in (*PART_COLUMNS, *MAP_COLUMNS) if c in df.columns]
    title = ("part discovery (%): "
             + (f"Kp (Huang & Li, lower is better; regressors fit on {cfg['fit_images']} train images"
                + (f" of classes {_ids(cfg['fit_classes'])}" if cfg.get("fit_classes") != cfg.get("classes") else "") + "), "
                "NMI / ARI of the nearest keypoint's id" if "Kp" in columns else "")
             + ("; " if "Kp" in columns and "NMI_map" in columns else "")
             + ("NMI_map / ARI_map of the part maps (PDiscoNet's protocol)" if "NMI_map" in columns else ""))
    table = _table(title, ["method"], columns)
    for _, row in df.iterrows():
        table.add_row(row["method"], *[_cell(row[c], ".2f") for c in columns])
    return table


def landing_table(report: dict, methods: list[str], alpha: float):
    """Rich table of ``report["landing"]`` for ``methods``: where each keypoint rank lands."""
    df = report["landing"]
    groups = [c for c in df.columns if c not in ("method", "rank")]
    table = _table(f"where each keypoint lands (% of images; nearest visible part within {alpha})",
                   ["method"], [])
    table.add_column("rank", justify="right")
    for col in groups:
        table.add_column(col, justify="right", no_wrap=True, min_width=5)
    for _, row in df[df["method"].isin(methods)].iterrows():
        table.add_row(row["method"], f"KP{row['rank']}", *[f"{row[c]:.1f}" for c in groups])
    return table


def _ids(ids: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3,7" (class ids as --classes takes them)."""
    runs, start = [], None
    for i, c in enumerate(ids):
        if start is None:
            start = c
        if i + 1 == len(ids) or ids[i + 1] != c + 1:
            runs.append(f"{start}" if start == c else f"{start}-{c}")
            start = None
    return ",".join(runs)
