"""LMPNet keypoints: filter selection + attention mask-out fusion + learnable clustering."""

from __future__ import annotations

from torch import Tensor

from ..model import KeypointOutput, LMPNetPair
from .base import main_forward


class LMPNetMethod:
    """LMPNet keypoints (Secs. 3.2-3.4) from an :class:`~lmpcli.model.LMPNetPair`.

    Args:
        model: trained pair, eval mode.
        k, thr (cells), num_filters, iterations: clustering settings; None = checkpoint's.
        use_replica: fuse the replica's proposals (Sec. 3.3) when the checkpoint has one.
    """

    name = "lmpnet"
    uses_main = True

    def __init__(self, model: LMPNetPair, k: int | None = None, thr: float | None = None,
                 num_filters: int | None = None, iterations: int | None = None, use_replica: bool = True) -> None:
        self.model = model
        self.k = model.config.k if k is None else k
        self.thr, self.num_filters, self.iterations, self.use_replica = thr, num_filters, iterations, use_replica

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        return self.model.predict(images, k=self.k, thr=self.thr, num_filters=self.num_filters,
                                  iterations=self.iterations, use_replica=self.use_replica,
                                  main_out=main_forward(self.model, images, cache))
