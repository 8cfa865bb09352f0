"""Output files: atomic writes, overwrite protection, CSV/JSON keypoint tables, OpenCV drawings."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class OutputError(RuntimeError):
    """An output cannot be written (exists without overwrite, folder not writable)."""


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail early if ``path`` exists (and not ``overwrite``) or its folder cannot be written.

    Raises:
        OutputError: with a one-line reason.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"cannot create folder {parent}: a file is in the way")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder {parent}: {e.strerror or e}") from e
    try:  # a real probe: os.access says yes to root even on read-only mounts
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write to {parent}: {e.strerror or e}") from e
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The file gets the usual ``0o666 & ~umask`` mode; on any error (or Ctrl-C) the temporary
    file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)

#: BGR colours of keypoint ranks 1.. (cycled).
RANK_COLOURS = [(0, 0, 255), (0, 200, 255), (0, 220, 0), (255, 160, 0), (255, 0, 200),
                (0, 255, 255), (200, 0, 0), (128, 0, 255), (0, 128, 128), (128, 128, 0)]


def put_text(img, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255),
             outline=None, thickness: int = 1, outline_px: int = 1) -> None:
    """Draw ``text`` on ``img`` in place, optionally with an outline that hugs the glyphs.

    OpenCV's ``putText`` advances each glyph by more the thicker the stroke, so an outline drawn as
    the same text at a larger thickness runs ahead of the letters (a ghost of the last ones). Here
    the outline is the text's own anti-aliased mask dilated by ``outline_px`` pixels and blended
    under it, so both share one layout.

    Args:
        img: (H, W, 3) or (H, W) uint8 numpy array, modified in place.
        text: the string (OpenCV's Hershey simplex font, ASCII).
        org: (x, y) pixel position of the text's baseline-left corner.
        scale: font scale (``cv2.putText``'s ``fontScale``).
        colour: text colour: a BGR triple for a (H, W, 3) image, a number for a (H, W) one.
        outline: outline colour, in the same form; ``None`` draws none.
        thickness: stroke thickness of the text in pixels.
        outline_px: outline width in pixels around every stroke.
    """
    import cv2
    import numpy as np

    font = cv2.FONT_HERSHEY_SIMPLEX
    if outline is None:
        cv2.putText(img, text, org, font, scale, colour, thickness, cv2.LINE_AA)
        return
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    pad = outline_px + thickness + 2
    h, w = img.shape[:2]
    x0, y0 = max(0, org[0] - pad), max(0, org[1] - th - pad)
    x1, y1 = min(w, org[0] + tw + pad), min(h, org[1] + base + pad)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.putText(mask, text, (org[0] - x0, org[1] - y0), font, scale, 255, thickness, cv2.LINE_AA)
    halo = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * outline_px + 1,) * 2))
    roi = img[y0:y1, x0:x1].astype(np.float32)
    for alpha, c in ((halo, outline), (mask, colour)):
        a = (alpha.astype(np.float32) / 255.0).reshape(alpha.shape + (1,) * (roi.ndim - 2))
        roi = roi * (1.0 - a) + np.asarray(c, np.float32) * a
    img[y0:y1, x0:x1] = roi.round().clip(0, 255).astype(np.uint8)


def draw_keypoints(image_bgr, xy, scores=None, label: str | None = None, colours=RANK_COLOURS):
    """Draw numbered, coloured keypoint markers on a copy of a BGR uint8 image (OpenCV).

    Args:
        image_bgr: (H, W, 3) uint8 numpy array.
        xy: (k, 2) keypoints (x, y) in pixels of this image; NaN rows are skipped.
        scores: optional (k,) confidences, unused for drawing size.
        label: optional caption (e.g. predicted class) written top-left.
        colours: BGR colour of marker i is ``colours[i % len(colours)]`` (ranks by default; parts
            pass their own, :func:`lmpcli.part_outputs.draw_parts`).

    Returns:
        The annotated (H, W, 3) uint8 image.
    """
    import cv2
    import numpy as np

    out = image_bgr.copy()
    h, w = out.shape[:2]
    r = max(4, round(min(h, w) / 60))
    thick = max(1, r // 3)
    for i, (x, y) in enumerate(np.asarray(xy, dtype=float)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        c = colours[i % len(colours)]
        p = (int(round(x)), int(round(y)))
        cv2.circle(out, p, r + thick, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, p, r, c, -1, cv2.LINE_AA)
        put_text(out, str(i + 1), (p[0] + r + 2, p[1] - r), r / 10, c, (255, 255, 255), thick, 1)
    if label:
        scale = max(0.4, min(h, w) / 600)
        put_text(out, label, (8, int(24 * scale) + 4), scale, (255, 255, 255), (0, 0, 0), 1, 2)
    return out


def atomic_write_image(path: str | os.PathLike, image_bgr) -> None:
    """Encode with OpenCV by the file's extension and rename into place.

    Raises:
        OutputError: unknown extension or encode failure.
    """
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".jpg", image_bgr)
    if not ok:
        raise OutputError(f"cannot encode image {path}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buf.tobytes())
