"""Keypoint metrics (Guo & Farrell, Sec. 4.2) and their summaries.

All coordinates are (x, y) in pixels of the original image; ``sizes`` are (W, H).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _distances(pred: Tensor, gt: Tensor, visible: Tensor) -> Tensor:
    """(N, k, P) distances from predictions to visible ground truth (inf for invisible / NaN)."""
    d = torch.cdist(pred.float().nan_to_num(float("inf")), gt.float())
    d = d.nan_to_num(float("inf"))
    return d.masked_fill(~visible[:, None, :], float("inf"))


def greedy_pck(pred: Tensor, gt: Tensor, visible: Tensor, sizes: Tensor, alpha: float = 0.1) -> Tensor:
    """Greedy PCK correctness of every prediction (Sec. 4.2).

    A prediction is correct when it lies within ``alpha * min(W, H)`` pixels of *any* visible
    ground-truth part (no one-to-one matching: several predictions may hit the same part).

    Args:
        pred: (N, k, 2) predicted keypoints; NaN rows (keypoint not found) count as wrong.
        gt: (N, P, 2) ground-truth parts.
        visible: (N, P) bool.
        sizes: (N, 2) image (W, H) in pixels.
        alpha: radius as a fraction of the shorter image side.

    Returns:
        (N, k) bool.
    """
    radius = alpha * sizes.float().min(dim=-1).values  # (N,)
    return (_distances(pred, gt, visible).amin(dim=-1) <= radius[:, None])


def part_recall(pred: Tensor, gt: Tensor, visible: Tensor, sizes: Tensor, alpha: float = 0.1) -> Tensor:
    """Which visible ground-truth parts have a prediction within ``alpha * min(W, H)``.

    Returns:
        (N, P) bool, False for invisible parts (divide by ``visible.sum()`` for the recall).
    """
    radius = alpha * sizes.float().min(dim=-1).values
    return (_distances(pred, gt, visible).amin(dim=1) <= radius[:, None]) & visible


def nearest_part(pred: Tensor, gt: Tensor, visible: Tensor, sizes: Tensor, alpha: float = 0.1) -> Tensor:
    """Which visible part each prediction hits: the nearest one within ``alpha * min(W, H)``.

    The evaluation of Sec. 4.2 counts a prediction as correct when any visible part lies within
    the radius (:func:`greedy_pck`); this names that part, so that correct predictions can be
    grouped by where they land (head, body, ... per keypoint rank; the issue's "first keypoint
    on the head" check). ``nearest_part(...) >= 0`` equals :func:`greedy_pck`.

    Args:
        pred: (N, k, 2) predicted keypoints, (x, y) pixels of the original image; NaN = not found.
        gt: (N, P, 2) ground-truth parts, same convention.
        visible: (N, P) bool.
        sizes: (N, 2) image (W, H) in pixels.
        alpha: radius as a fraction of the shorter image side.

    Returns:
        (N, k) int64: index in ``0 .. P-1`` of the nearest visible part within the radius (ties:
        the lower index), or -1 when there is none.
    """
    radius = alpha * sizes.float().min(dim=-1).values
    dist, index = _distances(pred, gt, visible).min(dim=-1)
    return torch.where(dist <= radius[:, None], index, torch.full_like(index, -1))


def feature_map_entropy(features: Tensor, eps: float = 1e-12) -> Tensor:
    """Entropy (nats) of each feature map normalised to a distribution over its cells (Fig. 6).

    Args:
        features: (B, C, H, W) non-negative maps (negative values are clipped to 0).

    Returns:
        (B, C) entropy; a uniform map gives ``log(H*W)``, a one-hot map 0, an all-zero map
        ``log(H*W)`` (treated as uniform).
    """
    p = features.float().clamp_min(0).flatten(-2)
    total = p.sum(-1, keepdim=True)
    p = torch.where(total > 0, p / total.clamp_min(eps), torch.full_like(p, 1.0 / p.shape[-1]))
    return -(p * (p + eps).log()).sum(-1)
