"""Class activation map (CAM) keypoints: a baseline for the keypoint methods.

CAM (Zhou et al., "Learning deep features for discriminative localization", CVPR 2016) of
the predicted class ``c``: ``M_c(x, y) = Σ_ch W[c, ch] · F[ch, y, x]`` with ``F`` the main
network's final feature map (B, C, h, w) and ``W`` its linear classifier after global
pooling. The ``k`` best local maxima (max-pool NMS, :func:`lmpcli.peaks.nms_peaks`, shared with the
occlusion-GBP method) are the keypoints, at feature-cell centres in input pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..layers import pooling_vector
from ..head import cells_to_pixels
from ..peaks import check_peak_settings, nms_peaks
from ..settings import METHOD_DEFAULTS
from .base import KeypointOutput, main_forward


def class_activation_map(features: Tensor, weight: Tensor, target: Tensor, pooling: str | None = None,
                         eps: float = 0.1) -> Tensor:
    """CAM of one class per image.

    With ``pooling`` given, each cell is weighted by the model's own pooling vector
    (Guo & Farrell, Sec. 3.1: 1 at each map's argmax, -eps elsewhere for ``lmp``), so the
    map sums to the class logit (less the bias) for any pooling of the family; for ``avg``
    this is Zhou et al.'s CAM divided by h*w. Plain CAM (``pooling=None``) assumes average
    pooling and is dominated by dense, low maps under max / leaky max pooling.

    Args:
        features: (B, C, h, w) feature maps (any float dtype).
        weight: (K, C) classifier weight.
        target: (B,) int64 class per image.

    Returns:
        (B, h, w) float32 map ``Σ_c weight[target, c] · features[:, c]`` (bias omitted: it
        does not move the peaks).

    Raises:
        ValueError: channel counts differ.
    """
    if features.shape[1] != weight.shape[1]:
        raise ValueError(f"features have {features.shape[1]} channels, classifier expects {weight.shape[1]}")
    w = weight.float()[target.to(weight.device)]  # (B, C)
    f = features.float()
    if pooling is not None:
        f = f * pooling_vector(f, pooling, eps).view_as(f)
    return torch.einsum("bc,bchw->bhw", w.to(features.device), f)


class CAMMethod:
    """Class-activation-map keypoints of the predicted class (baseline).

    Args:
        model: :class:`~lmpcli.model.LMPNetPair` (uses ``model.main`` and
            ``model.main.classifier.weight``).
        k: keypoints per image.
        nms_radius: NMS radius in feature-map cells (window ``2 r + 1``; default 1 = 3x3).

    Output: (x, y) at cell centres in input pixels (:func:`lmpcli.head.cells_to_pixels`),
    NaN where the map has fewer than ``k`` local maxima; score = CAM value divided by the
    image's CAM maximum, clamped to [0, 1].

    Raises:
        ValueError: ``k`` < 1 or ``nms_radius`` < 0.
    """

    name = "cam"
    uses_main = True

    def __init__(self, model, k: int | None = 5, nms_radius: int = METHOD_DEFAULTS["cam"]["nms_radius"]) -> None:
        if k is None:  # the checkpoint's k, as for lmpnet
            k = getattr(getattr(model, "config", None), "k", 5)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        check_peak_settings(nms_radius=nms_radius)
        self.model, self.k, self.nms_radius = model, int(k), int(nms_radius)

    def heatmap(self, images: Tensor, cache: dict | None = None) -> tuple[Tensor, Tensor]:
        """``(cam (B, h, w) float32, logits (B, K))`` for (B, 3, S, S) images, predicted class."""
        logits, features = main_forward(self.model, images, cache)
        target = logits.float().argmax(-1)
        pool = getattr(self.model.main, "pool", None)  # None: plain CAM (average pooling assumed)
        mode, eps = (pool.mode, pool.eps) if pool is not None else (None, 0.0)
        return class_activation_map(features, self.model.main.classifier.weight, target, mode, eps), logits

    @torch.no_grad()
    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        """Keypoints for (B, 3, S, S) normalised images; see :class:`~lmpcli.methods.base.KeypointOutput`."""
        cam, logits = self.heatmap(images, cache)
        values, cells, valid = nms_peaks(cam, self.nms_radius, max_peaks=self.k)
        centre = self.model.cell_centre() if hasattr(self.model, "cell_centre") else 0.5
        xy = cells_to_pixels(cells, cam.shape[-2:], images.shape[-2:], centre)
        xy = torch.where(valid[..., None], xy, math.nan)
        top = cam.flatten(1).amax(1, keepdim=True).clamp_min(1e-12)
        score = torch.where(valid, values / top, 0.0).clamp(0, 1)
        return KeypointOutput(xy, score, logits.float())
