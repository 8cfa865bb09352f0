"""Helpers shared by the attribution objects (:mod:`.occlusion`, :mod:`.guided_backprop`)."""

from __future__ import annotations

from torch import Tensor


def logits_of(out) -> Tensor:
    """Logits from a forward's output: the tensor itself, or the first item of a tuple / list
    (``LMPNet.forward`` returns ``(logits (B, K), features (B, C, h, w))``)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def normalise_max(maps: Tensor) -> Tensor:
    """(B, H, W) maps, each divided by its maximum (same dtype; all-zero maps stay zero).

    Meant for non-negative maps (occlusion drops, absolute gradients), which land in [0, 1].
    """
    peak = maps.flatten(1).amax(1).clamp_min(1e-30)
    return maps / peak[:, None, None]
