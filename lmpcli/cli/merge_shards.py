"""``lmp merge-shards``: join the shard files of a sharded ``lmp predict``."""

from pathlib import Path
from typing import Annotated

import typer

from ._console import say
from .options import Overwrite, Quiet, command

EPILOG = """Examples:

  lmp merge-shards kps.csv            # joins kps.shard-00000-of-00008.csv ... kps.shard-00007-of-00008.csv

  lmp merge-shards kps.jsonl --overwrite
"""


@command()
def merge_shards(
    out: Annotated[Path, typer.Argument(metavar="OUT", show_default=False,
                                        help="The --out given to the sharded lmp predict runs; written here.")],
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Join the shard files of a sharded lmp predict (in sorted input order), after checking every shard finished.

    Exit status: 0 done, 1 error, 2 refused before any work: no shard files, a shard missing or
    unfinished, OUT exists without --overwrite (docs/robustness.md)."""
    from ..validate import check_merge_shards_call

    check_merge_shards_call(out, overwrite=overwrite)
    from ..shards import merge_shards as run_merge

    summary = run_merge(out, overwrite=overwrite)
    if not quiet:
        say(f"{summary['shards']} shards, {summary['images']} images -> {summary['out']}")
