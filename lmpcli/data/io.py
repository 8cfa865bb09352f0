"""Image discovery and robust decoding (torch-free)."""

from __future__ import annotations

import glob
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """Bad user input: a path that does not exist, an empty folder, no images."""


#: Largest image decoded, in pixels (width x height of the stored image): 250 megapixels, above the
#: largest phone cameras (200 MP) and PIL's decompression-bomb limit (about 179 MP, which it
#: enforces by raising, here replaced by this check). Larger images are skipped with a reason,
#: checked from the file's header before anything is decoded. A JPEG is decoded reduced
#: (:func:`decode_image`); another format at the limit takes about 750 MB as 8-bit RGB.
MAX_PIXELS = 250_000_000


_OPEN_LOCK = threading.Lock()


class ImageTooLargeError(OSError):
    """An image above the pixel limit (:data:`MAX_PIXELS`); raised before decoding it."""


@dataclass
class DecodedImage:
    """An image decoded for the network, in the frame every viewer shows.

    Attributes:
        image: RGB PIL image, EXIF orientation applied; possibly reduced (see :func:`decode_image`).
        size: (W, H) of the full-resolution image in the displayed frame, pixels: the frame of
            every reported coordinate.
        orientation: the EXIF orientation tag that was applied (1 = none, 2-8 = flips/rotations).
    """

    image: Image.Image
    size: tuple[int, int]
    orientation: int


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale a 32-bit integer ("I", also 16-bit images converted to it) or float ("F") image to 8-bit "L".

    Integers whose values all lie in 0..65535 (16-bit): value / 65535 * 255, the type's full
    range. Other "I": its min..max stretched to 0..255. Float ("F"): values in [0, 1] times 255
    when every finite value lies there, else min..max stretched; NaN and infinities -> 0.
    PIL's own ``convert`` clips instead, which made 16-bit images all white and float ones black.
    """
    a = np.asarray(im, dtype=np.float64)
    finite = np.isfinite(a)
    a = np.where(finite, a, 0.0)
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 1.0)
    if im.mode == "I" and lo >= 0 and hi <= 65535:
        a = a / 65535.0
    elif not (im.mode == "F" and lo >= 0 and hi <= 1):
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    a = np.where(finite, a, 0.0)
    return Image.fromarray((a * 255.0).round().clip(0, 255).astype(np.uint8))


def decode_image(path: str | os.PathLike, min_side: int | None = None, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode an image robustly and cheaply for the network.

    * Pixel limit: an image with more than ``max_pixels`` stored pixels raises before any decoding.
    * Reduction: with ``min_side`` (the network input side, e.g. 448), a JPEG is decoded at the
      smallest of PIL's draft scales (1/2, 1/4, 1/8, from libjpeg's DCT scaling) that keeps both
      sides >= ``min_side``, so memory and time follow the network input, not the photo; other
      formats are decoded fully and then reduced by the largest integer factor that keeps both
      sides >= ``min_side`` (``Image.reduce``). None decodes at full resolution.
    * EXIF orientation: applied with ``PIL.ImageOps.exif_transpose``; ``size`` and all
      coordinates are in the displayed frame.
    * Modes: 16-bit and float images are scaled to 8 bits (:func:`_to_8bit`); alpha is composited
      over white; grayscale, CMYK and palette images become RGB.

    The reduced image covers the full one exactly up to JPEG's rounding of the last block (at most
    scale - 1 pixels of the full image at the right and bottom edges, i.e. under 0.1 % of a
    10,000-pixel side).

    Returns:
        :class:`DecodedImage` (RGB image, full-resolution displayed (W, H), EXIF orientation).

    Raises:
        ImageTooLargeError: above ``max_pixels`` (an OSError).
        OSError: unreadable, truncated or not an image (PIL's UnidentifiedImageError is one).
    """
    with _OPEN_LOCK:  # PIL's own bomb check off while the header is read: the limit here is max_pixels
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise ImageTooLargeError(f"{w} x {h} pixels ({w * h / 1e6:.1f} megapixels) is above the limit of "
                                     f"{max_pixels / 1e6:g} megapixels")
        orientation = int(im.getexif().get(ExifTags.Base.Orientation, 1) or 1)
        if orientation not in range(1, 9):
            orientation = 1
        if min_side and im.format == "JPEG":
            im.draft(None, (min_side, min_side))
        im.load()  # truncated files raise here
        if orientation != 1:
            ImageOps.exif_transpose(im, in_place=True)
        if im.mode == "1" or im.mode.startswith("I;16"):  # modes Image.reduce cannot average
            im = im.convert("L" if im.mode == "1" else "I")
        elif im.mode in ("P", "PA"):
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
        if min_side and min(im.size) // min_side > 1:
            im = im.reduce(min(im.size) // min_side)
        if im.mode in ("I", "F"):
            im = _to_8bit(im)
        if im.mode in ("RGBA", "LA", "La", "RGBa"):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(background, im).convert("RGB")
        else:
            rgb = im.convert("RGB")
    size = (h, w) if orientation >= 5 else (w, h)
    return DecodedImage(rgb, size, orientation)


def load_rgb(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image file fully into an RGB PIL image in the displayed frame (EXIF orientation
    applied; grayscale, CMYK, RGBA, palette, 16-bit and float -> 8-bit RGB; see :func:`decode_image`).

    Raises:
        ImageTooLargeError: above ``max_pixels``.
        OSError: unreadable, truncated or not an image (PIL's UnidentifiedImageError is one).
    """
    return decode_image(path, None, max_pixels).image


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
