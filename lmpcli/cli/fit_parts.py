"""``lmp fit-parts``: K parts with fixed identities for a checkpoint's main network."""

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._console import report_skipped, say
from ._progress import RichProgress
from .options import IO, PART_MODEL, BatchSize, Device, PartLocation, PartMaps, PartMethod, Quiet, SplitOpt, Workers, command

EPILOG = """Examples:

  lmp fit-parts weights/lmpnet-lite0-cub50.pt --data ../CUB_200_2011 --out runs/parts.pt

  lmp fit-parts runs/lite0/model.pt --data my_photos/ --k 16 --out runs/lite0/model-parts16.pt

  lmp fit-parts weights/lmpnet-lite0-cub50.pt --data ../CUB_200_2011 --k 8 --maps final --out runs/parts8.pt

  lmp predict examples/ --weights runs/parts.pt --method parts --out parts.csv
"""

@command()
def fit_parts(
    weights: Annotated[Path, typer.Argument(metavar="CHECKPOINT", show_default=False,
                                            help="Input checkpoint (never written over).")],
    data: Annotated[List[str], typer.Option(
        "--data", metavar="DATA", show_default=False, rich_help_panel=IO,
        help="Training images, no keypoint labels needed: a CUB-200-2011-layout folder (its --split) or image "
             "files, folders (recursive), globs.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", show_default=False, rich_help_panel=IO,
                                      help="New checkpoint: the input's weights, bit for bit, plus the part model.")],
    split: SplitOpt = "train",
    limit: Annotated[Optional[int], typer.Option(min=2, metavar="N", rich_help_panel=IO,
                                                 help="Only N images, spread evenly over the list (every class).")] = None,
    overwrite: Annotated[bool, typer.Option(rich_help_panel=IO,
                                            help="Replace an existing --out (never the input checkpoint).")] = False,
    k: Annotated[Optional[int], typer.Option(min=1, metavar="K", rich_help_panel=PART_MODEL,
                                             help="Number of parts (default: the library's; docs/parts.md).")] = None,
    method: Annotated[Optional[PartMethod], typer.Option(
        rich_help_panel=PART_MODEL, show_default=False,
        help="How the parts are fitted (default: the library's; docs/parts.md).")] = None,
    maps: Annotated[Optional[PartMaps], typer.Option(
        rich_help_panel=PART_MODEL, show_default=False,
        help="Maps the parts are clustered on: final (the final-conv map), final+mid (also the mid-level, "
             "stride-16 map, pooled onto the final grid) or final+mid-fine (both on the stride-16 grid: "
             "28x28 part maps at 448 px); the mid-level ones kmeans-centred only (default: the library's; "
             "docs/parts.md).")] = None,
    location: Annotated[Optional[PartLocation], typer.Option(
        rich_help_panel=PART_MODEL, show_default=False,
        help="Where a visible part is placed: segment (the centroid of the cells its map wins) or peak (the "
             "centroid of the 3x3 cells around its map's peak) (default: the library's; docs/parts.md).")] = None,
    seed: Annotated[int, typer.Option(rich_help_panel=PART_MODEL, help="Random state of the clustering.")] = 0,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    workers: Workers = 2,
    quiet: Quiet = False,
) -> None:
    """Fit K parts with fixed identities to a checkpoint's main network (class labels only; no keypoint labels)."""
    from ..validate import check_fit_parts_call

    check_fit_parts_call(weights, data, out=out, overwrite=overwrite, device=device, limit=limit, method=method,
                         maps=maps)
    from ..parts import fit_parts as run_fit_parts

    summary = run_fit_parts(weights, data[0] if len(data) == 1 else data, out, k=k, method=method, maps=maps,
                            location=location, split=split,
                            limit=limit, seed=seed, batch_size=batch_size, workers=workers, device=device,
                            overwrite=overwrite, progress=RichProgress(not quiet), on_error=report_skipped)
    if not quiet:
        say(f"{summary['images']} images, K = {summary['k']} ({summary['method']}, {summary['maps']} maps, "
            f"{summary['location']} location), features "
            f"{summary['extract_seconds']:.0f} s, fit {summary['fit_seconds']:.0f} s -> {out}")
