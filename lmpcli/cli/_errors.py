"""One mapping from the library's exceptions to a one-line message and the documented exit status.

Every command runs inside :meth:`ErrorMappingGroup.invoke`, so ``main()`` (the console script),
``python -m lmpcli`` and typer's test runner all go through this one place; commands call the
library directly, without wrappers. Exit statuses (docs/robustness.md):

====  =====================================================================================
0     every input processed
1     an error while running (:data:`RUN_ERRORS`, ``ValueError``, ``OSError``)
2     refused before any work (:class:`lmpcli.validate.UsageError`; click's own bad-option code)
3     finished, but some inputs were skipped (set by the commands themselves)
130   interrupted (``KeyboardInterrupt``, Ctrl-C)
141   the reader of stdout went away (``BrokenPipeError``): quiet, like other Unix tools
====  =====================================================================================

``LMP_DEBUG=1`` in the environment prints the full traceback instead of the one-line message
(same exit status). Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ._console import say

EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 3, 130, 141
#: Environment variable that turns the one-line messages into full tracebacks.
DEBUG_ENV = "LMP_DEBUG"
#: The library's own run-time errors that are not ``ValueError``/``OSError``: (module, class). They
#: are looked up only in modules already imported (an exception of a module never imported cannot
#: have been raised), so a refusal before torch loads does not import torch to classify itself.
RUN_ERRORS = (("lmpcli.outputs", "OutputError"), ("lmpcli.checkpoint", "CheckpointError"),
              ("lmpcli.backbones", "BackboneError"))


def exit_status(exc: BaseException) -> int | None:
    """The documented exit status for ``exc``, or None for an unexpected exception (a bug).

    ``lmpcli.validate.UsageError`` -> 2 (it is an ``InputError``, so it is tested first);
    ``KeyboardInterrupt`` -> 130; ``BrokenPipeError`` -> 141; :data:`RUN_ERRORS`, ``ValueError``
    (``InputError``, ``PartModelError``...) and other ``OSError`` -> 1; typer's own ``Exit``/``Abort``
    and anything else -> None.
    """
    from ..validate import UsageError  # torch-free

    if isinstance(exc, (typer.Exit, typer.Abort)):
        return None
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    loaded = tuple(getattr(sys.modules[m], name) for m, name in RUN_ERRORS if m in sys.modules)
    if isinstance(exc, (ValueError, OSError, *loaded)):
        return EXIT_ERROR
    return None


def _stdout_closed() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. a test runner's buffer)
        pass


def debug() -> bool:
    """Whether ``LMP_DEBUG`` asks for tracebacks (set and not ``0``/``false``/``no``/empty)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


class ErrorMappingGroup(TyperGroup):
    """The ``lmp`` command group: runs a command and maps its exceptions with :func:`exit_status`."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, Exception) as exc:
            code = exit_status(exc)
            if code is None:
                raise
            if code == EXIT_BROKEN_PIPE:
                _stdout_closed()
            elif debug():
                traceback.print_exception(exc, file=sys.stderr)
            else:
                say(f"[red]error:[/red] {'interrupted' if code == EXIT_INTERRUPTED else escape(str(exc))}")
            raise typer.Exit(code) from None
