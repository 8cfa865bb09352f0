"""Outputs of the ``parts`` method (issue 25): one entry per part, in part order, absent parts kept.

Rows and records are built from :class:`lmpcli.predict.ImageKeypoints` whose ``xy`` (K, 2) is in
part order (index j = part j + 1 on every image; NaN = absent) in original-image pixels.
"""

from __future__ import annotations

import math

import numpy as np

#: CSV header of ``lmp predict --method parts``: one row per part and image, absent parts included.
PART_CSV_COLUMNS = ["image", "part", "x", "y", "score", "visible"]

#: One BGR colour per part (matplotlib's tab20, strong shades first); parts beyond 16 reuse them.
PART_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
                (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23), (232, 199, 174),
                (120, 187, 255), (138, 223, 152), (150, 152, 255), (213, 176, 197), (148, 156, 196)]


def part_name(j: int) -> str:
    """Name of part index ``j`` (0-based) in every output: ``part1``, ``part2``, ..."""
    return f"part{j + 1}"


def part_csv_rows(item) -> list[list]:
    """CSV rows ``image, part, x, y, score, visible`` for every part; x and y empty where absent."""
    rows = []
    for j, ((x, y), s) in enumerate(zip(item.xy, item.score)):
        seen = math.isfinite(x)
        rows.append([item.image, j + 1, round(float(x), 2) if seen else "", round(float(y), 2) if seen else "",
                     round(float(s), 4), int(seen)])
    return rows


def part_json(item) -> dict:
    """COCO-style record: ``keypoints`` is [x, y, v] per part in part order (v = 2 visible, 0 absent
    with x = y = 0), ``scores`` the K part scores and ``parts`` their names."""
    trip: list[float] = []
    for x, y in item.xy:
        trip += [round(float(x), 2), round(float(y), 2), 2] if math.isfinite(x) else [0, 0, 0]
    return {"image": item.image, "width": item.width, "height": item.height,
            "num_keypoints": int(np.isfinite(item.xy[:, 0]).sum()), "keypoints": trip,
            "scores": [round(float(s), 4) for s in item.score], "parts": [part_name(j) for j in range(len(item.xy))],
            "category_id": item.class_index, "category": item.class_name,
            "score": None if item.class_prob is None else round(item.class_prob, 4)}


def draw_parts(image_bgr, xy, scores=None, label: str | None = None, names: list[str] | None = None):
    """Draw each part in its own colour, numbered by part id, with a legend (absent parts greyed).

    Args:
        image_bgr: (H, W, 3) uint8 numpy array.
        xy: (K, 2) part locations (x, y) in pixels of this image, part order; NaN = absent.
        scores: optional (K,) part scores, shown in the legend.
        label: optional caption (e.g. predicted class) written top-left.
        names: optional K legend names (named landmarks); default ``part1`` ... (:func:`part_name`).

    Returns:
        The annotated (H, W, 3) uint8 image.
    """
    import cv2

    from .outputs import draw_keypoints, put_text

    out = draw_keypoints(image_bgr, xy, None, label, colours=PART_COLOURS)  # markers numbered by part id
    h, w = out.shape[:2]
    xy = np.asarray(xy, dtype=float)
    scale = max(0.35, min(h, w) / 900)
    line = int(22 * scale) + 4
    top = (int(24 * max(0.4, min(h, w) / 600)) + 12) if label else 6
    for j in range(len(xy)):
        seen = np.isfinite(xy[j, 0])
        c = PART_COLOURS[j % len(PART_COLOURS)] if seen else (160, 160, 160)
        y0 = top + j * line
        cv2.circle(out, (10, y0 + line // 2), max(3, line // 3), c, -1, cv2.LINE_AA)
        text = f"{j + 1} " * (names is not None) + (names[j] if names is not None else part_name(j)) + (
            "" if seen else " absent") + (
            f" {float(scores[j]):.2f}" if scores is not None and seen else "")
        put_text(out, text, (20, y0 + line - 4), scale, c, (0, 0, 0), 1, 1)
    return out


def _crop_tile(rgb: np.ndarray, x: float, y: float, side: int, tile: int, colour) -> np.ndarray:
    """A ``tile`` x ``tile`` BGR crop of ``side`` pixels centred on (x, y) (padded grey), the part ringed."""
    import cv2

    half = side // 2
    pad = cv2.copyMakeBorder(rgb, half, half, half, half, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    cx, cy = round(x) + half, round(y) + half
    crop = pad[cy - half: cy + half, cx - half: cx + half]
    out = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), (tile, tile), interpolation=cv2.INTER_AREA)
    r = max(3, tile // 16)
    cv2.circle(out, (tile // 2, tile // 2), r + 2, (255, 255, 255), -1, cv2.LINE_AA)
    cv2.circle(out, (tile // 2, tile // 2), r, colour, -1, cv2.LINE_AA)
    return out


def part_grid(items: list, per_part: int = 8, tile: int = 112, crop: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Choose and draw, for every part, the same part on ``per_part`` different birds.

    For part j, the images where it is visible are taken in decreasing part score, at most one per
    predicted class, so a row shows many species (and the poses they come in); a part seen on
    fewer images leaves blank tiles. Each tile is a square crop of ``crop`` x the shorter image
    side centred on the part.

    Args:
        items: :class:`lmpcli.predict.ImageKeypoints` of the ``parts`` method (xy (K, 2) in
            original-image pixels, part order, NaN = absent).

    Returns:
        (grid (K tiles high; a 112-px label column, then per_part tiles) as a BGR uint8 image, chosen (K, per_part)
        indices into ``items``, -1 for blanks).
    """
    import cv2

    from .data import load_rgb
    from .outputs import put_text

    k = len(items[0].xy)
    chosen = np.full((k, per_part), -1)
    for j in range(k):
        order = sorted((i for i, it in enumerate(items) if np.isfinite(it.xy[j, 0])), key=lambda i: -items[i].score[j])
        classes: set = set()
        picks = [i for i in order if not (items[i].class_index in classes or classes.add(items[i].class_index))]
        picks = (picks + [i for i in order if i not in picks])[:per_part]  # fewer classes than columns: repeat
        chosen[j, : len(picks)] = picks
    label_w = 112  # the label column: colour, part name, share of images where it is seen
    grid = np.full((k * tile, label_w + per_part * tile, 3), 255, np.uint8)
    cache: dict[int, np.ndarray] = {}
    for j in range(k):
        colour = PART_COLOURS[j % len(PART_COLOURS)]
        cv2.rectangle(grid, (6, j * tile + tile // 2 - 14), (26, j * tile + tile // 2 + 6), colour, -1)
        put_text(grid, part_name(j), (32, j * tile + tile // 2 + 4), 0.5, (0, 0, 0), None, 1)
        seen = sum(np.isfinite(it.xy[j, 0]) for it in items)
        put_text(grid, f"{100 * seen / len(items):.0f}% seen", (8, j * tile + min(tile - 4, tile // 2 + 24)), 0.4,
                 (60, 60, 60), None, 1)
        for col, i in enumerate(chosen[j]):
            if i < 0:
                continue
            if i not in cache:
                cache[i] = np.asarray(load_rgb(items[i].image))
            rgb = cache[i]
            side = max(8, int(crop * min(rgb.shape[:2])))
            x, y = items[i].xy[j]
            grid[j * tile: (j + 1) * tile, label_w + col * tile: label_w + (col + 1) * tile] = _crop_tile(
                rgb, x, y, side, tile, colour)
    return grid, chosen


def visualize_parts(inputs, *, weights=None, out="parts.png", split: str = "test", per_part: int = 8,
                    tile: int = 112, crop: float = 0.4, limit: int | None = 300, classes=None,
                    batch_size: int = 8, device: str = "auto", workers: int = 2, overwrite: bool = False,
                    progress=None, on_error=None) -> dict:
    """Draw the same part across many birds (``lmp visualize-parts``): rows = parts, columns = images.

    Args:
        inputs: a CUB-200-2011-layout folder (its ``split``) or image files / folders / globs.
        weights: a checkpoint with a part model (None: the shipped weights).
        out: output image (.png / .jpg); never replaced without ``overwrite``.
        limit: scan N images spread evenly over the list (None: all).
        classes: CUB only, official class ids to keep.
        per_part, tile, crop: see :func:`part_grid`.

    Returns:
        ``{"images": n scanned, "errors": [(path, reason)], "parts": K, "out": out}``.

    Raises:
        OutputError, InputError, CheckpointError; ValueError: the checkpoint has no part model.
    """
    from .filters import check_image_output, resolve_image_paths
    from .outputs import atomic_write_image
    from .predict import predict_images

    path = check_image_output(out, overwrite)
    paths = resolve_image_paths(inputs, split, limit, classes)
    errors: list = []

    def record(p: str, reason: str) -> None:
        errors.append((p, reason))
        if on_error is not None:
            on_error(p, reason)

    items = list(predict_images(paths, weights=weights, method="parts", batch_size=batch_size, device=device,
                                workers=workers, on_error=record, progress=progress))
    if not items:
        from .outputs import OutputError

        raise OutputError("no image could be read; nothing written")
    grid, _ = part_grid(items, per_part, tile, crop)
    atomic_write_image(path, grid)
    return {"images": len(items), "errors": errors, "parts": len(items[0].xy), "out": str(path)}
