"""Trivial baselines that show what each metric gives for free."""

from __future__ import annotations

import torch
from torch import Tensor

from ..head import cells_to_pixels
from ..model import LMPNetPair
from .base import KeypointOutput, main_forward


class CentreBaseline:
    """``k`` points around the image centre: the centre, then a cross at ±``spread`` of W and H,
    then further rings. Class-agnostic; ignores the image content."""

    name = "centre"
    uses_main = False

    def __init__(self, k: int = 5, spread: float = 0.1) -> None:
        self.k, self.spread = k, spread

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        b, _, h, w = images.shape
        offsets = [(0.0, 0.0)]
        ring = 1
        while len(offsets) < self.k:
            s = self.spread * ring
            offsets += [(-s, 0.0), (s, 0.0), (0.0, -s), (0.0, s)]
            ring += 1
        off = torch.tensor(offsets[: self.k], device=images.device)
        xy = (0.5 + off) * torch.tensor([w, h], device=images.device, dtype=torch.float32)
        score = torch.linspace(1.0, 0.5, self.k, device=images.device)
        return KeypointOutput(xy.expand(b, -1, -1).clone(), score.expand(b, -1).clone(), None)


class ChannelMeanBaseline:
    """The ``k`` strongest cells of the main network's channel-mean feature map."""

    name = "channel-mean"
    uses_main = True

    def __init__(self, model: LMPNetPair, k: int = 5) -> None:
        self.model, self.k = model, k

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        logits, features = main_forward(self.model, images, cache)
        mean = features.float().mean(dim=1)  # (B, h, w)
        h, w = mean.shape[-2:]
        val, idx = mean.flatten(1).topk(min(self.k, h * w), dim=-1)
        cells = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).float()
        xy = cells_to_pixels(cells, (h, w), images.shape[-2:], self.model.cell_centre())
        score = val / val[:, :1].clamp_min(1e-12)
        return KeypointOutput(xy, score, logits.float())
