"""Image discovery and robust decoding."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """Bad user input: a path that does not exist, an empty folder, no images."""


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully into an RGB PIL image (grayscale, CMYK, RGBA, palette -> RGB).

    Raises:
        OSError: unreadable, truncated or not an image (PIL's UnidentifiedImageError is one).
    """
    with Image.open(path) as im:
        im.load()  # truncated files raise here
        if im.mode == "RGBA" or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, im).convert("RGB")
        return im.convert("RGB")


def expand_inputs(inputs: Iterable[str], stdin: Iterable[str] | None = None) -> list[str]:
    """Expand image paths, folders (recursive) and glob patterns into a sorted-per-input list.

    ``-`` reads newline-separated paths from ``stdin`` (default ``sys.stdin``). Files given
    explicitly are kept whatever their extension (so bad files get reported); files found
    in folders or globs are kept when their extension is an image extension.

    Raises:
        InputError: a path that does not exist and matches no glob, or no image at all.
    """
    out: list[str] = []
    for item in inputs:
        if item == "-":
            lines = (stdin if stdin is not None else sys.stdin)
            out.extend(line.strip() for line in lines if line.strip())
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise InputError(f"no images in folder {item}")
            out.extend(found)
        elif p.is_file():
            out.append(str(p))
        elif any(ch in item for ch in "*?["):
            found = sorted(f for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                raise InputError(f"no file matches {item}")
            out.extend(found)
        else:
            raise InputError(f"no such file or folder: {item}")
    if not out:
        raise InputError("no input images")
    return out


def iter_bad(paths: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Yield (path, reason) for every path that cannot be decoded (used in tests and reports)."""
    for p in paths:
        try:
            load_rgb(p)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            yield p, str(e)


def spread_subset(n: int, limit: int | None) -> list[int]:
    """Indices of ``limit`` items spread evenly over ``range(n)`` (all of them when ``limit`` is None
    or >= n). CUB splits are sorted by class, so an even spread keeps every class in a quick check.

    Raises:
        InputError: ``limit < 1``.
    """
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    return sorted({round(i * (n - 1) / max(limit - 1, 1)) for i in range(limit)})
