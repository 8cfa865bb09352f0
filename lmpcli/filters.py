""""Full-scale" filter visualisation (Guo & Farrell, Sec. 3.2, Fig. 4).

One batched pass over a set of images records, for every image and final-conv filter, the
filter's *activation strength* (the maximum of its feature map) and the cell holding it
(:func:`collect_filter_peaks`). Filters are then ranked by their maximum activation over
all images (:func:`rank_filters`) and sampled evenly along that ranking, strongest first
and weakest last (:func:`sample_evenly`); for every chosen filter the images are ranked by
that filter's activation and sampled evenly too (:func:`choose_grid`). The grid
(:func:`render_filter_grid`) shows one filter per column (left to right: decreasing maximum
activation) and one image per row (top to bottom: decreasing activation of that column's
filter), each tile the image with the filter's upsampled feature map overlaid and its peak
ringed. Paper: "images with higher activations are more likely to contain the underlying
pattern (the top left portion of the graph)".

:func:`visualize_filters` is the body of ``lmp visualize-filters``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from .choices import NETWORKS, NORMALIZE_MODES
from .data import (CUBDataset, ImagePathDataset, InputError, collate_skip_errors, eval_transform, expand_inputs,
                   spread_subset)
from .model import LMPNetPair
from .outputs import put_text
from .progress import NullProgress, Progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

#: Grid layout in pixels: padding between tiles (torchvision ``make_grid``), title strip,
#: column-header strip (two text lines) and left margin for the row (rank) labels.
PAD = 2
TITLE_H = 22
HEADER_H = 32
MARGIN_W = 52


# --------------------------------------------------------------------------- features


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def network_features(model: LMPNetPair, images: Tensor, network: str = "main") -> tuple[Tensor, Tensor]:
    """Final-conv feature maps of one network of the pair, exactly as keypoint prediction sees them.

    For ``replica`` the input is the image with the main network's first keypoint masked
    out by the pair's one mask-out path, :meth:`LMPNetPair.replica_input` (Sec. 3.3).

    Args:
        model: the pair (eval mode).
        images: (B, 3, S, S) float32 normalised network inputs, on the model's device.
        network: ``"main"`` or ``"replica"``.

    Returns:
        (features (B, C, h, w) float32, inputs (B, 3, S, S)): the feature maps and the
        network's actual input (the masked image for the replica).

    Raises:
        ValueError: unknown ``network``, or ``replica`` on a checkpoint without one.
    """
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose main or replica")
    if images.device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    _, features = model.main(images)
    if network == "main":
        return features.float(), images
    if model.replica is None:
        raise ValueError("this checkpoint has no replica network (trained with --no-replica)")
    masked = model.replica_input(images, features)
    _, rep = model.replica(masked)
    return rep.float(), masked


def batch_images(batch) -> Tensor | None:
    """The (B, 3, S, S) image tensor of a loader batch, or None for a batch of unreadable files.

    Accepts dict batches (``collate_skip_errors``, evaluation collates: key ``image``),
    ``(images, labels)`` tuples (training collate) and bare tensors.
    """
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, dict):
        return batch.get("image")
    return batch[0]


@dataclass
class FilterStats:
    """Per-image, per-filter activation peaks of one network over a set of images.

    Attributes:
        peaks: (N, C) float32 activation strength: the maximum of each final-conv feature map.
        cells: (N, C) int64 flat index ``row * w + col`` of the cell holding that maximum
            (first one on ties); see :meth:`cell_xy`.
        paths: N image paths, row order of ``peaks``.
        map_size: (h, w) feature-map size in cells.
        network: ``"main"`` or ``"replica"``.
        errors: (path, reason) of images that could not be read (skipped).
    """

    peaks: Tensor
    cells: Tensor
    paths: list[str]
    map_size: tuple[int, int]
    network: str = "main"
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def strength(self) -> Tensor:
        """(C,) maximum activation of every filter over all images (the ranking key of Fig. 4)."""
        return self.peaks.max(dim=0).values

    def cell_xy(self) -> Tensor:
        """(N, C, 2) float32 peak cells as (x, y) = (column, row), feature-map cells."""
        w = self.map_size[1]
        return torch.stack([self.cells % w, torch.div(self.cells, w, rounding_mode="floor")], -1).float()


def iter_network_features(model: LMPNetPair, loader, network: str, device: torch.device, errors: list,
                          progress: Progress, description: str):
    """Yield (batch, features (B, C, h, w)) of one network over ``loader``, reporting progress.

    Unreadable files listed in a batch's ``errors`` are appended to ``errors`` and skipped.
    """
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    progress.start(description, total)
    try:
        for batch in loader:
            bad = list(batch.get("errors", [])) if isinstance(batch, dict) else []
            errors += bad
            images = batch_images(batch)
            if images is None:
                progress.advance(len(bad))
                continue
            features, _ = network_features(model, images.to(device, non_blocking=True), network)
            yield batch, features
            progress.advance(len(images) + len(bad))
    finally:
        progress.finish()


@torch.inference_mode()
def collect_filter_peaks(model: LMPNetPair, loader, network: str = "main", device: torch.device | str | None = None,
                         progress: Progress | None = None) -> FilterStats:
    """One batched pass over ``loader`` recording every filter's peak on every image (Sec. 3.2).

    Args:
        model: the pair, eval mode.
        loader: yields dict batches with ``image`` (B, 3, S, S) normalised inputs and
            ``path`` (B paths), optionally ``errors`` [(path, reason)] as produced by
            :func:`lmpcli.data.collate_skip_errors` over an :class:`ImagePathDataset`.
        network: ``"main"`` or ``"replica"`` (fed the masked image, see :func:`network_features`).
        device: where to run (default: the model's device).
        progress: reports images done.

    Returns:
        :class:`FilterStats` with N = number of readable images.

    Raises:
        ValueError: unknown network / no replica.
        InputError: no image could be read.
    """
    progress = progress or NullProgress()
    dev = torch.device(device) if device is not None else _model_device(model)
    peaks, cells, paths, errors = [], [], [], []
    map_size: tuple[int, int] = (0, 0)
    for batch, features in iter_network_features(model, loader, network, dev, errors, progress,
                                                  f"filter peaks ({network})"):
        peak, idx = features.flatten(-2).max(dim=-1)  # (B, C)
        peaks.append(peak.cpu())
        cells.append(idx.cpu())
        paths += [str(p) for p in batch["path"]]
        map_size = (int(features.shape[-2]), int(features.shape[-1]))
    if not peaks:
        raise InputError("no image could be read")
    return FilterStats(torch.cat(peaks), torch.cat(cells), paths, map_size, network, errors)


# --------------------------------------------------------------------------- ranking and sampling


def rank_filters(peaks: Tensor) -> Tensor:
    """Filters ordered by decreasing maximum activation strength over images (Fig. 4, left to right).

    Args:
        peaks: (N, C) activation strengths (:attr:`FilterStats.peaks`).

    Returns:
        (C,) int64 filter indices, strongest first; ties keep the lower index first.
    """
    if peaks.ndim != 2 or peaks.shape[0] == 0:
        raise ValueError(f"rank_filters expects a non-empty (N, C) tensor, got shape {tuple(peaks.shape)}")
    return torch.sort(peaks.max(dim=0).values, descending=True, stable=True).indices


def even_positions(length: int, n: int) -> Tensor:
    """(min(n, length),) int64 positions spread evenly over ``0..length-1``, both ends included.

    Raises:
        ValueError: ``n < 1`` or ``length < 1``.
    """
    if n < 1 or length < 1:
        raise ValueError(f"need n >= 1 and a non-empty ranking, got n={n}, length={length}")
    if n >= length:
        return torch.arange(length)
    if n == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.linspace(0, length - 1, n, dtype=torch.float64).round().long()  # step >= 1: no duplicates


def sample_evenly(order: Tensor, n: int) -> Tensor:
    """``n`` entries of a ranking sampled evenly along it, first and last included (Fig. 4).

    Args:
        order: (L,) a ranking (e.g. :func:`rank_filters`).
        n: how many to keep; ``n >= L`` keeps the whole ranking.

    Returns:
        (min(n, L),) entries of ``order`` in ranking order.

    Raises:
        ValueError: ``n < 1`` or an empty ranking.
    """
    return order[even_positions(len(order), n)]


class GridSelection(NamedTuple):
    """Which tiles a filter grid shows.

    Attributes:
        filters: (F,) int64 filter ids, one per column, left to right.
        strength: (F,) float32 maximum activation of each filter over all images.
        rows: (R, F) int64 image indices (rows of :attr:`FilterStats.peaks`); column ``j``
            lists that filter's images by decreasing activation.
        rank: (R,) int64 0-based position of each row in every column's image ranking.
        values: (R, F) float32 activation of each tile's image for its column's filter.
        mode: ``"even"`` (sampled evenly along both rankings) or ``"top"`` (chosen filters,
            their top-R images).
    """

    filters: Tensor
    strength: Tensor
    rows: Tensor
    rank: Tensor
    values: Tensor
    mode: str


def choose_grid(peaks: Tensor, *, n_filters: int = 8, n_rows: int = 6,
                filters: Sequence[int] | None = None) -> GridSelection:
    """Choose the filters (columns) and images (rows) of a filter grid.

    Without ``filters`` ("full-scale", Fig. 4): ``n_filters`` filters sampled evenly along
    :func:`rank_filters` (strongest and weakest included) and, per filter, ``n_rows``
    images sampled evenly along that filter's image ranking (top image first, weakest last).
    With ``filters``: those ids in the given order, each with its top ``n_rows`` images.

    Args:
        peaks: (N, C) activation strengths.
        n_filters: columns in full-scale mode (clipped to C).
        n_rows: rows (clipped to N).
        filters: explicit filter ids (0-based, ``< C``) for the top-N mode.

    Returns:
        :class:`GridSelection`.

    Raises:
        ValueError: ``n_filters``/``n_rows`` < 1, empty ``filters`` or an id out of range.
    """
    n, c = peaks.shape
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    if filters is None:
        cols = sample_evenly(rank_filters(peaks), n_filters)
        positions, mode = even_positions(n, n_rows), "even"
    else:
        ids = [int(f) for f in filters]
        if not ids:
            raise ValueError("no filter ids given")
        bad = [f for f in ids if not 0 <= f < c]
        if bad:
            raise ValueError(f"filter ids out of range 0..{c - 1}: {', '.join(map(str, bad))}")
        cols = torch.tensor(list(dict.fromkeys(ids)), dtype=torch.long)
        positions, mode = torch.arange(min(n_rows, n)), "top"
    col_peaks = peaks[:, cols]  # (N, F)
    ranking = torch.sort(col_peaks, dim=0, descending=True, stable=True).indices  # (N, F)
    rows = ranking[positions]  # (R, F)
    values = col_peaks.gather(0, rows)
    return GridSelection(cols, col_peaks.max(dim=0).values, rows, positions, values, mode)


# --------------------------------------------------------------------------- rendering


def tile_origin(row: int, col: int, tile: int) -> tuple[int, int]:
    """(y, x) pixel of the top-left corner of tile (row, col) in a :func:`render_filter_grid` image."""
    return TITLE_H + HEADER_H + PAD + row * (tile + PAD), MARGIN_W + PAD + col * (tile + PAD)


def _colormap_lut(name: str) -> Tensor:
    """(256, 3) uint8 RGB lookup table of an OpenCV colormap (``jet``, ``turbo``, ``inferno`` ...)."""
    import cv2

    code = getattr(cv2, f"COLORMAP_{name.upper()}", None)
    if code is None:
        raise ValueError(f"unknown colormap {name!r}; e.g. jet, turbo, inferno, viridis")
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), code)[:, 0, ::-1]
    return torch.from_numpy(np.ascontiguousarray(lut))


def overlay_maps(images: Tensor, maps: Tensor, scale: Tensor, *, peak_xy: Tensor | None = None,
                 alpha: float = 0.45, colormap: str = "jet") -> Tensor:
    """Colour-mapped feature maps blended over image tiles, peaks ringed (batched).

    Args:
        images: (T, 3, t, t) uint8 RGB tiles.
        maps: (T, h, w) float feature maps (values <= 0 show as the colormap's low end).
        scale: (T,) value mapped to the colormap's top (maps are divided by it, clipped to [0, 1]).
        peak_xy: (T, 2) peak cells (x, y) in feature-map cells; NaN rows get no ring.
        alpha: weight of the heat map in the blend.
        colormap: OpenCV colormap name.

    Returns:
        (T, 3, t, t) uint8 RGB tiles. Maps are upsampled bilinearly (``align_corners=False``:
        cell ``i`` covers tile pixels ``[i, i+1) * t / w``).
    """
    t = images.shape[-1]
    h, w = maps.shape[-2:]
    up = F.interpolate(maps.float()[:, None], size=(t, t), mode="bilinear", align_corners=False)[:, 0]
    up = (up / scale.float().clamp_min(1e-12)[:, None, None]).clamp(0, 1)
    heat = _colormap_lut(colormap)[(up * 255).round().long()].permute(0, 3, 1, 2).float()  # (T, 3, t, t)
    out = (1 - alpha) * images.float() + alpha * heat
    if peak_xy is not None:
        centre = (peak_xy.float() + 0.5) * torch.tensor([t / w, t / h])  # (T, 2) tile pixels
        grid = torch.arange(t, dtype=torch.float32) + 0.5
        d = torch.sqrt((grid[None, None, :] - centre[:, 0, None, None]) ** 2
                       + (grid[None, :, None] - centre[:, 1, None, None]) ** 2)  # (T, t, t)
        d = d.nan_to_num(float("inf"))
        r = max(3.0, t / 18)
        outline = ((d - r).abs() <= 2.0)[:, None]
        ring = ((d - r).abs() <= 0.9)[:, None]
        out = torch.where(outline, 0.0, out)
        out = torch.where(ring, 255.0, out)
    return out.round().clamp(0, 255).to(torch.uint8)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(0, 0, 0),
          outline: tuple[int, int, int] | None = None, max_width: int | None = None) -> None:
    """Draw ``text`` with its baseline-left at ``org`` (x, y), shrunk to fit ``max_width`` pixels."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    if max_width is not None:
        width = cv2.getTextSize(text, font, scale, 1)[0][0]
        if width > max_width:
            scale *= max_width / width
    put_text(img, text, org, scale, colour, outline)


@torch.inference_mode()
def tile_maps(model: LMPNetPair, paths: Sequence[str], filters: Tensor, *, network: str = "main", tile: int = 128,
              batch_size: int = 8, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Recompute feature maps of ``filters`` for a few images, with display tiles.

    Args:
        paths: U image paths.
        filters: (F,) filter ids to keep.
        tile: side of the display tiles, pixels.

    Returns:
        (maps (U, F, h, w) float32 CPU, tiles (U, 3, tile, tile) uint8 RGB CPU). The tiles
        show the network's input (square-resized image; for the replica, the masked image)
        de-normalised and resized with antialiasing.

    Raises:
        InputError: an image that can no longer be read.
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    cfg = model.config
    dataset = ImagePathDataset(list(paths), eval_transform(cfg.image_size, cfg.mean, cfg.std), cfg.image_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_skip_errors)
    mean = torch.tensor(cfg.mean, device=dev)[None, :, None, None]
    std = torch.tensor(cfg.std, device=dev)[None, :, None, None]
    maps, tiles = [], []
    for batch in loader:
        if batch["errors"]:
            path, reason = batch["errors"][0]
            raise InputError(f"cannot read {path}: {reason}")
        features, inputs = network_features(model, batch["image"].to(dev), network)
        maps.append(features[:, filters.to(dev)].cpu())
        rgb = (inputs.float() * std + mean).clamp(0, 1)
        rgb = F.interpolate(rgb, size=(tile, tile), mode="bilinear", align_corners=False, antialias=True)
        tiles.append((rgb * 255).round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(maps), torch.cat(tiles)


def render_filter_grid(model: LMPNetPair, stats: FilterStats, selection: GridSelection, *, tile: int = 128,
                       alpha: float = 0.45, colormap: str = "jet", normalize: str = "filter",
                       batch_size: int = 8, device: torch.device | str | None = None,
                       title: str | None = None) -> np.ndarray:
    """Draw the filter grid of Fig. 4.

    Columns are ``selection.filters`` left to right (full-scale mode: decreasing maximum
    activation), each headed by the filter id and its maximum activation over the images;
    rows are images by decreasing activation of the column's filter, labelled on the left
    with their 1-based rank. Each tile is the image (resized to ``tile`` x ``tile``) with
    the filter's feature map upsampled bilinearly, colour-mapped and blended at ``alpha``,
    its peak cell ringed (white on black) and the tile's activation written bottom-left.
    Feature maps are recomputed for the U distinct images shown only.

    Args:
        stats: from :func:`collect_filter_peaks` (same model and network).
        selection: from :func:`choose_grid` on ``stats.peaks``.
        tile: tile side, pixels (>= 32).
        normalize: colour scale: ``filter`` (each column by its filter's maximum activation,
            so fading down a column shows weaker activation), ``tile`` (each map by its own
            peak: shape only) or ``grid`` (one scale for all tiles).
        title: text of the title strip (default: network, image and filter counts).

    Returns:
        (H, W, 3) uint8 RGB image, H = ``TITLE_H + HEADER_H + R*(tile+PAD) + PAD``,
        W = ``MARGIN_W + F*(tile+PAD) + PAD``; tile (r, c) starts at :func:`tile_origin`.

    Raises:
        ValueError: bad ``tile``, ``normalize`` or colormap.
    """
    from torchvision.utils import make_grid

    if tile < 32:
        raise ValueError(f"tile must be >= 32 pixels, got {tile}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {', '.join(NORMALIZE_MODES)}")
    filters, rows = selection.filters, selection.rows
    r, f = rows.shape
    uniq, inverse = torch.unique(rows, return_inverse=True)  # (U,), (R, F)
    maps_u, tiles_u = tile_maps(model, [stats.paths[i] for i in uniq.tolist()], filters, network=stats.network,
                                tile=tile, batch_size=batch_size, device=device)
    cols = torch.arange(f).expand(r, f)
    maps = maps_u[inverse, cols].reshape(r * f, *maps_u.shape[-2:])  # (R*F, h, w), row-major
    images = tiles_u[inverse.reshape(-1)]  # (R*F, 3, t, t)
    values = selection.values.reshape(-1)
    if normalize == "filter":
        scale = selection.strength.expand(r, f).reshape(-1)
    elif normalize == "tile":
        scale = maps.flatten(-2).amax(-1)
    else:
        scale = selection.strength.max().expand(r * f)
    flat = stats.cells[rows, filters.expand(r, f)].reshape(-1)  # (R*F,) peak cell, row * w + col
    w = stats.map_size[1]
    peak = torch.stack([flat % w, torch.div(flat, w, rounding_mode="floor")], -1).float()
    peak = torch.where((values > 0)[:, None], peak, float("nan"))  # a map that never fired has no peak
    tiles = overlay_maps(images, maps, scale, peak_xy=peak, alpha=alpha, colormap=colormap)
    grid = make_grid(tiles, nrow=f, padding=PAD, pad_value=255).permute(1, 2, 0).numpy()
    canvas = np.full((TITLE_H + HEADER_H + grid.shape[0], MARGIN_W + grid.shape[1], 3), 255, np.uint8)
    canvas[TITLE_H + HEADER_H:, MARGIN_W:] = grid
    fs = min(0.5, max(0.33, tile / 300))
    if title is None:
        how = "evenly sampled by max activation" if selection.mode == "even" else "chosen filters, top images"
        title = f"{stats.network} network: {len(stats.paths)} images, {f} of {stats.peaks.shape[1]} filters ({how})"
    _text(canvas, title, (4, TITLE_H - 7), 0.45, max_width=canvas.shape[1] - 8)
    _text(canvas, "rank", (4, TITLE_H + HEADER_H - 6), fs, (90, 90, 90), max_width=MARGIN_W - 6)
    for j in range(f):
        _, x = tile_origin(0, j, tile)
        _text(canvas, f"filter {int(filters[j])}", (x + 2, TITLE_H + 13), fs, max_width=tile - 4)
        _text(canvas, f"max {float(selection.strength[j]):.3g}", (x + 2, TITLE_H + HEADER_H - 6), fs,
              (90, 90, 90), max_width=tile - 4)
    for i in range(r):
        y, _ = tile_origin(i, 0, tile)
        _text(canvas, f"#{int(selection.rank[i]) + 1}", (4, y + tile // 2 + 5), fs, max_width=MARGIN_W - 8)
        for j in range(f):
            y, x = tile_origin(i, j, tile)
            _text(canvas, f"{float(selection.values[i, j]):.3g}", (x + 3, y + tile - 5), fs * 0.9,
                  (255, 255, 255), outline=(0, 0, 0), max_width=tile - 6)
    return canvas


# --------------------------------------------------------------------------- end to end


def resolve_image_paths(inputs: str | os.PathLike | Sequence[str], split: str = "test",
                        limit: int | None = None, classes: Sequence[int] | None = None) -> list[str]:
    """Image paths from a CUB-200-2011-layout folder (one folder holding ``images.txt``: its
    ``split``) or from files / folders / globs (:func:`lmpcli.data.expand_inputs`).

    Args:
        limit: keep ``limit`` paths spread evenly over the list (as ``lmp evaluate --limit``).
        classes: CUB only: keep these official class ids (1-based).

    Raises:
        InputError: missing paths, no images, unknown split, bad CUB folder.
    """
    items = [str(inputs)] if isinstance(inputs, (str, os.PathLike)) else [str(i) for i in inputs]
    if len(items) == 1 and (Path(items[0]) / "images.txt").is_file():
        dataset = CUBDataset(items[0], split, classes=None if classes is None else list(classes))
        paths = [str(dataset.root / "images" / f) for f in dataset.table["file"]]
        if not paths:
            raise InputError(f"no images in split {split!r} of {items[0]}")
    else:
        paths = expand_inputs(items)
    return [paths[i] for i in spread_subset(len(paths), limit)]


def check_image_output(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """:func:`lmpcli.outputs.check_writable` plus an image-suffix check.

    Raises:
        OutputError: existing file without ``overwrite``, unwritable folder, or a suffix
            that is not an image format.
    """
    from .outputs import OutputError, check_writable

    path = Path(out)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise OutputError(f"{path}: output must be an image file ({', '.join(IMAGE_SUFFIXES)})")
    return check_writable(path, overwrite)


def visualize_filters(
    inputs: str | os.PathLike | Sequence[str],
    *,
    weights: str | os.PathLike | None = None,
    out: str | os.PathLike = "filters.png",
    split: str = "test",
    n_filters: int = 8,
    n_rows: int = 6,
    tile: int = 128,
    network: str = "main",
    filters: Sequence[int] | None = None,
    classes: Sequence[int] | None = None,
    normalize: str = "filter",
    colormap: str = "jet",
    alpha: float = 0.45,
    limit: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    backend: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Write the "full-scale" filter grid of Fig. 4 (Sec. 3.2) for a checkpoint; the body of
    ``lmp visualize-filters``.

    Args:
        inputs: a CUB-200-2011-layout folder (its ``split`` is used) or image files, folders
            (recursive) and globs.
        weights: checkpoint (None = the shipped weights).
        out: output image (``.png`` recommended), written atomically.
        split: CUB split (``train``, ``test``, ``all``); ignored for plain images.
        n_filters: columns sampled evenly along the filter ranking (strongest .. weakest).
        n_rows: images per column (evenly sampled; top-N with ``filters``).
        tile: tile side, pixels.
        network: ``main`` or ``replica`` (fed the masked image, Sec. 3.3).
        filters: explicit filter ids (columns in this order), each with its top ``n_rows`` images.
        classes: CUB only: restrict to these official class ids (1-based).
        normalize, colormap, alpha: colouring, see :func:`render_filter_grid`.
        limit: only ``limit`` images, spread evenly over the inputs.
        batch_size, device, workers: inference settings (``device``: auto, cpu, cuda;
            ``workers`` None: :func:`lmpcli.inference.default_workers`).
        backend: network runtime, ``auto`` (ONNX Runtime on the CPU, torch on CUDA), ``torch`` or
            ``onnxruntime`` (:mod:`lmpcli.backends`).
        overwrite: replace an existing ``out``.

    Returns:
        ``{"out", "images", "errors" [(path, reason)], "network", "map_size" (h, w),
        "filters" (C), "mode", "columns" [filter ids], "filter_max" [floats],
        "rank" [1-based row ranks], "tiles" [[{"path", "activation"}] per row],
        "size" (H, W), "seconds"}``.

    Raises:
        OutputError: ``out`` exists without ``overwrite``, not writable, not an image suffix.
        InputError: no images / unreadable inputs / bad CUB folder.
        CheckpointError: missing or foreign checkpoint.
        ValueError: bad network, filter ids, sizes, colormap or normalize mode.
    """
    import cv2

    from .backends import apply_backend
    from .checkpoint import load_model
    from .device import prepare_model, resolve_device
    from .inference import make_loader
    from .outputs import atomic_write_image

    start = time.perf_counter()
    progress = progress or NullProgress()
    path = check_image_output(out, overwrite)
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose main or replica")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {', '.join(NORMALIZE_MODES)}")
    if n_filters < 1 or n_rows < 1:
        raise ValueError("n_filters and n_rows must be >= 1")
    if tile < 32:
        raise ValueError(f"tile must be >= 32 pixels, got {tile}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    _colormap_lut(colormap)  # fail early on a bad name
    paths = resolve_image_paths(inputs, split, limit, classes)
    dev = resolve_device(device)
    model, _ = load_model(weights, "cpu")
    model = prepare_model(model, dev)
    if network == "replica" and model.replica is None:
        raise ValueError("this checkpoint has no replica network (trained with --no-replica)")
    apply_backend(model, backend, dev)
    cfg = model.config
    loader = make_loader(ImagePathDataset(paths, eval_transform(cfg.image_size, cfg.mean, cfg.std), cfg.image_size),
                         batch_size, workers, collate_skip_errors, dev)
    stats = collect_filter_peaks(model, loader, network, dev, progress)
    selection = choose_grid(stats.peaks, n_filters=n_filters, n_rows=n_rows, filters=filters)
    grid = render_filter_grid(model, stats, selection, tile=tile, alpha=alpha, colormap=colormap,
                              normalize=normalize, batch_size=batch_size, device=dev)
    atomic_write_image(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    tiles = [[{"path": stats.paths[int(selection.rows[i, j])], "activation": round(float(selection.values[i, j]), 4)}
              for j in range(selection.rows.shape[1])] for i in range(selection.rows.shape[0])]
    return {
        "out": str(path), "images": len(stats.paths), "errors": stats.errors, "network": network,
        "map_size": stats.map_size, "filters": int(stats.peaks.shape[1]), "mode": selection.mode,
        "columns": selection.filters.tolist(), "filter_max": [round(v, 4) for v in selection.strength.tolist()],
        "rank": (selection.rank + 1).tolist(), "tiles": tiles, "size": grid.shape[:2],
        "seconds": time.perf_counter() - start,
    }


__all__ = [
    "NETWORKS", "NORMALIZE_MODES", "FilterStats", "GridSelection", "network_features", "collect_filter_peaks",
    "rank_filters", "even_positions", "sample_evenly", "choose_grid", "tile_origin", "overlay_maps", "tile_maps",
    "render_filter_grid", "resolve_image_paths", "check_image_output", "visualize_filters",
]
