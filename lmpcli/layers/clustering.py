"""Learnable clustering (Guo & Farrell, Sec. 3.4, Algorithm 1), batched over images.

Proposals (binarised feature maps, one peak cell each) vote for keypoint predictions.
For keypoint ``i`` the votes start uniform (``W[:, i] = 1``); for ``n`` iterations the
prediction ``Y = softmax(W[:, i])^T X`` is formed, the distance ``d`` between each
proposal's peak and the prediction's peak is measured, and ``W[:, i] <- w + 1/d``.
Proposals with ``d < thr`` are then erased and the next keypoint is predicted, until
``k`` keypoints are found or no proposal is left.

Deviation, documented: a proposal on the predicted cell has ``d = 0``; we use the
similarity ``1 / (1 + d)`` instead of ``1 / d`` so that it stays finite.

A property of Algorithm 1 on cell-centred proposals (sub-cell peaks, the default since quality
log section 18, are not covered by the argument; the same test checks them on random sub-cell
offsets), tested in ``tests/test_keypoint_layers.py``: the iterations never move the
winning cell. After each update a proposal's weight is a decreasing function of its
distance ``d`` to the current peak, largest at ``d = 0``; the peak cell already held the
most proposals, so the sum of its weights stays the largest and it keeps the argmax (ties
go to the same cell). The
keypoint order and cells therefore equal greedy mode-seeking with erasure; the iterations
only re-weight the centroid when ``refine=True`` (quality log, sections 10 and 11).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .selection import Proposals


class Clusters(NamedTuple):
    """Keypoint predictions of learnable clustering.

    Attributes:
        xy: (B, k, 2) float32 keypoints in feature-map cells, (x, y) = (column, row) of
            the predicted cell; 0 where ``found`` is False.
        score: (B, k) support: the share of the image's valid proposals that lie within
            ``thr`` of the prediction and are erased by it, in [0, 1].
        found: (B, k) bool; False once every proposal of an image has been erased.
    """

    xy: Tensor
    score: Tensor
    found: Tensor


def learnable_clustering(
    proposals: Proposals,
    map_size: tuple[int, int],
    k: int = 5,
    thr: float = 3.0,
    iterations: int = 3,
    refine: bool = False,
) -> Clusters:
    """Algorithm 1 of the paper on a batch of proposals, without a per-image Python loop.

    Args:
        proposals: :class:`~lmpcli.layers.selection.Proposals` with ``xy`` (B, M, 2)
            peak cells and ``valid`` (B, M).
        map_size: (H, W) of the feature map, in cells.
        k: number of keypoints to predict (paper: 5).
        thr: erasing radius in feature-map cells (paper: 3 on 14x14 maps); proposals
            closer than ``thr`` to a prediction are erased.
        iterations: ``n``, re-weighting iterations per keypoint.
        refine: place each keypoint at the vote-weighted centroid of the proposals it
            erases (sub-cell) instead of the centre of the winning cell (the paper's argmax).

    Returns:
        :class:`Clusters`, ordered by prediction rank (first = densest vote).

    Raises:
        ValueError: if ``k < 1``, ``thr <= 0`` or ``iterations < 0``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if thr <= 0:
        raise ValueError(f"thr must be > 0 cells, got {thr}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    h, w = map_size
    xy = proposals.xy.float()
    b, m, _ = xy.shape
    alive = proposals.valid.clone()
    cxy = xy.round()
    cell = (cxy[..., 1] * w + cxy[..., 0]).long().clamp_(0, h * w - 1)  # (B, M)
    out_xy = xy.new_zeros(b, k, 2)
    out_score = xy.new_zeros(b, k)
    out_found = torch.zeros(b, k, dtype=torch.bool, device=xy.device)
    neg_inf = torch.finfo(xy.dtype).min
    total = proposals.valid.sum(dim=-1).clamp_min(1).to(xy.dtype)  # (B,)

    def vote(weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        soft = torch.where(alive, weights, neg_inf).softmax(dim=-1) * alive  # (B, M)
        votes = xy.new_zeros(b, h * w).scatter_add_(1, cell, soft)  # Y = w^T X
        peak = votes.argmax(dim=-1)
        peak_xy = torch.stack([peak % w, torch.div(peak, w, rounding_mode="floor")], -1).float()
        dist = (xy - peak_xy[:, None, :]).norm(dim=-1)  # (B, M), in cells
        return soft, peak_xy, dist

    for i in range(k):
        any_alive = alive.any(dim=-1)
        if not bool(any_alive.any()):
            break
        weights = torch.ones_like(out_score[:, :1]).expand(b, m).clone()  # W[:, i] <- 1
        for _ in range(iterations):
            soft, _, dist = vote(weights)
            weights = soft + 1.0 / (1.0 + dist)  # W[:, i] <- w + 1/d
        soft, peak_xy, dist = vote(weights)
        erased = alive & (dist < thr)
        if refine:
            wts = soft * erased
            peak_xy = torch.where(wts.sum(-1, keepdim=True) > 0,
                                  (wts[..., None] * xy).sum(1) / wts.sum(-1, keepdim=True).clamp_min(1e-12), peak_xy)
        out_xy[:, i] = torch.where(any_alive[:, None], peak_xy, 0.0)
        out_score[:, i] = erased.sum(dim=-1) / total
        out_found[:, i] = any_alive
        alive &= ~erased  # X[d < thr] <- 0
    return Clusters(out_xy, out_score, out_found)


class LearnableClustering(nn.Module):
    """Module wrapper of :func:`learnable_clustering` (Algorithm 1); see it for shapes."""

    def __init__(self, k: int = 5, thr: float = 3.0, iterations: int = 3, refine: bool = False) -> None:
        super().__init__()
        self.k, self.thr, self.iterations, self.refine = k, thr, iterations, refine

    def forward(self, proposals: Proposals, map_size: tuple[int, int]) -> Clusters:
        return learnable_clustering(proposals, map_size, self.k, self.thr, self.iterations, self.refine)

    def extra_repr(self) -> str:
        return f"k={self.k}, thr={self.thr}, iterations={self.iterations}"
