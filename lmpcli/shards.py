"""Sharded and resumable prediction outputs.

Sharding: ``lmp predict --shard i/N`` (or under ``torchrun``, rank i of N) predicts block i of the
sorted input paths (:func:`shard_inputs`: contiguous, sizes differ by at most one) into
``<stem>.shard-0000i-of-0000N<suffix>``; :func:`merge_shards` joins the N files in shard order,
which is the sorted input order, after checking every shard finished.

Resuming: an output file is streamed to ``<out>.part`` (whole images, flushed and synced batch by
batch) and renamed to ``<out>`` only when every image is done, so ``<out>`` is never half written.
After a kill, ``--resume`` reads the ``.part`` file, drops its last image (it may be cut short)
and any broken line, skips the images it holds and appends the rest (:class:`StreamedOutput`).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .outputs import OutputError, atomic_write_text, check_writable

#: Output formats by file suffix: CSV rows, JSON Lines (one image a line), one JSON array.
FORMATS = ("csv", "jsonl", "json")


def output_format(out: str | os.PathLike | None, json_format: bool = False, jsonl: bool = False) -> str:
    """``csv``, ``jsonl`` or ``json``: from the flags, else from the suffix of ``out`` (``.jsonl``,
    ``.json``; anything else and stdout are CSV).

    Raises:
        ValueError: both flags given.
    """
    if json_format and jsonl:
        raise ValueError("choose one of --json and --jsonl")
    if jsonl:
        return "jsonl"
    if json_format:
        return "json"
    suffix = Path(str(out)).suffix.lower() if out not in (None, "-") else ""
    return {".jsonl": "jsonl", ".json": "json"}.get(suffix, "csv")


def parse_shard(spec: str | Sequence[int]) -> tuple[int, int]:
    """``"3/8"`` (or ``(3, 8)``) -> ``(3, 8)``: shard 3 of 8, numbered from 0.

    Raises:
        ValueError: not ``i/N`` with ``0 <= i < N``.
    """
    if isinstance(spec, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
        if m is None:
            raise ValueError(f"--shard wants i/N (shard i of N, numbered from 0), got {spec!r}")
        spec = int(m.group(1)), int(m.group(2))
    index, count = (int(v) for v in spec)
    if not 0 <= index < count:
        raise ValueError(f"--shard {index}/{count}: the shard number must be 0 to {count - 1}")
    return index, count


def shard_from_env() -> tuple[int, int] | None:
    """``(rank, world_size)`` under torchrun with several processes, else None."""
    from .distributed import torchrun_env  # imports torch; this module stays torch-free for the checks

    env = torchrun_env()
    return None if env is None or env[1] == 1 else (env[0], env[1])


def shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """``[start, stop)`` of block ``index`` of ``count`` contiguous blocks covering ``range(n)``;
    the blocks differ in size by at most one, are disjoint and cover every item once (no padding)."""
    return index * n // count, (index + 1) * n // count


def shard_inputs(paths: Sequence[str], index: int, count: int) -> list[str]:
    """Shard ``index`` of ``count`` of the sorted ``paths`` (see :func:`shard_bounds`)."""
    ordered = sorted(paths)
    start, stop = shard_bounds(len(ordered), index, count)
    return ordered[start:stop]


def shard_path(out: str | os.PathLike, index: int, count: int) -> Path:
    """``kps.csv`` -> ``kps.shard-00003-of-00008.csv`` for shard 3 of 8."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{index:05d}-of-{count:05d}{out.suffix}")


def part_path(out: str | os.PathLike) -> Path:
    """The unfinished stream of ``out``: ``kps.csv`` -> ``kps.csv.part``."""
    out = Path(out)
    return out.with_name(out.name + ".part")


def _record_image(line: str, fmt: str) -> str:
    if fmt == "csv":
        return next(csv.reader([line]))[0]
    return json.loads(line)["image"]


class StreamedOutput:
    """An output file written image by image to ``<path>.part`` and renamed to ``path`` at the end.

    Args:
        path: the final file.
        fmt: ``csv`` (``header`` first, then rows), ``jsonl`` (one record a line) or ``json``
            (streamed as JSON Lines, written as one indented JSON array by :meth:`finish`).
        header: the CSV header line (with newline), written first; unused otherwise.
        resume: continue an existing ``.part`` file (see :attr:`done`); a finished ``path``
            makes :attr:`complete` true and nothing is written.
        overwrite: replace an existing ``path`` or ``.part`` file.

    Attributes:
        done: images already in the ``.part`` file (resume), to be skipped.
        complete: ``path`` already holds a finished output (resume).

    Raises:
        OutputError: ``path`` exists without ``overwrite``/``resume``; an unfinished ``.part``
            exists without ``resume``/``overwrite``; the folder cannot be written.
    """

    def __init__(self, path: str | os.PathLike, fmt: str, header: str = "", resume: bool = False,
                 overwrite: bool = False) -> None:
        self.path, self.part, self.fmt, self.header = Path(path), part_path(path), fmt, header
        self.done: set[str] = set()
        self.complete = bool(resume and self.path.exists() and not self.part.exists())
        if self.complete:
            return
        check_writable(self.path, overwrite or resume)
        if self.part.exists() and resume:
            self._recover()
        elif self.part.exists() and not overwrite:
            raise OutputError(f"{self.part} holds an unfinished run; pass --resume to continue it or --overwrite")
        else:
            self.part.write_text(header if fmt == "csv" else "")
        self._file = open(self.part, "a", newline="")

    def _recover(self) -> None:
        """Keep the whole images of the ``.part`` file but the last (it may be cut short)."""
        data = self.part.read_bytes()
        lines = data.splitlines(keepends=True)
        if lines and not lines[-1].endswith(b"\n"):
            lines.pop()  # a line cut by the kill
        body_start = 1 if self.fmt == "csv" and lines else 0
        if self.fmt == "csv" and not lines:
            lines = [self.header.encode()]
        images: list[str] = []
        for line in lines[body_start:]:
            try:
                images.append(_record_image(line.decode(), self.fmt))
            except (ValueError, KeyError, StopIteration, UnicodeDecodeError) as e:
                raise OutputError(f"cannot resume {self.part}: a broken record ({type(e).__name__}); "
                                  "pass --overwrite to start again") from e
        keep = len(lines)
        if images:  # drop the rows of the last image: the kill may have cut them
            keep = body_start + len(images)
            while keep > body_start and images[keep - body_start - 1] == images[-1]:
                keep -= 1
        self.done = set(images[: keep - body_start])
        with open(self.part, "r+b") as f:
            f.truncate(sum(len(line) for line in lines[:keep]))

    def write(self, text: str) -> None:
        """Append whole images' lines and push them to disk (a later kill keeps them)."""
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def finish(self) -> None:
        """Rename the finished ``.part`` file to ``path`` (a JSON array for ``json``)."""
        self._file.close()
        if self.fmt == "json":
            records = [json.loads(line) for line in self.part.read_text().splitlines() if line.strip()]
            atomic_write_text(self.path, json.dumps(records, indent=1) + "\n")
            self.part.unlink()
        else:
            os.replace(self.part, self.path)

    def close(self) -> None:
        """Close the ``.part`` file, leaving it for ``--resume`` (after an error or interrupt)."""
        if not self.complete and not self._file.closed:
            self._file.close()


def find_shards(out: str | os.PathLike) -> dict[int, list[tuple[int, Path]]]:
    """The shard files of ``out`` beside it: ``{N: [(i, path), ...]}`` for every N present."""
    out = Path(out)
    pattern = re.compile(re.escape(out.stem) + r"\.shard-(\d{5})-of-(\d{5})" + re.escape(out.suffix) + r"(\.part)?")
    found: dict[int, list[tuple[int, Path]]] = {}
    folder = out.parent if str(out.parent) else Path(".")
    for p in folder.iterdir() if folder.is_dir() else ():
        m = pattern.fullmatch(p.name)
        if m:
            found.setdefault(int(m.group(2)), []).append((int(m.group(1)), p))
    return found


def check_shard_set(out: str | os.PathLike, overwrite: bool = False) -> dict[int, Path]:
    """The finished shard files of ``out``, checked before anything is read (torch-free).

    Returns:
        ``{i: path}`` for every shard i of N, all finished.

    Raises:
        OutputError: no shard files, shards of several N, a shard missing or unfinished (only its
            ``.part`` file), ``out`` exists without ``overwrite`` or cannot be written.
    """
    out = Path(out)
    found = find_shards(out)
    if not found:
        raise OutputError(f"no shard files {shard_path(out, 0, 1).name.replace('00000-of-00001', '*-of-*')} "
                          f"beside {out}")
    if len(found) > 1:
        raise OutputError(f"shards of different counts ({', '.join(map(str, sorted(found)))}) beside {out}; "
                          "remove the stale ones")
    (count, files), = found.items()
    finished = {i: p for i, p in files if p.suffix != ".part"}
    unfinished = sorted(i for i, p in files if p.suffix == ".part" and i not in finished)
    missing = sorted(set(range(count)) - set(finished) - set(unfinished))
    if unfinished or missing:
        parts = []
        if unfinished:
            parts.append(f"unfinished shards {_ids(unfinished)} (rerun them with --resume)")
        if missing:
            parts.append(f"missing shards {_ids(missing)}")
        raise OutputError(f"cannot merge {count} shards into {out}: " + "; ".join(parts))
    check_writable(out, overwrite)
    return finished


def merge_shards(out: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Join ``out``'s finished shard files (``kps.shard-0000i-of-0000N.csv``) into ``out``.

    The rows follow shard order, which is the sorted input order (:func:`shard_inputs`). The format
    comes from the suffix (CSV, ``.jsonl``, ``.json``). The shard files are kept.

    Returns:
        ``{"shards": N, "images": number of distinct images, "records": rows (CSV) or records, "out": path}``.

    Raises:
        OutputError: see :func:`check_shard_set`; an image in two shards, different CSV headers.
    """
    out = Path(out)
    finished = check_shard_set(out, overwrite)
    count = len(finished)
    fmt = output_format(out)
    header, chunks, owner, records = None, [], {}, 0
    for i in range(count):
        path = finished[i]
        if fmt == "json":
            items = json.loads(path.read_text())
            images = [r["image"] for r in items]
            chunks.extend(items)
        else:
            lines = path.read_text().splitlines(keepends=True)
            if fmt == "csv":
                head, lines = (lines[0], lines[1:]) if lines else ("", [])
                if header is not None and head != header:
                    raise OutputError(f"{path.name} has another CSV header than {finished[0].name}")
                header = head
            images = [_record_image(line, fmt) for line in lines]
            chunks.extend(lines)
        records += len(images)
        for image in dict.fromkeys(images):
            if owner.setdefault(image, i) != i:
                raise OutputError(f"{image} is in shards {owner[image]} and {i}: shards of different inputs?")
    if fmt == "json":
        text = json.dumps(chunks, indent=1) + "\n"
    else:
        text = (header or "") + "".join(chunks)
    atomic_write_text(out, text)
    return {"shards": count, "images": len(owner), "records": records, "out": str(out)}


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids))

