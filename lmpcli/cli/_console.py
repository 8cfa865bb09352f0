"""The stderr console every command reports on (messages, progress bars, skipped inputs)."""

from rich.console import Console

#: stderr: progress, summaries and errors; stdout is kept for the outputs (``--out -``) and tables.
err = Console(stderr=True, soft_wrap=True)


def say(message: str) -> None:
    """Print a one-line summary or note to stderr (rich markup allowed, no highlighting)."""
    err.print(message, highlight=False)


def report_skipped(path: str, reason: str) -> None:
    """The ``on_error`` callback of the library: ``skipped PATH: reason`` on stderr."""
    say(f"[yellow]skipped[/yellow] {path}: {reason}")
