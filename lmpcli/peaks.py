"""Peak detection on heat maps: max-pool NMS, Förstner sub-pixel refinement, keypoints.

One module shared by the heat-map methods (:mod:`lmpcli.methods.occlusion_gbp` on the
network input's pixel grid, :mod:`lmpcli.methods.cam` on the feature-map grid). Source: Shan,
"Weakly supervised keypoint detection" (poster; /work/shared/papers/002_*), sections
*Post-processing* (non-maximum suppression, Förstner refinement) and *Keypoint prediction*
(top 40 % of the peaks kept).

Coordinates: peaks are (x = column, y = row) indices of the map they were found on;
:func:`detect_keypoints` adds 0.5, the centre of a map pixel, so its output is in pixels of a
map that has the same grid as the input (the occlusion-GBP maps).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

FORSTNER_MODELS = ("corner", "centre")


def check_peak_settings(nms_radius: int = 0, keep_fraction: float = 1.0, window: int = 3,
                        forstner_model: str = "corner") -> None:
    """Refuse peak-detection settings that :func:`nms_peaks` / :func:`forstner_refine` cannot use.

    Called by both functions and by the methods' constructors, so that a bad option fails
    before any network runs. The defaults are valid values, so a caller checks only what it sets.

    Args:
        nms_radius: suppression radius, map pixels; must be >= 0.
        keep_fraction: fraction of peaks kept; must be in (0, 1].
        window: Förstner window side, pixels; must be odd and >= 3.
        forstner_model: one of :data:`FORSTNER_MODELS`.

    Raises:
        ValueError: the first setting out of range, named in the message.
    """
    if nms_radius < 0:
        raise ValueError(f"NMS radius must be >= 0, got {nms_radius}")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"Förstner window must be odd and >= 3, got {window}")
    if forstner_model not in FORSTNER_MODELS:
        raise ValueError(f"unknown Förstner model {forstner_model!r}; choose one of {', '.join(FORSTNER_MODELS)}")


def _window_argmax(x: Tensor, radius: int) -> Tensor:
    """(B, 1, H, W) -> (B, 1, H, W) int64 flat index (row-major) of the first maximum of the
    ``(2 radius + 1)``-square window centred on each pixel, as ``F.max_pool2d(...,
    return_indices=True)`` gives it, computed separably (a row pass, then a column pass over the
    row maxima: 2 (2r + 1) instead of (2r + 1)^2 comparisons per pixel, 4x faster at r = 16).
    The first maximum in row-major order is the topmost row holding the maximum, leftmost in it,
    which is what the column pass (topmost) after the row pass (leftmost) picks."""
    k = 2 * radius + 1
    row_max, row_idx = F.max_pool2d(x, (1, k), stride=1, padding=(0, radius), return_indices=True)
    _, col_idx = F.max_pool2d(row_max, (k, 1), stride=1, padding=(radius, 0), return_indices=True)
    return row_idx.flatten(2).gather(2, col_idx.flatten(2)).view_as(col_idx)


def nms_peaks(heatmap: Tensor, radius: int, max_peaks: int | None = None,
              keep_fraction: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Local maxima by max-pool non-maximum suppression, batched [poster: Post-processing].

    A pixel is a peak when it is the maximum of the ``(2 radius + 1)``-square window
    centred on it; ties are broken by the first pixel in row-major order, so no two peaks
    lie within ``radius`` (Chebyshev distance) of each other. Peaks are sorted by value;
    of an image's ``n`` peaks the best ``ceil(keep_fraction * n)`` are valid
    [poster: Keypoint prediction, "only the top 40 % ... is kept"].

    Args:
        heatmap: (B, H, W) float map; NaN / -inf pixels are never peaks.
        radius: suppression radius, pixels (cells) of the map, >= 0.
        max_peaks: number of peaks returned per image (N); None = the most any image has.
        keep_fraction: fraction of each image's peaks kept, in (0, 1].

    Returns:
        ``(values (B, N) float32, xy (B, N, 2) float32 (x = column, y = row) map indices,
        valid (B, N) bool)``; invalid slots have value -inf and xy NaN.

    Raises:
        ValueError: ``radius`` < 0, ``keep_fraction`` outside (0, 1], heatmap not 3-D.
    """
    if heatmap.dim() != 3:
        raise ValueError(f"expected a (B, H, W) heat map, got shape {tuple(heatmap.shape)}")
    check_peak_settings(nms_radius=radius, keep_fraction=keep_fraction)
    b, h, w = heatmap.shape
    x = heatmap.float().masked_fill(torch.isnan(heatmap), -math.inf)[:, None]  # ±inf kept as they are
    radius = int(radius)
    idx = _window_argmax(x, radius)
    own = torch.arange(h * w, device=x.device).view(1, 1, h, w)
    is_peak = ((idx == own) & (x > -math.inf)).flatten(1)  # (B, H*W)
    count = is_peak.sum(1)
    n = int(count.max()) if max_peaks is None else int(max_peaks)
    vals = x.flatten(1).masked_fill(~is_peak, -math.inf)
    m = min(n, h * w)
    top, flat = vals.topk(m, dim=1) if m > 0 else (vals[:, :0], vals[:, :0].long())
    keep = torch.ceil(count.float() * keep_fraction).long()
    valid = (torch.arange(m, device=x.device)[None] < keep[:, None]) & (top > -math.inf)
    xy = torch.stack([flat % w, torch.div(flat, w, rounding_mode="floor")], -1).float()
    xy = torch.where(valid[..., None], xy, math.nan)
    top = top.masked_fill(~valid, -math.inf)
    if n > m:
        pad = n - m
        top = F.pad(top, (0, pad), value=-math.inf)
        xy = F.pad(xy, (0, 0, 0, pad), value=math.nan)
        valid = F.pad(valid, (0, pad), value=False)
    return top, xy, valid


def forstner_refine(heatmap: Tensor, peaks: Tensor, window: int = 5, model: str = "corner") -> Tensor:
    """Förstner sub-pixel refinement of peaks [poster: Post-processing].

    With ``Ix, Iy`` the central-difference gradients of ``heatmap`` and the sums over a
    ``window`` x ``window`` square centred on the rounded peak, solves ``A x̂ = b``::

        A = [[Σ Ix²,   Σ IxIy],      b = [Σ (Ix² x + IxIy y),
             [Σ IxIy,  Σ Iy² ]]           Σ (IxIy x + Iy² y)]

    i.e. the point closest (least squares) to the lines through every window pixel
    orthogonal to its gradient (``model="corner"``, the poster's formula) — exact for a
    corner whose edges pass through it (checkerboard corner: < 0.1 px), and for peaks
    point-symmetric about the window centre; on a smooth blob whose centre is off the
    window centre it is biased (about 1 px for a Gaussian of sigma 3 px with a 5 px
    window). ``model="centre"`` uses the lines *along* the gradients (Förstner's
    circular-point model: ``Ix`` and ``Iy`` swapped, ``IxIy`` negated), which pass
    through the centre of a radially symmetric peak. Where ``A`` is (near) singular, the
    solution is not finite, or it leaves the window, the peak is returned unchanged.
    Window pixels outside the map are ignored.

    Args:
        heatmap: (B, H, W) float map.
        peaks: (B, N, 2) float (x = column, y = row) map indices; NaN rows are passed through.
        window: odd window side in pixels, >= 3.
        model: ``"corner"`` (poster) or ``"centre"``.

    Returns:
        (B, N, 2) float32 refined (x, y), same convention as ``peaks``.

    Raises:
        ValueError: even or too small ``window``, unknown ``model``, shape mismatch.
    """
    check_peak_settings(window=window, forstner_model=model)
    if heatmap.dim() != 3 or peaks.dim() != 3 or peaks.shape[0] != heatmap.shape[0] or peaks.shape[-1] != 2:
        raise ValueError(f"expected heatmap (B, H, W) and peaks (B, N, 2), got {tuple(heatmap.shape)}, {tuple(peaks.shape)}")
    b, h, w = heatmap.shape
    n = peaks.shape[1]
    img = heatmap.float()
    iy, ix = torch.gradient(img, dim=(1, 2)) if min(h, w) > 1 else (torch.zeros_like(img),) * 2
    peaks = peaks.float()
    finite = torch.isfinite(peaks).all(-1)  # (B, N)
    centre = torch.where(finite[..., None], peaks, 0.0).round()
    r = window // 2
    off = torch.arange(-r, r + 1, device=img.device, dtype=torch.float32)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    px = centre[..., 0, None] + ox.flatten()  # (B, N, w*w)
    py = centre[..., 1, None] + oy.flatten()
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    flat = (py.clamp(0, h - 1) * w + px.clamp(0, w - 1)).long().view(b, -1)
    gx = ix.flatten(1).gather(1, flat).view(b, n, -1) * inside
    gy = iy.flatten(1).gather(1, flat).view(b, n, -1) * inside
    if model == "centre":  # normals orthogonal to the gradient
        gx, gy = -gy, gx
    gxx, gxy, gyy = (gx * gx).sum(-1), (gx * gy).sum(-1), (gy * gy).sum(-1)
    bx = (gx * gx * px + gx * gy * py).sum(-1)
    by = (gx * gy * px + gy * gy * py).sum(-1)
    det = gxx * gyy - gxy * gxy
    trace = gxx + gyy
    ok = det > 1e-6 * trace.square().clamp_min(1e-30)
    safe = torch.where(ok, det, torch.ones_like(det))
    x_hat = (gyy * bx - gxy * by) / safe
    y_hat = (gxx * by - gxy * bx) / safe
    refined = torch.stack([x_hat, y_hat], -1)
    ok &= torch.isfinite(refined).all(-1) & ((refined - centre).abs() <= r + 0.5).all(-1) & finite
    return torch.where(ok[..., None], refined, peaks)


def detect_keypoints(confidence: Tensor, k: int, nms_radius: int = 16, keep_fraction: float = 0.4,
                     window: int = 5, forstner_model: str = "corner") -> tuple[Tensor, Tensor]:
    """Keypoints from a (B, H, W) confidence map [poster: Post-processing; Keypoint prediction].

    NMS (:func:`nms_peaks`, ``nms_radius`` map pixels), the top ``keep_fraction`` of each
    image's peaks kept, the ``k`` best refined with :func:`forstner_refine` (``window``,
    ``forstner_model``).

    Args:
        confidence: (B, H, W) float map; for occlusion-GBP the fused confidence in [0, 1] on
            the network input's pixel grid.
        k: keypoints per image, >= 1.
        nms_radius, keep_fraction, window, forstner_model: see :func:`check_peak_settings`.

    Returns:
        ``(xy (B, k, 2) float32 (x, y) in pixels of the map with pixel centres at +0.5 (input
        pixels when the map is on the input grid), NaN where fewer than k peaks survive;
        score (B, k) float32 map value at the peak clamped to [0, 1], 0 where not found)``.

    Raises:
        ValueError: settings refused by :func:`check_peak_settings`, a map that is not 3-D.
    """
    values, peaks, valid = nms_peaks(confidence, nms_radius, max_peaks=k, keep_fraction=keep_fraction)
    xy = forstner_refine(confidence, peaks, window, forstner_model) + 0.5
    xy = torch.where(valid[..., None], xy, math.nan)
    score = torch.where(valid, values, 0.0).clamp(0, 1)
    return xy, score
