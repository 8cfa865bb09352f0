"""Filter selection (Guo & Farrell, Sec. 3.2): keep the filters with the strongest activation.

A filter's *activation strength* on an image is the maximum of its feature map; the paper
keeps, for each image, the filters with the highest activation as keypoint proposals.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Proposals(NamedTuple):
    """Keypoint proposals: one peak per selected filter.

    Attributes:
        xy: (B, M, 2) float32 peak positions in feature-map cells, (x, y) = (column, row)
            of the cell holding the filter's maximum (integer-valued).
        strength: (B, M) peak activation of each selected filter.
        channel: (B, M) int64 filter index in the feature map.
        valid: (B, M) bool, False for filters whose peak is <= 0 (never fired) or padding.
    """

    xy: Tensor
    strength: Tensor
    channel: Tensor
    valid: Tensor


def select_filters(features: Tensor, num_filters: int, subcell: bool = False) -> Proposals:
    """Select the ``num_filters`` filters with the highest peak activation per image (Sec. 3.2).

    Each selected feature map is binarised to its peak cell ("we set the maximum value of
    each feature map to 1 and everything else to 0", Sec. 3.4), so a proposal is a cell.

    Args:
        features: (B, C, H, W) final-conv feature maps.
        num_filters: M, proposals kept per image; clipped to C. ``<= 0`` keeps all C.
        subcell: refine each peak to the activation-weighted centroid of its 3x3
            neighbourhood (sub-cell precision; an extension, not in the paper).

    Returns:
        :class:`Proposals` with M entries per image, strongest first.

    Raises:
        ValueError: if ``features`` is not 4-D.
    """
    if features.ndim != 4:
        raise ValueError(f"select_filters expects (B, C, H, W), got shape {tuple(features.shape)}")
    b, c, h, w = features.shape
    m = c if num_filters <= 0 else min(num_filters, c)
    peak, flat_idx = features.flatten(-2).max(dim=-1)  # (B, C)
    strength, channel = peak.topk(m, dim=-1)  # (B, M), sorted descending
    idx = flat_idx.gather(-1, channel)
    xy = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1).float()
    if subcell:
        xy = _centroid3x3(features, channel, xy)
    return Proposals(xy=xy, strength=strength, channel=channel, valid=strength > 0)


def _centroid3x3(features: Tensor, channel: Tensor, xy: Tensor, radius: int = 1) -> Tensor:
    """Activation-weighted centroid of the 3x3 cells around each peak (cells outside the map
    ignored): features (B, C, H, W), channel (B, M), peaks xy (B, M, 2) -> (B, M, 2). ``radius``
    r > 1 takes the (2r + 1) x (2r + 1) window instead.

    Reads only the 9 cells per proposal (a gather), not the whole selected maps."""
    b, c, h, w = features.shape
    off = torch.arange(-radius, radius + 1, device=xy.device, dtype=xy.dtype)
    n = len(off)
    dx, dy = off.repeat(n), off.repeat_interleave(n)  # (n * n,)
    cx = xy[..., 0, None] + dx  # (B, M, n * n)
    cy = xy[..., 1, None] + dy
    inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    cell = cy.clamp(0, h - 1).long() * w + cx.clamp(0, w - 1).long()
    idx = (channel[..., None] * (h * w) + cell).flatten(1)  # (B, M*9)
    wts = features.flatten(1).gather(1, idx).view_as(cx).float().clamp_min(0) * inside
    total = wts.sum(-1)
    centre = torch.stack([(wts * cx).sum(-1), (wts * cy).sum(-1)], -1) / total.clamp_min(1e-12)[..., None]
    return torch.where(total[..., None] > 0, centre, xy)


def gate_proposals(proposals: Proposals, features: Tensor, fraction: float) -> Proposals:
    """Drop proposals that lie off the object (an extension, not in the paper).

    The object prior is the channel-mean of the feature maps, (B, H, W); a proposal stays
    valid only where that map reaches at least ``fraction`` of its per-image maximum, so
    filters peaking on background do not become keypoints.

    Args:
        proposals: :class:`Proposals` with ``xy`` in cells of ``features``.
        features: (B, C, H, W) feature maps the prior is computed from (the main network's).
        fraction: threshold in [0, 1] relative to the per-image maximum; ``<= 0`` keeps all.

    Returns:
        :class:`Proposals` with ``valid`` cleared for gated-out proposals (same shapes).

    Raises:
        ValueError: ``fraction`` above 1.
    """
    if fraction > 1:
        raise ValueError(f"gate fraction must be <= 1, got {fraction}")
    if fraction <= 0:
        return proposals
    prior = features.float().mean(1)  # (B, H, W)
    b, h, w = prior.shape
    peak = prior.flatten(1).amax(1, keepdim=True)  # (B, 1)
    cell = proposals.xy.round().long()
    idx = cell[..., 1].clamp(0, h - 1) * w + cell[..., 0].clamp(0, w - 1)  # (B, M)
    on_object = prior.flatten(1).gather(1, idx) >= fraction * peak
    return proposals._replace(valid=proposals.valid & on_object)


def concat_proposals(*proposals: Proposals) -> Proposals:
    """Fuse proposals of several networks (main + replica, Sec. 3.3) along the M axis."""
    return Proposals(*(torch.cat(parts, dim=1) for parts in zip(*proposals)))
