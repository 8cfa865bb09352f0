"""Shared output of the benchmark scripts: a markdown table printed and optionally written."""

from __future__ import annotations

from pathlib import Path


def emit_table(caption: str, head: list[str], rows: list[list[str]], out: str | None = None) -> str:
    """Print ``caption``, a blank line and a markdown table; also write it to ``out`` when given.

    Args:
        caption: one line above the table (data, weights, time).
        head: column names. rows: one list of already formatted cells per row, ``len(head)`` long.
        out: optional output path (overwritten).

    Returns:
        The printed text.
    """
    lines = [caption, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return text
