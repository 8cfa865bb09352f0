"""``lmp fit-landmarks``: named landmarks (beak, crown, left eye ...) from a few labelled images."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._console import say
from ._progress import RichProgress
from .options import (IO, LANDMARKS, BatchSize, Device, LandmarkModel, Method, Normalisation, Overwrite, Quiet, SplitOpt,
                      Weights, Workers, command)

EPILOG = """Examples:

  lmp fit-landmarks ../shared/data/cub50 --out cub-landmarks.json              # all labelled train images

  lmp fit-landmarks ../shared/data/cub50 --method parts --limit 100 --out cub100.json  # 100 labelled images

  lmp fit-landmarks my-birds.json --images photos/ --out mine.json             # COCO keypoints file

  lmp fit-landmarks ../shared/data/cub50 --model prototypes --limit 30 --out cub30.json  # 30 labelled images

  lmp predict photos/ --landmarks cub-landmarks.json --out landmarks.csv
"""

@command()
def fit_landmarks(
    data: Annotated[Path, typer.Argument(
        metavar="DATA", show_default=False,
        help="CUB-200-2011-layout folder (its --split, parts/part_locs.txt) or a COCO-keypoints .json file.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", show_default=False, rich_help_panel=IO,
                                      help="Landmarks file to write (JSON).")],
    images: Annotated[Optional[Path], typer.Option(
        metavar="DIR", rich_help_panel=IO,
        help="COCO file: folder its file_name entries are relative to (default: the file's folder).")] = None,
    split: SplitOpt = "train",
    limit: Annotated[Optional[int], typer.Option(min=1, metavar="N", rich_help_panel=IO,
                                                 help="Use N labelled images drawn at random (default: all).")] = None,
    seed: Annotated[int, typer.Option(rich_help_panel=IO, help="Random draw of the --limit images.")] = 0,
    weights: Weights = None,
    overwrite: Overwrite = False,
    model: Annotated[LandmarkModel, typer.Option(
        rich_help_panel=LANDMARKS,
        help="regression: linear maps from the --method's keypoints; prototypes: each landmark's mean "
             "descriptor, found on the network's feature map (absent when not seen).")] = "regression",
    method: Annotated[Method, typer.Option(
        rich_help_panel=LANDMARKS, help="Keypoint method whose keypoints (in its output order) are regressed.")] = "lmpnet",
    k: Annotated[int, typer.Option(min=1, metavar="N", rich_help_panel=LANDMARKS, help="Keypoints per image.")] = 5,
    normalisation: Annotated[Normalisation, typer.Option(
        rich_help_panel=LANDMARKS,
        help="Frame at fit and predict time: image (divide by the image size) or keypoints (the box of the "
             "predicted keypoints).")] = "image",
    batch_size: BatchSize = 8,
    device: Device = "auto",
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Fit named landmarks (beak, crown, left eye ...) from N labelled images.

    One linear map per landmark from the method's keypoints (Huang & Li's Kp regressors), or one
    descriptor prototype per landmark (--model prototypes). The only command that reads keypoint
    labels; lmp predict --landmarks applies the file."""
    from ..validate import check_fit_landmarks_call

    check_fit_landmarks_call(data, out=out, weights=weights, overwrite=overwrite, split=split,
                             normalisation=normalisation, model=model, limit=limit, k=k, batch_size=batch_size,
                             device=device, workers=workers)
    from ..named_landmarks import fit_landmarks as run_fit

    summary = run_fit(data, out, images=images, split=split, limit=limit, seed=seed, weights=weights, method=method,
                      k=k, normalisation=normalisation, model=model, batch_size=batch_size, device=device, workers=workers,
                      overwrite=overwrite, progress=RichProgress(not quiet))
    if not quiet:
        say(f"{summary['images']} labelled images, {len(summary['names'])} landmarks "
            f"({', '.join(summary['names'])}) -> {summary['out']}")
        if summary["left_out"]:
            say(f"[yellow]left out[/yellow] (labelled on none of the images): {', '.join(summary['left_out'])}")
