"""rich progress bars for the library's :class:`lmpcli.progress.Progress` protocol."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ._console import err


class RichProgress:
    """rich implementation of :class:`lmpcli.progress.Progress`, drawn on stderr.

    Args:
        enabled: False draws nothing (``--quiet``, or CSV streamed to stdout); :meth:`log` still prints.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Progress | None = None
        self._task = None

    def start(self, description: str, total: int | None) -> None:
        """Show a bar for ``total`` steps (None: unknown)."""
        if not self.enabled:
            return
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                             console=err, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, metrics="")

    def advance(self, n: int = 1, **metrics: float) -> None:
        """Advance by ``n`` steps and show ``metrics`` (name -> value, 3 decimals) beside the bar."""
        if self._bar is not None:
            text = " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            self._bar.update(self._task, advance=n, metrics=text)

    def finish(self) -> None:
        """Stop the bar (it stays on screen)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def log(self, message: str) -> None:
        """Print a line above the bar."""
        err.print(message)
