"""``lmp visualize-filters``: the full-scale filter grid of the paper's Fig. 4."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._console import say
from ._errors import EXIT_SKIPPED
from ._progress import RichProgress
from .options import (GRID, PERFORMANCE_OPTIONS, SELECTION, DataImages, ImageOut, Limit, Network, Normalize, Overwrite,
                      Quiet, Weights, command, parse_ids)

EPILOG = """Examples:

  lmp visualize-filters examples/ --out grid.png

  lmp visualize-filters ../shared/data/cub50 --split test --n-filters 10 --n-rows 8 --out grid.png

  lmp visualize-filters examples/ --filters 12,40,7 --n-rows 4 --network replica --out top.png
"""

@command(selection=SELECTION, performance=PERFORMANCE_OPTIONS)
def visualize_filters(
    inputs: DataImages,
    out: ImageOut = Path("filters.png"),
    selection: dict = None,
    limit: Limit = None,
    weights: Weights = None,
    overwrite: Overwrite = False,
    network: Annotated[Network, typer.Option(
        rich_help_panel=GRID,
        help="The replica sees the image with the first keypoint masked out.")] = "main",
    n_filters: Annotated[int, typer.Option(
        min=1, metavar="N", rich_help_panel=GRID,
        help="Columns: filters sampled evenly along the ranking by max activation, strongest to weakest.")] = 8,
    n_rows: Annotated[int, typer.Option(min=1, metavar="N", rich_help_panel=GRID,
                                        help="Images per filter, sampled evenly along its ranking, top first.")] = 6,
    filters: Annotated[Optional[str], typer.Option(
        metavar="IDS", callback=parse_ids, rich_help_panel=GRID,
        help="Explicit filter ids, e.g. 12,40,7 or 0-7: these columns, each with its top --n-rows images.")] = None,
    tile: Annotated[int, typer.Option(min=32, metavar="PIXELS", rich_help_panel=GRID, help="Tile side.")] = 128,
    normalize: Annotated[Normalize, typer.Option(
        rich_help_panel=GRID,
        help="Colour scale: filter (by the filter's max), tile (each map by its own peak), grid (one scale).")] = "filter",
    colormap: Annotated[str, typer.Option(metavar="NAME", rich_help_panel=GRID, help="OpenCV colormap.")] = "jet",
    alpha: Annotated[float, typer.Option(metavar="FRACTION", rich_help_panel=GRID,
                                         help="Heat-map opacity.")] = 0.45,
    performance: dict = None,
    quiet: Quiet = False,
) -> None:
    """Draw the full-scale filter grid (Fig. 4): filters by activation strength x images by activation.

    Exit status: 0 all processed, 1 error, 2 refused before any work, 3 finished with skipped
    inputs (docs/robustness.md)."""
    from ..validate import check_filters_call

    check_filters_call(inputs, out=out, weights=weights, overwrite=overwrite, network=network, alpha=alpha,
                       limit=limit, **performance)
    from ..filters import visualize_filters as run_visualize

    summary = run_visualize(
        inputs, weights=weights, out=out, n_filters=n_filters, n_rows=n_rows, tile=tile, network=network,
        filters=filters, normalize=normalize, colormap=colormap, alpha=alpha, limit=limit, overwrite=overwrite,
        progress=RichProgress(not quiet), **selection, **performance,
    )
    if not quiet:
        say(f"{summary['images']} images, {len(summary['errors'])} skipped, columns {summary['columns']} -> {out}")
    if summary["errors"]:
        raise typer.Exit(EXIT_SKIPPED)
