"""The ``lmp`` command line: one module per command, thin calls into the library.

typer and rich are imported only in this package. Options used by several commands are declared
once in :mod:`.options`; library exceptions become a one-line message and the documented exit
status in one place (:mod:`._errors`); ``LMP_DEBUG=1`` shows the traceback instead.
"""

import typer

from . import evaluate, export, fit_landmarks, fit_parts, merge_shards, predict, train, visualize_filters, visualize_parts
from ._errors import DEBUG_ENV, ErrorMappingGroup
from ._progress import RichProgress

app = typer.Typer(
    name="lmp",
    cls=ErrorMappingGroup,
    help="Discover semantic object keypoints from class labels only (LMPNet, Guo & Farrell).\n\n"
         "Exit status: 0 all inputs processed, 1 error, 2 refused before any work (usage error), "
         "3 finished with skipped inputs, 130 interrupted (docs/robustness.md). "
         f"Errors are one line; {DEBUG_ENV}=1 in the environment shows the full traceback instead.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    """Discover semantic object keypoints from class labels only (LMPNet, Guo & Farrell)."""


for _module, _name in ((train, "train"), (predict, "predict"), (merge_shards, "merge-shards"),
                       (evaluate, "evaluate"), (fit_landmarks, "fit-landmarks"),
                       (visualize_filters, "visualize-filters"), (export, "export"), (fit_parts, "fit-parts"),
                       (visualize_parts, "visualize-parts")):
    app.command(_name, epilog=_module.EPILOG)(getattr(_module, _name.replace("-", "_")))


def main() -> None:
    """Console-script entry point (``lmp``, ``python -m lmpcli``, ``torchrun -m lmpcli``); usage says ``lmp``."""
    app(prog_name="lmp")


__all__ = ["RichProgress", "app", "main"]
