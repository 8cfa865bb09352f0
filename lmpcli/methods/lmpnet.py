"""LMPNet keypoints: filter selection + attention mask-out fusion + learnable clustering."""

from __future__ import annotations

from torch import Tensor

from ..model import KeypointOutput, LMPNetPair
from .base import main_forward


class LMPNetMethod:
    """LMPNet keypoints (Secs. 3.2-3.4) from an :class:`~lmpcli.model.LMPNetPair`.

    Args:
        model: trained pair, eval mode.
        k: keypoints per image (None = checkpoint's).
        use_replica: fuse the replica's proposals (Sec. 3.3) when the checkpoint has one.
        overrides: ``thr`` (cells), ``num_filters``, ``iterations``, ``subcell``, ``refine``
            (see :meth:`LMPNetPair.predict`); None values keep the checkpoint's.
    """

    name = "lmpnet"
    uses_main = True

    OPTIONS = ("thr", "num_filters", "iterations", "subcell", "refine")

    def __init__(self, model: LMPNetPair, k: int | None = None, use_replica: bool = True, **overrides) -> None:
        unknown = set(overrides) - set(self.OPTIONS)
        if unknown:
            raise ValueError(f"unknown LMPNet option(s): {', '.join(sorted(unknown))}")
        self.model = model
        self.k = model.config.k if k is None else k
        self.use_replica = use_replica
        self.overrides = {key: v for key, v in overrides.items() if v is not None}

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        return self.model.predict(images, k=self.k, use_replica=self.use_replica,
                                  main_out=main_forward(self.model, images, cache), **self.overrides)
