"""``lmp visualize-parts``: the same part across many birds, one row per part."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._console import report_skipped, say
from ._progress import RichProgress
from .options import (GRID, IO, SELECTION, BatchSize, DataImages, Device, ImageOut, Overwrite, Quiet, Weights, Workers,
                      command)

EPILOG = """Examples:

  lmp visualize-parts ../CUB_200_2011 --split test --limit 300 --out parts.png

  lmp visualize-parts photos/ --weights runs/parts.pt --per-part 10 --out parts.png
"""

@command(selection=SELECTION)
def visualize_parts(
    inputs: DataImages,
    out: ImageOut = Path("parts.png"),
    selection: dict = None,
    limit: Annotated[Optional[int], typer.Option(min=1, metavar="N", rich_help_panel=IO,
                                                 help="Scan N images spread evenly over the list (every class).")] = 300,
    weights: Weights = None,
    overwrite: Overwrite = False,
    per_part: Annotated[int, typer.Option(
        min=1, metavar="N", rich_help_panel=GRID,
        help="Columns: images per part, at most one per predicted class, highest part score first.")] = 8,
    tile: Annotated[int, typer.Option(min=32, metavar="PIXELS", rich_help_panel=GRID, help="Tile side.")] = 112,
    crop: Annotated[float, typer.Option(min=0.05, max=1.0, metavar="FRACTION", rich_help_panel=GRID,
                                        help="Crop side around the part, fraction of the image's shorter side.")] = 0.4,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    workers: Workers = 2,
    quiet: Quiet = False,
) -> None:
    """Draw the same part across many birds: one row per part, one crop per image, centred on the part.

    The checkpoint needs a part model (the shipped weights have one; see lmp fit-parts)."""
    from ..validate import check_filters_call

    check_filters_call(inputs, out=out, weights=weights, overwrite=overwrite, limit=limit, device=device)
    from ..part_outputs import visualize_parts as run_visualize

    summary = run_visualize(inputs, weights=weights, out=out, per_part=per_part, tile=tile, crop=crop, limit=limit,
                            batch_size=batch_size, device=device, workers=workers, overwrite=overwrite,
                            progress=RichProgress(not quiet), on_error=report_skipped, **selection)
    if not quiet:
        say(f"{summary['images']} images, {len(summary['errors'])} skipped, {summary['parts']} parts -> {out}")
