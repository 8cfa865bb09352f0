"""``lmp predict``: keypoints (or parts, or named landmarks) of images to CSV / JSON."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..settings import KeypointSettings

from ._console import report_skipped, say
from ._errors import EXIT_SKIPPED
from ._progress import RichProgress
from .options import (IO, KEYPOINT_SETTINGS, METHOD, METHOD_OPTIONS, PERFORMANCE_OPTIONS, Images, Method, Overwrite,
                      Quiet, WeightsList, command, method_keywords)

EPILOG = """Examples:

  lmp predict examples/ --k 5 --out kps.csv

  lmp predict 'photos/**/*.jpg' --json --out kps.json --vis-dir annotated/

  find photos -name '*.jpg' | lmp predict - --out - | head

  lmp predict photos/ --weights runs/seed0/model.pt --weights runs/seed1/model.pt --out kps.csv   # an ensemble

  lmp predict photos/ --method parts --out parts.csv   # one point per part: image, part, x, y, score, visible

  lmp predict photos/ --shard 3/8 --out kps.csv --resume   # writes kps.shard-00003-of-00008.csv

  lmp merge-shards kps.csv

  lmp predict photos/ --landmarks cub-landmarks.json --out landmarks.csv   # named landmarks (lmp fit-landmarks)
"""


@command(keypoint=KEYPOINT_SETTINGS, per_method=METHOD_OPTIONS, performance=PERFORMANCE_OPTIONS)
def predict(
    inputs: Images,
    out: Annotated[str, typer.Option("--out", "-o", metavar="FILE", rich_help_panel=IO,
                                     help="Output .csv, .json or .jsonl file; - streams CSV to stdout.")] = "-",
    json_format: Annotated[bool, typer.Option("--json", rich_help_panel=IO,
                                              help="Write JSON (COCO-style keypoint triplets + class).")] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", rich_help_panel=IO,
                                        help="Write JSON Lines, one image a line; streams on stdout.")] = False,
    vis_dir: Annotated[Optional[Path], typer.Option(metavar="DIR", rich_help_panel=IO,
                                                    help="Write annotated images (numbered markers) here.")] = None,
    heatmaps: Annotated[Optional[Path], typer.Option(
        "--heatmaps", metavar="DIR", rich_help_panel=IO,
        help="occlusion-gbp: write heat-map panels (input | occlusion | guided backprop | keypoints) here.")] = None,
    landmarks: Annotated[Optional[Path], typer.Option(
        "--landmarks", metavar="FILE", rich_help_panel=IO,
        help="A file of lmp fit-landmarks: write its named landmarks (CSV image, landmark, x, y; JSON "
             "\"landmarks\") with the file's method and --k.")] = None,
    weights: WeightsList = None,
    shard: Annotated[Optional[str], typer.Option(
        metavar="I/N", rich_help_panel=IO,
        help="Only shard I (from 0) of N of the sorted inputs, into OUT's stem.shard-0000I-of-0000N file; under "
             "torchrun: rank/world size. Join them with lmp merge-shards.")] = None,
    resume: Annotated[bool, typer.Option(rich_help_panel=IO,
                                         help="Continue a killed run: skip the images already in OUT's "
                                              "unfinished .part file.")] = False,
    overwrite: Overwrite = False,
    method: Annotated[Method, typer.Option(
        rich_help_panel=METHOD,
        help="Keypoint method. parts: one point per part of the checkpoint's part model, in part order (CSV "
             "image, part, x, y, score, visible; --k is ignored).")] = "lmpnet",
    keypoint: KeypointSettings = None,
    per_method: dict = None,
    performance: dict = None,
    quiet: Quiet = False,
) -> None:
    """Predict keypoints: CSV rows (image, rank, x, y, score) in original-image pixels.

    Coordinates are in the frame every viewer shows: a photo's EXIF orientation is applied first
    (the JSON says "frame": "displayed" and the "exif_orientation" applied). Unreadable images, and
    images above 250 megapixels, are reported on stderr and skipped. An image can get fewer than
    --k keypoints when the method runs out of proposals (reported). Exit status: 0 all processed,
    1 error, 2 refused before any work (bad option, missing input, output that exists or would
    write over an input), 3 finished with skipped inputs (docs/robustness.md).
    """
    from ..validate import check_predict_call

    checked = check_predict_call(inputs, out=out, vis_dir=vis_dir, heatmaps_dir=heatmaps, landmarks=landmarks,
                                 weights=weights or None, overwrite=overwrite or resume or shard is not None,
                                 method=method, settings=keypoint, shard=shard, resume=resume, **performance)
    from ..predict import run_predict

    summary = run_predict(  # the inputs as the check expanded them (stdin is read once), passed on as path lines
        ["-"], stdin=checked["paths"], out=out, json_format=json_format, jsonl=jsonl, shard=shard, resume=resume,
        vis_dir=vis_dir, heatmaps_dir=heatmaps, landmarks=landmarks, overwrite=overwrite,
        method_options=method_keywords([method], per_method).get(method, {}), weights=weights or None,
        method=method, on_error=report_skipped, progress=RichProgress(not quiet and out != "-"), settings=keypoint,
        **performance,
    )
    if not quiet:
        where = "" if out == "-" else f" -> {summary['out']}"
        resumed = f", {summary['resumed']} already done" if summary["resumed"] else ""
        say(f"{summary['images']} images{resumed}, {len(summary['errors'])} skipped, {summary['seconds']:.1f} s{where}")
    if summary.get("short"):
        say(f"[yellow]note[/yellow]: {summary['short']} of {summary['images']} images have fewer than "
            f"{summary['k']} keypoints: {method} ran out of proposals (see docs/robustness.md)")
    if summary["errors"]:
        raise typer.Exit(EXIT_SKIPPED)
