"""The ``lmp`` command line: thin Typer wrappers over the library (typer and rich live here only)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

app = typer.Typer(
    name="lmp",
    help="Discover semantic object keypoints from class labels only (LMPNet, Guo & Farrell).\n\n"
         "Exit status: 0 all inputs processed, 1 error, 2 refused before any work (usage error), "
         "3 finished with skipped inputs (docs/robustness.md).",
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


#: Exit statuses of every command (docs/robustness.md): 0 every input processed; 1 an error during
#: the run; 2 a usage error, refused before any work (click's own code for bad options); 3
#: finished, outputs written, but some inputs were skipped (each reported on stderr).
EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED = 1, 2, 3


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error to stderr and exit non-zero."""
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def check_call(fn, *args, **kwargs):
    """Run a torch-free check of :mod:`lmpcli.validate`; a refusal becomes a one-line message and exit 2."""
    from .validate import UsageError

    try:
        return fn(*args, **kwargs)
    except UsageError as e:
        fail(str(e), EXIT_USAGE)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .backbones import BackboneError
    from .checkpoint import CheckpointError
    from .data import InputError
    from .outputs import OutputError

    return (InputError, CheckpointError, BackboneError, OutputError, ValueError, OSError)


def _stdout_closed() -> None:
    """The reader of stdout went away (``lmp predict ... | head``): exit quietly like other Unix
    tools, with 141 (128 + SIGPIPE); stdout is pointed at /dev/null so the interpreter's final
    flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. a test runner's buffer)
        pass
    raise typer.Exit(141)


def run_guarded(fn, *args, **kwargs):
    """Call a library function; known user errors become a one-line message and exit 1."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        _stdout_closed()
    except _user_errors() as e:
        fail(str(e))


TRAIN_EPILOG = """Examples:

  lmp train ../CUB_200_2011 --out runs/lite0 --epochs 4

  lmp train ../CUB_200_2011 --out runs/lite0 --epochs 6 --resume

  lmp train ../CUB_200_2011 --out runs/wd3 --weight-decay 3 --bn-images 512

  torchrun --standalone --nproc-per-node 4 -m lmpcli train ../CUB_200_2011 --out runs/ddp --batch-size 4   # docs/distributed.md
"""


@app.command(epilog=TRAIN_EPILOG)
def train(
    data: Path = typer.Argument(..., help="CUB-200-2011-layout folder (train split used) or one sub-folder of images per class."),
    out: Path = typer.Option(Path("runs/lmpnet"), "--out", "-o", help="Run folder: last.pt (resumable), model.pt, metrics.csv."),
    backbone: str = typer.Option("efficientnet-lite0", help="efficientnet-lite0/1/2 (offline weights) or resnet18/34/50/101."),
    image_size: int = typer.Option(448, help="Square input side in pixels (448 -> 14x14 feature maps)."),
    epochs: int = typer.Option(4, min=1),
    batch_size: int = typer.Option(16, min=1),
    lr: float = typer.Option(1e-3, help="Peak AdamW learning rate (warm-up then cosine)."),
    weight_decay: float = typer.Option(1.0, help="AdamW decoupled weight decay (1 since quality-log section 23; was 1e-4)."),
    label_smoothing: float = typer.Option(0.1),
    pooling: str = typer.Option("lmp", help="Global pooling: avg, max or lmp (leaky max, Sec. 3.1)."),
    eps: float = typer.Option(0.1, help="Leak of leaky max pooling (Eq. 3)."),
    num_filters: int = typer.Option(128, help="Filters kept per image by filter selection (Sec. 3.2)."),
    k: int = typer.Option(5, help="Keypoints stored as the checkpoint's default."),
    thr: float = typer.Option(1.2, help="Clustering erase radius in feature-map cells, stored as the checkpoint's default (Algorithm 1; paper 3; 1.2 erases a 5-cell disk). Test-time only: it does not change training."),
    iterations: int = typer.Option(3, help="Clustering iterations per keypoint (Algorithm 1)."),
    mask_size: float = typer.Option(0.15, help="Attention mask side, fraction of the input side (Sec. 3.3)."),
    replica: bool = typer.Option(True, help="Train the replica network on masked images (Sec. 3.3)."),
    subcell: bool = typer.Option(True, help="Store sub-cell proposal peaks as the checkpoint's default (test-time only; on since quality log section 18)."),
    refine: bool = typer.Option(True, help="Store centroid keypoints as the checkpoint's default."),
    gate: float = typer.Option(0.0, min=0.0, max=1.0, help="Store the object gate as the checkpoint's default (0 = off, as in the paper)."),
    freeze: int = typer.Option(12, help="Backbone stages kept frozen (stem and blocks, input first)."),
    crop_scale: float = typer.Option(0.6, help="Smallest area kept by random resized crop (1 = none)."),
    jitter: float = typer.Option(0.2, help="Colour jitter strength (0 = none)."),
    cutmix: float = typer.Option(0.0, min=0.0, max=1.0, help="Chance per batch of CutMix augmentation (0 = off)."),
    classes: Optional[str] = typer.Option(None, help="Only these CUB class ids, e.g. 1-40 or 1,2,5."),
    limit: Optional[int] = typer.Option(None, help="Train on a random subset of this many images."),
    pretrained: bool = typer.Option(True, help="Start from ImageNet weights."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    workers: int = typer.Option(2, help="Data-loading processes."),
    resume: bool = typer.Option(False, help="Continue the run in --out from last.pt."),
    overwrite: bool = typer.Option(False, help="Replace a previous run in --out."),
    bn_images: int = typer.Option(0, min=0, help="After training, re-estimate batch-norm statistics on this many training images (0 = off, the default: it fixes eval-mode accuracy under strong weight decay but lowered greedy PCK on the shipped recipe, quality-log section 26). --resume on a finished run without it does this step alone."),
    parts: int = typer.Option(8, min=0, help="After training, fit this many parts with fixed identities on the training images (lmp predict --method parts; docs/parts.md); 0 = none."),
    sync_bn: bool = typer.Option(False, help="Under torchrun: batch-norm statistics over all processes' images in the trained blocks (SyncBatchNorm, CUDA only)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train LMPNet and its replica network on labelled images (no keypoint labels needed).

    An existing run in --out (last.pt, model.pt or metrics.csv) is never replaced without --resume or
    --overwrite. Exit status: 0 done, 1 error, 2 refused before any work (docs/robustness.md).
    """
    from .validate import check_train_call

    check_call(check_train_call, data, out, resume=resume, overwrite=overwrite, device=device, image_size=image_size,
               epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, label_smoothing=label_smoothing,
               eps=eps, num_filters=num_filters, k=k, thr=thr, iterations=iterations, mask_size=mask_size, gate=gate,
               freeze=freeze, crop_scale=crop_scale, jitter=jitter, cutmix=cutmix, limit=limit, workers=workers,
               bn_images=bn_images)
    from .train import fit

    path = run_guarded(
        fit, data, out, backbone=backbone, image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, label_smoothing=label_smoothing, pooling=pooling, eps=eps,
        num_filters=num_filters, k=k, thr=thr, iterations=iterations, mask_size=mask_size, replica=replica,
        subcell=subcell, refine=refine, gate=gate, freeze=freeze, crop_scale=crop_scale, jitter=jitter, cutmix=cutmix, classes=parse_ids(classes), limit=limit,
        pretrained=pretrained, seed=seed, device=device, workers=workers, resume=resume, overwrite=overwrite,
        bn_images=bn_images, parts=parts, sync_bn=sync_bn, progress=RichProgress(not quiet),
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 writes (and says so)
        err.print(f"weights written to {path}")


# Options shared by predict and evaluate (keywords of predict_images / evaluate).
WeightsOpt = Annotated[Optional[List[Path]], typer.Option(help="Checkpoint (default: the shipped weights). Repeat it for an LMPNet ensemble: every checkpoint's proposals are fused before one clustering and the logits averaged (extension; one forward of both networks per checkpoint).")]
ThrOpt = Annotated[Optional[float], typer.Option(help="LMPNet: clustering erase radius in feature-map cells (default: checkpoint's, 1.2 for the shipped weights; 2 puts more keypoints on the tail at 5 points lower greedy PCK; the paper: 3).")]
NumFiltersOpt = Annotated[Optional[int], typer.Option(help="LMPNet: filters kept per image and network (Sec. 3.2; default: checkpoint's).")]
IterationsOpt = Annotated[Optional[int], typer.Option(help="LMPNet: clustering iterations per keypoint (Algorithm 1).")]
ReplicaOpt = Annotated[bool, typer.Option(help="LMPNet: fuse the replica network's proposals (Sec. 3.3).")]
SubcellOpt = Annotated[Optional[bool], typer.Option("--subcell/--no-subcell", help="LMPNet: sub-cell proposal peaks (default: checkpoint's).")]
RefineOpt = Annotated[Optional[bool], typer.Option("--refine/--no-refine", help="LMPNet: keypoint at its cluster's centroid (default: checkpoint's).")]
GateOpt = Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="LMPNet: drop proposals where the channel-mean map is below this fraction of its peak (object gate, an extension; 0 = off; default: checkpoint's).")]
FlipOpt = Annotated[bool, typer.Option(help="LMPNet: test-time flip, also fuse the proposals of the mirrored image (an extension; twice the forward passes).")]
OutputStrideOpt = Annotated[Optional[int], typer.Option(help="16: twice as fine feature maps from the same weights (EfficientNet-Lite; about 1.4x the forward time; the checkpoint's --thr is doubled to keep its radius in pixels; no more accurate than 32 at the shipped radius). Default: 32, as trained.")]
TestImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size", min=32, help="Network input side at test time, pixels, a multiple of 32 (512 -> 16x16 feature maps); the checkpoint's --thr is rescaled to keep the erased disk the same fraction of the image. Default: the checkpoint's, as trained.")]
OccluderSizeOpt = Annotated[int, typer.Option(help="occlusion-gbp: occluder side, pixels of the occlusion input.")]
OccluderStrideOpt = Annotated[int, typer.Option(help="occlusion-gbp: occluder stride, pixels.")]
ChunkSizeOpt = Annotated[int, typer.Option(help="occlusion-gbp: occluded copies per forward pass (memory knob).")]
OcclusionInputSizeOpt = Annotated[Optional[int], typer.Option(help="occlusion-gbp: run occlusion at this input side (e.g. 112) to save time.")]
CoarseWeightOpt = Annotated[float, typer.Option(help="occlusion-gbp: weight of the occlusion map in the fusion.")]
FineWeightOpt = Annotated[float, typer.Option(help="occlusion-gbp: weight of the guided-backprop map in the fusion.")]
NmsRadiusOpt = Annotated[int, typer.Option(help="occlusion-gbp: non-maximum suppression radius, pixels.")]
KeepFractionOpt = Annotated[float, typer.Option(help="occlusion-gbp: keep this top share of peaks by confidence.")]
BackendOpt = Annotated[str, typer.Option(help="Network runtime: auto (ONNX Runtime on the CPU, torch on CUDA), torch or onnxruntime. ONNX graphs are exported once per checkpoint and cached (LMP_CACHE_DIR, default ~/.cache/lmp/onnx).")]
WorkersOpt = Annotated[Optional[int], typer.Option(min=0, help="Image-decoding processes (default: the CPU cores, at most 8; 0 decodes in the main process).")]
CamNmsRadiusOpt = Annotated[int, typer.Option(help="cam: non-maximum suppression radius, feature-map cells.")]


PREDICT_EPILOG = """Examples:

  lmp predict examples/ --k 5 --out kps.csv

  lmp predict 'photos/**/*.jpg' --json --out kps.json --vis-dir annotated/

  find photos -name '*.jpg' | lmp predict - --out - | head

  lmp predict photos/ --weights runs/seed0/model.pt --weights runs/seed1/model.pt --out kps.csv   # an ensemble

  lmp predict photos/ --shard 3/8 --out kps.csv --resume   # writes kps.shard-00003-of-00008.csv

  lmp merge-shards kps.csv

  lmp predict photos/ --landmarks cub-landmarks.json --out landmarks.csv   # named landmarks (lmp fit-landmarks)
"""


@app.command(epilog=PREDICT_EPILOG)
def predict(
    inputs: List[str] = typer.Argument(..., help="Image files, folders (recursive), globs, or - to read paths from stdin."),
    out: str = typer.Option("-", "--out", "-o", help="Output .csv or .json file; - streams CSV to stdout."),
    json_format: bool = typer.Option(False, "--json", help="Write JSON (COCO-style keypoint triplets + class)."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Write JSON Lines, one image a line (also for a .jsonl --out); streams on stdout."),
    shard: Optional[str] = typer.Option(None, help="i/N: only shard i (from 0) of N of the sorted inputs, into OUT's stem.shard-0000i-of-0000N file; under torchrun: rank/world size. Join with lmp merge-shards."),
    resume: bool = typer.Option(False, help="Continue a killed run: skip the images already in OUT's unfinished .part file."),
    vis_dir: Optional[Path] = typer.Option(None, help="Write annotated images (numbered markers) here."),
    weights: WeightsOpt = None,
    method: str = typer.Option("lmpnet", help="Keypoint method: lmpnet, occlusion-gbp, cam, channel-mean, centre, or parts (one point per part of the checkpoint's part model, in part order; CSV image, part, x, y, score, visible; --k is ignored)."),
    k: int = typer.Option(5, min=1, help="Keypoints per image."),
    thr: ThrOpt = None,
    num_filters: NumFiltersOpt = None,
    iterations: IterationsOpt = None,
    replica: ReplicaOpt = True,
    subcell: SubcellOpt = None,
    refine: RefineOpt = None,
    gate: GateOpt = None,
    flip: FlipOpt = False,
    output_stride: OutputStrideOpt = None,
    image_size: TestImageSizeOpt = None,
    occluder_size: OccluderSizeOpt = 16,
    occluder_stride: OccluderStrideOpt = 8,
    chunk_size: ChunkSizeOpt = 32,
    occlusion_input_size: OcclusionInputSizeOpt = None,
    coarse_weight: CoarseWeightOpt = 0.5,
    fine_weight: FineWeightOpt = 0.5,
    nms_radius: NmsRadiusOpt = 16,
    keep_fraction: KeepFractionOpt = 0.4,
    cam_nms_radius: CamNmsRadiusOpt = 1,
    landmarks: Optional[Path] = typer.Option(None, "--landmarks", help="A file of lmp fit-landmarks: write its named landmarks (CSV image, landmark, x, y; JSON \"landmarks\") with the file's method and --k."),
    heatmaps: Optional[Path] = typer.Option(None, "--heatmaps", help="occlusion-gbp: write heat-map panels (input | occlusion | guided backprop | keypoints) here."),
    batch_size: int = typer.Option(8, min=1),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    backend: BackendOpt = "auto",
    workers: WorkersOpt = None,
    overwrite: bool = typer.Option(False, help="Replace existing output files."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Predict keypoints: CSV rows (image, rank, x, y, score) in original-image pixels.

    Coordinates are in the frame every viewer shows: a photo's EXIF orientation is applied first
    (the JSON says "frame": "displayed" and the "exif_orientation" applied). Unreadable images, and
    images above 250 megapixels, are reported on stderr and skipped. An image can get fewer than
    --k keypoints when the method runs out of proposals (reported). Exit status: 0 all processed,
    1 error, 2 refused before any work (bad option, missing input, output that exists or would
    write over an input), 3 finished with skipped inputs (docs/robustness.md).
    """
    from .validate import check_predict_call

    checked = check_call(check_predict_call, inputs, out=out, vis_dir=vis_dir, heatmaps_dir=heatmaps,
                         weights=weights or None, overwrite=overwrite or resume or shard is not None, method=method, k=k, thr=thr,
                         num_filters=num_filters, iterations=iterations, gate=gate, output_stride=output_stride,
                         image_size=image_size, batch_size=batch_size, workers=workers, device=device)
    from .predict import run_predict

    def on_error(path: str, reason: str) -> None:
        err.print(f"[yellow]skipped[/yellow] {path}: {reason}", highlight=False)

    options = method_options(method, occluder_size, occluder_stride, chunk_size, occlusion_input_size, coarse_weight,
                             fine_weight, nms_radius, keep_fraction, cam_nms_radius)
    summary = run_guarded(  # the inputs as the check expanded them (stdin is read once), passed on as path lines
        run_predict, ["-"], stdin=checked["paths"], out=out, json_format=json_format, jsonl=jsonl, shard=shard,
        resume=resume, vis_dir=vis_dir, heatmaps_dir=heatmaps, landmarks=landmarks, overwrite=overwrite,
        method_options=options.get(method, {}),
        weights=weights or None, method=method, k=k, thr=thr, num_filters=num_filters, iterations=iterations,
        replica=replica, subcell=subcell, refine=refine, gate=gate, flip=flip, output_stride=output_stride, image_size=image_size, batch_size=batch_size, device=device, backend=backend, workers=workers,
        on_error=on_error, progress=RichProgress(not quiet and out != "-"),
    )
    if not quiet:
        where = "" if out == "-" else f" -> {summary['out']}"
        resumed = f", {summary['resumed']} already done" if summary["resumed"] else ""
        err.print(f"{summary['images']} images{resumed}, {len(summary['errors'])} skipped, "
                  f"{summary['seconds']:.1f} s{where}", highlight=False)
    if summary.get("short"):
        err.print(f"[yellow]note[/yellow]: {summary['short']} of {summary['images']} images have fewer than {k} "
                  f"keypoints: {method} ran out of proposals (see docs/robustness.md)", highlight=False)
    if summary["errors"]:
        raise typer.Exit(EXIT_SKIPPED)


MERGE_EPILOG = """Examples:

  lmp merge-shards kps.csv            # joins kps.shard-00000-of-00008.csv ... kps.shard-00007-of-00008.csv

  lmp merge-shards kps.jsonl --overwrite
"""


@app.command("merge-shards", epilog=MERGE_EPILOG)
def merge_shards(
    out: Path = typer.Argument(..., help="The --out given to the sharded lmp predict runs; written here."),
    overwrite: bool = typer.Option(False, help="Replace an existing OUT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary."),
) -> None:
    """Join the shard files of a sharded lmp predict (in sorted input order), after checking every shard finished."""
    from .shards import merge_shards as run_merge

    summary = run_guarded(run_merge, out, overwrite=overwrite)
    if not quiet:
        err.print(f"{summary['shards']} shards, {summary['images']} images -> {summary['out']}", highlight=False)


EVALUATE_EPILOG = """Examples:

  lmp evaluate --data ../CUB_200_2011 --split test --k 5 --thr 3 --out results.csv

  lmp evaluate --data ../CUB_200_2011 --limit 400 --weights runs/seed0/model.pt --weights runs/seed1/model.pt
"""


@app.command(epilog=EVALUATE_EPILOG)
def evaluate(
    data: Path = typer.Option(..., help="CUB-200-2011-layout folder."),
    split: str = typer.Option("test", help="train, test or all."),
    weights: WeightsOpt = None,
    method: str = typer.Option("lmpnet", "--method", help="Comma-separated methods to score: lmpnet, occlusion-gbp, cam (baselines are added)."),
    baselines: bool = typer.Option(True, help="Also score the centre and channel-mean baselines."),
    k: int = typer.Option(5, min=1),
    thr: ThrOpt = None,
    num_filters: NumFiltersOpt = None,
    iterations: IterationsOpt = None,
    replica: ReplicaOpt = True,
    subcell: SubcellOpt = None,
    refine: RefineOpt = None,
    gate: GateOpt = None,
    flip: FlipOpt = False,
    output_stride: OutputStrideOpt = None,
    image_size: TestImageSizeOpt = None,
    occluder_size: OccluderSizeOpt = 16,
    occluder_stride: OccluderStrideOpt = 8,
    chunk_size: ChunkSizeOpt = 32,
    occlusion_input_size: OcclusionInputSizeOpt = None,
    coarse_weight: CoarseWeightOpt = 0.5,
    fine_weight: FineWeightOpt = 0.5,
    nms_radius: NmsRadiusOpt = 16,
    keep_fraction: KeepFractionOpt = 0.4,
    cam_nms_radius: CamNmsRadiusOpt = 1,
    entropy: bool = typer.Option(False, help="Also report the mean feature-map entropy of the main network (Fig. 6)."),
    alpha: float = typer.Option(0.1, help="PCK radius, fraction of the shorter image side."),
    classes: Optional[str] = typer.Option(None, help="Only these CUB class ids, e.g. 41-50."),
    limit: Optional[int] = typer.Option(None, help="Only N images, spread evenly over the split (every class)."),
    fit_images: int = typer.Option(300, min=0, help="Train-split images (spread over every class) the methods also run on to fit the Kp regressors; 0 = no Kp/NMI/ARI."),
    crop_to_box: bool = typer.Option(False, help="Evaluate on images cropped to their ground-truth box (PCK radius from the crop's shorter side)."),
    batch_size: int = typer.Option(8, min=1),
    device: str = typer.Option("auto"),
    backend: BackendOpt = "auto",
    workers: WorkersOpt = None,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the table to .csv or .json."),
    overwrite: bool = typer.Option(False),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Greedy PCK@alpha per keypoint rank, part recall and accuracy, beside trivial baselines,
    and where each keypoint rank lands (head, body, wings, tail, legs or a miss).

    Exit status: 0 done, 1 error, 2 refused before any work (docs/robustness.md)."""
    from .validate import check_evaluate_call

    check_call(check_evaluate_call, data, split=split, out=out, weights=weights or None, alpha=alpha, limit=limit,
               overwrite=overwrite, k=k, thr=thr, num_filters=num_filters, iterations=iterations, gate=gate,
               output_stride=output_stride, image_size=image_size, batch_size=batch_size, workers=workers,
               device=device)
    from rich import box
    from rich.table import Table

    from .evaluate import evaluate as run_evaluate
    from .evaluate import write_report

    report = run_guarded(
        run_evaluate, data, split=split, weights=weights or None, methods=[m.strip() for m in method.split(",") if m.strip()],
        baselines=baselines, k=k, thr=thr, num_filters=num_filters, iterations=iterations, replica=replica,
        subcell=subcell, refine=refine, gate=gate, flip=flip, output_stride=output_stride, image_size=image_size, entropy=entropy, alpha=alpha,
        method_options=method_options(method, occluder_size, occluder_stride, chunk_size, occlusion_input_size,
                                      coarse_weight, fine_weight, nms_radius, keep_fraction, cam_nms_radius), classes=parse_ids(classes), limit=limit,
        fit_images=fit_images, crop_to_box=crop_to_box,
        batch_size=batch_size, device=device, backend=backend, workers=workers, progress=RichProgress(not quiet),
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 prints and writes
        return
    cfg = report["config"]
    df = report["table"]
    ranks = [c for c in df.columns if c.startswith("KP")]
    groups = [c for c in df.columns if c.startswith("recall_")]
    main = Table(box=box.SIMPLE_HEAD, title=f"greedy PCK@{alpha} (%), {cfg['images']} {split} images, k={k}, "
                       f"thr={cfg['thr']:g} cells of {cfg['feature_map']}x{cfg['feature_map']}")
    parts = Table(box=box.SIMPLE_HEAD, title=f"part recall@{alpha} (%) by part group")
    main.add_column("method", no_wrap=True)
    parts.add_column("method", no_wrap=True)
    for col in [*ranks, "avg", "recall", "acc", "img/s"]:
        main.add_column(col, justify="right", no_wrap=True, min_width=max(len(col), 5))
    for col in groups:
        parts.add_column(col.removeprefix("recall_"), justify="right", no_wrap=True, min_width=5)

    def cell(v: float, fmt: str = ".1f") -> str:
        return "–" if v != v else format(v, fmt)  # NaN (no network run) -> dash

    for _, row in df[df["avg"].notna()].iterrows():
        main.add_row(row["method"], *[cell(row[c]) for c in [*ranks, "avg", "recall", "acc"]],
                     cell(row["images_per_s"], ".3g"))
        parts.add_row(row["method"], *[cell(row[c]) for c in groups])
    # piped or logged output gets a wide table instead of truncated numbers
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(main)
    console.print(parts)
    console.print(landing_table(report, [m.strip() for m in method.split(",") if m.strip()], alpha))
    if "Kp" in df.columns:
        console.print(part_discovery_table(report))
    if "entropy" in cfg:
        e = cfg["entropy"]
        err.print("feature-map entropy (nats, uniform map = {:.2f}): ".format(e["uniform_map"])
                  + ", ".join(f"{key} {v:.3f}" for key, v in e.items() if key != "uniform_map"), highlight=False)
    if out is not None:
        run_guarded(write_report, report, out, overwrite=True)
        err.print(f"written {out}")


def part_discovery_table(report: dict):
    """Rich table of the Kp / NMI / ARI columns of ``report["table"]`` (one row per method)."""
    from rich import box
    from rich.table import Table

    from .part_metrics import PART_COLUMNS

    df, cfg = report["table"], report["config"]
    table = Table(box=box.SIMPLE_HEAD, title=f"part discovery (%): Kp (Huang & Li, lower is better; regressors fit on "
                  f"{cfg['fit_images']} train images), NMI / ARI of the nearest keypoint's id")
    table.add_column("method", no_wrap=True)
    for col in PART_COLUMNS:
        table.add_column(col, justify="right", no_wrap=True, min_width=5)
    for _, row in df.iterrows():
        table.add_row(row["method"], *["–" if row[c] != row[c] else f"{row[c]:.2f}" for c in PART_COLUMNS])
    return table


def landing_table(report: dict, methods: list[str], alpha: float):
    """Rich table of ``report["landing"]`` for ``methods``: where each keypoint rank lands."""
    from rich import box
    from rich.table import Table

    df = report["landing"]
    groups = [c for c in df.columns if c not in ("method", "rank")]
    table = Table(box=box.SIMPLE_HEAD, title=f"where each keypoint lands (% of images; nearest visible part within {alpha})")
    table.add_column("method", no_wrap=True)
    table.add_column("rank", justify="right")
    for col in groups:
        table.add_column(col, justify="right", no_wrap=True, min_width=5)
    for _, row in df[df["method"].isin(methods)].iterrows():
        table.add_row(row["method"], f"KP{row['rank']}", *[f"{row[c]:.1f}" for c in groups])
    return table


def method_options(methods: str, occluder_size: int, occluder_stride: int, chunk_size: int,
                   occlusion_input_size: int | None, coarse_weight: float, fine_weight: float, nms_radius: int,
                   keep_fraction: float, cam_nms_radius: int) -> dict[str, dict]:
    """CLI flags -> ``{method: constructor keywords}`` for the methods named in ``methods``."""
    names = {m.strip() for m in methods.split(",")}
    out: dict[str, dict] = {}
    if "occlusion-gbp" in names:
        out["occlusion-gbp"] = dict(occluder_size=occluder_size, occluder_stride=occluder_stride, chunk_size=chunk_size,
                                    input_size=occlusion_input_size, coarse_weight=coarse_weight,
                                    fine_weight=fine_weight, nms_radius=nms_radius, keep_fraction=keep_fraction)
    if "cam" in names:
        out["cam"] = dict(nms_radius=cam_nms_radius)
    return out


FIT_LANDMARKS_EPILOG = """Examples:

  lmp fit-landmarks ../shared/data/cub50 --out cub-landmarks.json              # all labelled train images

  lmp fit-landmarks ../shared/data/cub50 --method parts --limit 100 --out cub100.json  # 100 labelled images

  lmp fit-landmarks my-birds.json --images photos/ --out mine.json             # COCO keypoints file

  lmp predict photos/ --landmarks cub-landmarks.json --out landmarks.csv
"""


@app.command("fit-landmarks", epilog=FIT_LANDMARKS_EPILOG)
def fit_landmarks(
    data: Path = typer.Argument(..., help="CUB-200-2011-layout folder (its --split, parts/part_locs.txt) or a COCO-keypoints .json file."),
    out: Path = typer.Option(..., "--out", "-o", help="Landmarks file to write (JSON)."),
    images: Optional[Path] = typer.Option(None, help="COCO file: folder its file_name entries are relative to (default: the file's folder)."),
    split: str = typer.Option("train", help="CUB folders: train, test or all."),
    limit: Optional[int] = typer.Option(None, min=1, help="Use N labelled images drawn at random (default: all)."),
    seed: int = typer.Option(0, help="Random draw of the --limit images."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint (default: the shipped weights)."),
    method: str = typer.Option("lmpnet", help="Keypoint method whose keypoints (in its output order) are regressed."),
    k: int = typer.Option(5, min=1, help="Keypoints per image."),
    normalisation: str = typer.Option("image", help="Frame at fit and predict time: image (divide by the image size) or keypoints (the box of the predicted keypoints)."),
    batch_size: int = typer.Option(8, min=1),
    device: str = typer.Option("auto"),
    workers: WorkersOpt = None,
    overwrite: bool = typer.Option(False, help="Replace an existing --out file."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Fit named landmarks (beak, crown, left eye ...) from N labelled images: one linear map per
    landmark from the method's keypoints (Huang & Li's Kp regressors). The only command that reads
    keypoint labels; lmp predict --landmarks applies the file."""
    from .validate import check_fit_landmarks_call

    check_call(check_fit_landmarks_call, data, out=out, weights=weights, overwrite=overwrite, split=split,
               normalisation=normalisation, limit=limit, k=k, batch_size=batch_size, device=device, workers=workers)
    from .named_landmarks import fit_landmarks as run_fit

    summary = run_guarded(
        run_fit, data, out, images=images, split=split, limit=limit, seed=seed, weights=weights, method=method, k=k,
        normalisation=normalisation, batch_size=batch_size, device=device, workers=workers, overwrite=overwrite,
        progress=RichProgress(not quiet),
    )
    if not quiet:
        err.print(f"{summary['images']} labelled images, {len(summary['names'])} landmarks "
                  f"({', '.join(summary['names'])}) -> {summary['out']}", highlight=False)
        if summary["left_out"]:
            err.print(f"[yellow]left out[/yellow] (labelled on none of the images): {', '.join(summary['left_out'])}",
                      highlight=False)


FILTERS_EPILOG = """Examples:

  lmp visualize-filters examples/ --out grid.png

  lmp visualize-filters ../shared/data/cub50 --split test --n-filters 10 --n-rows 8 --out grid.png

  lmp visualize-filters examples/ --filters 12,40,7 --n-rows 4 --network replica --out top.png
"""


@app.command("visualize-filters", epilog=FILTERS_EPILOG)
def visualize_filters(
    inputs: List[str] = typer.Argument(..., help="CUB-200-2011-layout folder (its --split is used) or image files, folders (recursive), globs."),
    out: Path = typer.Option(Path("filters.png"), "--out", "-o", help="Output image (.png)."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint (default: the shipped weights)."),
    split: str = typer.Option("test", help="train, test or all (CUB folders)."),
    n_filters: int = typer.Option(8, min=1, help="Columns: filters sampled evenly along the ranking by max activation, strongest to weakest."),
    n_rows: int = typer.Option(6, min=1, help="Images per filter, sampled evenly along its ranking, top first."),
    tile: int = typer.Option(128, min=32, help="Tile side in pixels."),
    network: str = typer.Option("main", help="main or replica (the replica sees the image with the first keypoint masked out)."),
    filters: Optional[str] = typer.Option(None, help="Explicit filter ids, e.g. 12,40,7 or 0-7: these columns, each with its top --n-rows images."),
    classes: Optional[str] = typer.Option(None, help="Only these CUB class ids, e.g. 1-10."),
    normalize: str = typer.Option("filter", help="Colour scale: filter (by the filter's max), tile (each map by its own peak), grid (one scale)."),
    colormap: str = typer.Option("jet", help="OpenCV colormap."),
    alpha: float = typer.Option(0.45, help="Heat-map opacity."),
    limit: Optional[int] = typer.Option(None, help="Only N images, spread evenly over the split (every class)."),
    batch_size: int = typer.Option(8, min=1),
    device: str = typer.Option("auto"),
    backend: BackendOpt = "auto",
    workers: WorkersOpt = None,
    overwrite: bool = typer.Option(False),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Draw the full-scale filter grid (Fig. 4): filters by activation strength x images by activation.

    Exit status: 0 all processed, 1 error, 2 refused before any work, 3 finished with skipped
    inputs (docs/robustness.md)."""
    from .validate import check_filters_call

    check_call(check_filters_call, inputs, out=out, weights=weights, overwrite=overwrite, network=network,
               alpha=alpha, limit=limit, batch_size=batch_size, workers=workers, device=device)
    from .filters import visualize_filters as run_visualize

    ids = parse_ids(filters)  # 0-based filter ids, as given
    summary = run_guarded(
        run_visualize, inputs, weights=weights, out=out, split=split, n_filters=n_filters, n_rows=n_rows, tile=tile,
        network=network, filters=ids, classes=parse_ids(classes), normalize=normalize, colormap=colormap, alpha=alpha,
        limit=limit, batch_size=batch_size, device=device, backend=backend, workers=workers, overwrite=overwrite,
        progress=RichProgress(not quiet),
    )
    if not quiet:
        err.print(f"{summary['images']} images, {len(summary['errors'])} skipped, columns {summary['columns']} -> {out}",
                  highlight=False)
    if summary["errors"]:
        raise typer.Exit(EXIT_SKIPPED)


EXPORT_EPILOG = """Examples:

  lmp export --out lmpnet-main.onnx

  lmp export --weights runs/lite0/model.pt --network replica --out replica.onnx
"""


@app.command(epilog=EXPORT_EPILOG)
def export(
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint (default: the shipped weights)."),
    format: str = typer.Option("onnx", "--format", help="Output format: onnx."),
    network: str = typer.Option("main", help="main or replica (the replica is fed the image with the main network's first keypoint masked out)."),
    output_stride: OutputStrideOpt = None,
    image_size: TestImageSizeOpt = None,
    overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Export a network to ONNX for deployment elsewhere: images (B, 3, S, S) -> logits, feature maps."""
    from .validate import check_export_call

    check_call(check_export_call, out, weights=weights, overwrite=overwrite, network=network,
               output_stride=output_stride, image_size=image_size)
    from .backends.onnx import export_checkpoint

    summary = run_guarded(export_checkpoint, out, weights=weights, format=format, network=network,
                          image_size=image_size, output_stride=output_stride, overwrite=overwrite)
    if not quiet:
        err.print(f"{summary['network']} network, {summary['image_size']} px, output stride {summary['output_stride']}, "
                  f"{summary['bytes'] / 1e6:.1f} MB -> {out}", highlight=False)


FIT_PARTS_EPILOG = """Examples:

  lmp fit-parts weights/lmpnet-lite0-cub50.pt --data ../CUB_200_2011 --out runs/parts.pt

  lmp fit-parts runs/lite0/model.pt --data my_photos/ --k 16 --out runs/lite0/model-parts16.pt

  lmp predict examples/ --weights runs/parts.pt --method parts --out parts.csv
"""


@app.command("fit-parts", epilog=FIT_PARTS_EPILOG)
def fit_parts(
    weights: Path = typer.Argument(..., help="Input checkpoint (never written over)."),
    data: List[str] = typer.Option(..., "--data", help="Training images, no keypoint labels needed: a CUB-200-2011-layout folder (its --split) or image files, folders (recursive), globs."),
    out: Path = typer.Option(..., "--out", "-o", help="New checkpoint: the input's weights, bit for bit, plus the part model."),
    k: Optional[int] = typer.Option(None, min=1, help="Number of parts K (default: the one chosen in quality-log section 30)."),
    method: Optional[str] = typer.Option(None, help="Part model: kmeans-centred, kmeans, nmf or filters (default: the one chosen in quality-log section 30)."),
    split: str = typer.Option("train", help="train, test or all (CUB folders)."),
    limit: Optional[int] = typer.Option(None, min=2, help="Only N images, spread evenly over the list (every class)."),
    seed: int = typer.Option(0, help="Random state of the clustering."),
    batch_size: int = typer.Option(8, min=1),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    workers: int = typer.Option(2, min=0, help="Image-decoding processes."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out (never the input checkpoint)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Fit K parts with fixed identities to a checkpoint's main network (class labels only; no keypoint labels)."""
    from .validate import check_fit_parts_call

    check_call(check_fit_parts_call, weights, data, out=out, overwrite=overwrite, device=device, limit=limit)
    from .parts import fit_parts as run_fit_parts

    def on_error(path: str, reason: str) -> None:
        err.print(f"[yellow]skipped[/yellow] {path}: {reason}", highlight=False)

    summary = run_guarded(
        run_fit_parts, weights, data[0] if len(data) == 1 else data, out, k=k, method=method, split=split,
        limit=limit, seed=seed, batch_size=batch_size, workers=workers, device=device, overwrite=overwrite,
        progress=RichProgress(not quiet), on_error=on_error,
    )
    if not quiet:
        err.print(f"{summary['images']} images, K = {summary['k']} ({summary['method']}), features "
                  f"{summary['extract_seconds']:.0f} s, fit {summary['fit_seconds']:.0f} s -> {out}", highlight=False)


PARTS_EPILOG = """Examples:

  lmp visualize-parts ../CUB_200_2011 --split test --limit 300 --out parts.png

  lmp visualize-parts photos/ --weights runs/parts.pt --per-part 10 --out parts.png
"""


@app.command("visualize-parts", epilog=PARTS_EPILOG)
def visualize_parts(
    inputs: List[str] = typer.Argument(..., help="CUB-200-2011-layout folder (its --split is used) or image files, folders (recursive), globs."),
    out: Path = typer.Option(Path("parts.png"), "--out", "-o", help="Output image (.png or .jpg)."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint with a part model (default: the shipped weights; see lmp fit-parts)."),
    split: str = typer.Option("test", help="train, test or all (CUB folders)."),
    per_part: int = typer.Option(8, min=1, help="Columns: images per part, at most one per predicted class, highest part score first."),
    tile: int = typer.Option(112, min=32, help="Tile side in pixels."),
    crop: float = typer.Option(0.4, min=0.05, max=1.0, help="Crop side around the part, fraction of the image's shorter side."),
    limit: Optional[int] = typer.Option(300, min=1, help="Scan N images spread evenly over the list (every class)."),
    classes: Optional[str] = typer.Option(None, help="Only these CUB class ids, e.g. 1-10."),
    batch_size: int = typer.Option(8, min=1),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    workers: int = typer.Option(2, min=0, help="Image-decoding processes."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Draw the same part across many birds: one row per part, one crop per image, centred on the part."""
    from .validate import check_filters_call

    check_call(check_filters_call, inputs, out=out, weights=weights, overwrite=overwrite, limit=limit, device=device)
    from .part_outputs import visualize_parts as run_visualize

    def on_error(path: str, reason: str) -> None:
        err.print(f"[yellow]skipped[/yellow] {path}: {reason}", highlight=False)

    summary = run_guarded(
        run_visualize, inputs, weights=weights, out=out, split=split, per_part=per_part, tile=tile, crop=crop,
        limit=limit, classes=parse_ids(classes), batch_size=batch_size, device=device, workers=workers,
        overwrite=overwrite, progress=RichProgress(not quiet), on_error=on_error,
    )
    if not quiet:
        err.print(f"{summary['images']} images, {len(summary['errors'])} skipped, {summary['parts']} parts -> {out}",
                  highlight=False)


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
        fail(f"cannot parse class ids {spec!r}; use e.g. 1-40 or 1,2,5", EXIT_USAGE)
    return ids


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
