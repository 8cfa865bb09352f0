"""LMPNet keypoints: filter selection + attention mask-out fusion + learnable clustering."""

from __future__ import annotations

from torch import Tensor

from ..model import KeypointOutput, LMPNetPair
from .base import flipped_forward, main_forward, replica_forward


class LMPNetMethod:
    """LMPNet keypoints (Secs. 3.2-3.4) from an :class:`~lmpcli.model.LMPNetPair`.

    Several instances with different test-time settings share both networks' forward
    passes through ``cache`` (keys ``"main"``, ``"replica"`` and, for ``flip``, ``"flip"``:
    the replica's input mask depends only on the checkpoint's config, never on the
    overrides), so a sweep over ``thr`` / ``num_filters`` / replica fusion / flip costs one
    forward per batch (two with flip).

    Args:
        model: trained pair, eval mode.
        k: keypoints per image (None = checkpoint's).
        use_replica: fuse the replica's proposals (Sec. 3.3) when the checkpoint has one.
        flip: test-time flip (an extension): also fuse the proposals of the horizontally
            mirrored images, maps flipped back (:meth:`LMPNetPair.flipped_features`); twice
            the forward passes.
        name: row name in reports (default ``"lmpnet"``; test-time variants need their own).
        overrides: ``thr`` (cells), ``num_filters``, ``iterations``, ``subcell``, ``refine``, ``gate``
            (see :meth:`LMPNetPair.predict`); None values keep the checkpoint's.

    Raises:
        ValueError: an unknown override.
    """

    name = "lmpnet"
    uses_main = True

    OPTIONS = ("thr", "num_filters", "iterations", "subcell", "refine", "gate")

    def __init__(self, model: LMPNetPair, k: int | None = None, use_replica: bool = True, name: str = "lmpnet",
                 flip: bool = False, **overrides) -> None:
        unknown = set(overrides) - set(self.OPTIONS)
        if unknown:
            raise ValueError(f"unknown LMPNet option(s): {', '.join(sorted(unknown))}")
        self.model = model
        self.name = name
        self.k = model.config.k if k is None else k
        self.use_replica = use_replica
        self.flip = flip
        self.overrides = {key: v for key, v in overrides.items() if v is not None}

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        logits, features = main_forward(self.model, images, cache)
        rep = replica_forward(self.model, images, (logits, features), cache) if self.use_replica else None
        extra = flipped_forward(self.model, images, self.use_replica, cache) if self.flip else ()
        xy, score = self.model.keypoints_from_features(features, rep, images.shape[-2:], k=self.k,
                                                       extra_features=extra, **self.overrides)
        return KeypointOutput(xy, score, logits.float())
