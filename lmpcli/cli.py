"""The ``lmp`` command line: thin Typer wrappers over the library (typer and rich live here only)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

app = typer.Typer(
    name="lmp",
    help="Discover semantic object keypoints from class labels only (LMPNet, Guo & Farrell).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def _group() -> None:
    """Discover semantic object keypoints from class labels only (LMPNet, Guo & Farrell)."""


class RichProgress:
    """rich implementation of :class:`lmpcli.progress.Progress` (to stderr)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Progress | None = None
        self._task = None

    def start(self, description: str, total: int | None) -> None:
        if not self.enabled:
            return
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                             console=err, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, metrics="")

    def advance(self, n: int = 1, **metrics: float) -> None:
        if self._bar is not None:
            text = " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            self._bar.update(self._task, advance=n, metrics=text)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def log(self, message: str) -> None:
        err.print(message)


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error to stderr and exit non-zero."""
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .backbones import BackboneError
    from .checkpoint import CheckpointError
    from .data import InputError
    from .outputs import OutputError

    return (InputError, CheckpointError, BackboneError, OutputError, ValueError, OSError)


def run_guarded(fn, *args, **kwargs):
    """Call a library function; known user errors become a one-line message and exit 1."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except _user_errors() as e:
        fail(str(e))


@app.command(epilog="Example:  lmp train ../CUB_200_2011 --out runs/lite0 --epochs 4")
def train(
    data: Path = typer.Argument(..., help="CUB-200-2011-layout folder (train split used) or one sub-folder of images per class."),
    out: Path = typer.Option(Path("runs/lmpnet"), "--out", "-o", help="Run folder: last.pt (resumable), model.pt, metrics.csv."),
    backbone: str = typer.Option("efficientnet-lite0", help="efficientnet-lite0/1/2 (offline weights) or resnet18/34/50/101."),
    image_size: int = typer.Option(448, help="Square input side in pixels (448 -> 14x14 feature maps)."),
    epochs: int = typer.Option(4, min=1),
    batch_size: int = typer.Option(16, min=1),
    lr: float = typer.Option(1e-3, help="Peak AdamW learning rate (warm-up then cosine)."),
    weight_decay: float = typer.Option(1e-4),
    label_smoothing: float = typer.Option(0.1),
    pooling: str = typer.Option("lmp", help="Global pooling: avg, max or lmp (leaky max, Sec. 3.1)."),
    eps: float = typer.Option(0.1, help="Leak of leaky max pooling (Eq. 3)."),
    num_filters: int = typer.Option(128, help="Filters kept per image by filter selection (Sec. 3.2)."),
    k: int = typer.Option(5, help="Keypoints stored as the checkpoint's default."),
    thr: float = typer.Option(3.0, help="Clustering erase radius in feature-map cells (Algorithm 1)."),
    iterations: int = typer.Option(3, help="Clustering iterations per keypoint (Algorithm 1)."),
    mask_size: float = typer.Option(0.25, help="Attention mask side, fraction of the input side (Sec. 3.3)."),
    replica: bool = typer.Option(True, help="Train the replica network on masked images (Sec. 3.3)."),
    freeze: int = typer.Option(12, help="Backbone stages kept frozen (stem and blocks, input first)."),
    crop_scale: float = typer.Option(0.6, help="Smallest area kept by random resized crop (1 = none)."),
    jitter: float = typer.Option(0.2, help="Colour jitter strength (0 = none)."),
    classes: Optional[str] = typer.Option(None, help="Only these CUB class ids, e.g. 1-40 or 1,2,5."),
    limit: Optional[int] = typer.Option(None, help="Train on a random subset of this many images."),
    pretrained: bool = typer.Option(True, help="Start from ImageNet weights."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    workers: int = typer.Option(2, help="Data-loading processes."),
    resume: bool = typer.Option(False, help="Continue the run in --out from last.pt."),
    overwrite: bool = typer.Option(False, help="Replace a previous run in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train LMPNet and its replica network on labelled images (no keypoint labels needed)."""
    from .train import fit

    path = run_guarded(
        fit, data, out, backbone=backbone, image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, label_smoothing=label_smoothing, pooling=pooling, eps=eps,
        num_filters=num_filters, k=k, thr=thr, iterations=iterations, mask_size=mask_size, replica=replica,
        freeze=freeze, crop_scale=crop_scale, jitter=jitter, classes=parse_ids(classes), limit=limit,
        pretrained=pretrained, seed=seed, device=device, workers=workers, resume=resume, overwrite=overwrite,
        progress=RichProgress(not quiet),
    )
    err.print(f"weights written to {path}")


PREDICT_EPILOG = """Examples:

  lmp predict examples/ --k 5 --out kps.csv

  lmp predict 'photos/**/*.jpg' --json --out kps.json --vis-dir annotated/

  find photos -name '*.jpg' | lmp predict - --out - | head
"""


@app.command(epilog=PREDICT_EPILOG)
def predict(
    inputs: List[str] = typer.Argument(..., help="Image files, folders (recursive), globs, or - to read paths from stdin."),
    out: str = typer.Option("-", "--out", "-o", help="Output .csv or .json file; - streams CSV to stdout."),
    json_format: bool = typer.Option(False, "--json", help="Write JSON (COCO-style keypoint triplets + class)."),
    vis_dir: Optional[Path] = typer.Option(None, help="Write annotated images (numbered markers) here."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint (default: the shipped weights)."),
    method: str = typer.Option("lmpnet", help="Keypoint method: lmpnet, channel-mean or centre."),
    k: int = typer.Option(5, min=1, help="Keypoints per image."),
    thr: Optional[float] = typer.Option(None, help="Clustering erase radius in feature-map cells (default: checkpoint's)."),
    batch_size: int = typer.Option(8, min=1),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    workers: int = typer.Option(2, min=0, help="Image-decoding processes."),
    overwrite: bool = typer.Option(False, help="Replace existing output files."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Predict keypoints: CSV rows (image, rank, x, y, score) in original-image pixels."""
    from .predict import run_predict

    def on_error(path: str, reason: str) -> None:
        err.print(f"[yellow]skipped[/yellow] {path}: {reason}", highlight=False)

    summary = run_guarded(
        run_predict, inputs, out=out, json_format=json_format, vis_dir=vis_dir, overwrite=overwrite,
        weights=weights, method=method, k=k, thr=thr, batch_size=batch_size, device=device, workers=workers,
        on_error=on_error, progress=RichProgress(not quiet and out != "-"),
    )
    if not quiet:
        where = "" if out == "-" else f" -> {out}"
        err.print(f"{summary['images']} images, {len(summary['errors'])} skipped, "
                  f"{summary['seconds']:.1f} s{where}", highlight=False)


@app.command(epilog="Example:  lmp evaluate --data ../CUB_200_2011 --split test --k 5 --thr 3 --out results.csv")
def evaluate(
    data: Path = typer.Option(..., help="CUB-200-2011-layout folder."),
    split: str = typer.Option("test", help="train, test or all."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint (default: the shipped weights)."),
    method: str = typer.Option("lmpnet", "--method", help="Comma-separated methods to score."),
    baselines: bool = typer.Option(True, help="Also score the centre and channel-mean baselines."),
    k: int = typer.Option(5, min=1),
    thr: Optional[float] = typer.Option(None, help="Clustering erase radius in cells (default: checkpoint's)."),
    alpha: float = typer.Option(0.1, help="PCK radius, fraction of the shorter image side."),
    classes: Optional[str] = typer.Option(None, help="Only these CUB class ids, e.g. 41-50."),
    limit: Optional[int] = typer.Option(None, help="Only the first N images."),
    batch_size: int = typer.Option(8, min=1),
    device: str = typer.Option("auto"),
    workers: int = typer.Option(2, min=0),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the table to .csv or .json."),
    overwrite: bool = typer.Option(False),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Greedy PCK@alpha per keypoint rank, part recall and accuracy, beside trivial baselines."""
    from rich.table import Table

    from .evaluate import evaluate as run_evaluate
    from .evaluate import write_report

    if out is not None:
        from .outputs import check_writable

        run_guarded(check_writable, out, overwrite)
    report = run_guarded(
        run_evaluate, data, split=split, weights=weights, methods=[m.strip() for m in method.split(",") if m.strip()],
        baselines=baselines, k=k, thr=thr, alpha=alpha, classes=parse_ids(classes), limit=limit,
        batch_size=batch_size, device=device, workers=workers, progress=RichProgress(not quiet),
    )
    cfg = report["config"]
    table = Table(title=f"greedy PCK@{alpha} (%) on {cfg['images']} {split} images, k={k}, thr={cfg['thr']} "
                        f"cells of {cfg['feature_map']}x{cfg['feature_map']}")
    df = report["table"]
    for col in df.columns:
        table.add_column(col, justify="left" if col == "method" else "right")
    for _, row in df.iterrows():
        table.add_row(*[str(v) if isinstance(v, str) else f"{v:.1f}" for v in row.tolist()])
    Console().print(table)
    if out is not None:
        run_guarded(write_report, report, out, overwrite=True)
        err.print(f"written {out}")


def parse_ids(spec: str | None) -> list[int] | None:
    """``"1-40"`` / ``"1,3,5-7"`` -> list of ints; None stays None."""
    if not spec:
        return None
    ids: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            ids.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        fail(f"cannot parse class ids {spec!r}; use e.g. 1-40 or 1,2,5")
    return ids


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
