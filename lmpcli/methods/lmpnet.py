"""LMPNet keypoints: filter selection + attention mask-out fusion + learnable clustering."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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
        ensemble: more trained pairs (an extension; e.g. other training seeds): each runs both
            networks on the same (B, 3, S, S) input, its maps get their own filter selection, and
            all proposals are fused before one clustering; logits (B, K) are averaged. Their
            forwards are cached per pair (cache key ``("ensemble", id(pair))``), so variants
            share them. See :func:`check_ensemble`; docs/quality-log.md section 27.
        overrides: ``thr`` (cells), ``num_filters``, ``iterations``, ``subcell``, ``refine``, ``gate``
            (see :meth:`LMPNetPair.predict`); None values keep the checkpoint's.

    Raises:
        ValueError: an unknown override, or an ensemble pair that does not fit ``model``
            (:func:`check_ensemble`).
    """

    name = "lmpnet"
    uses_main = True

    OPTIONS = ("thr", "num_filters", "iterations", "subcell", "refine", "gate")

    def __init__(self, model: LMPNetPair, k: int | None = None, use_replica: bool = True, name: str = "lmpnet",
                 flip: bool = False, ensemble: Sequence[LMPNetPair] = (), **overrides) -> None:
        unknown = set(overrides) - set(self.OPTIONS)
        if unknown:
            raise ValueError(f"unknown LMPNet option(s): {', '.join(sorted(unknown))}")
        self.model = model
        self.name = name
        self.k = model.config.k if k is None else k
        self.use_replica = use_replica
        self.flip = flip
        self.ensemble = tuple(ensemble)
        for other in self.ensemble:
            check_ensemble(model, other)
        self.overrides = {key: v for key, v in overrides.items() if v is not None}

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        logits, features = main_forward(self.model, images, cache)
        rep = replica_forward(self.model, images, (logits, features), cache) if self.use_replica else None
        extra = list(flipped_forward(self.model, images, self.use_replica, cache)) if self.flip else []
        all_logits = [logits.float()]
        for other in self.ensemble:
            sub = None if cache is None else cache.setdefault(("ensemble", id(other)), {})
            other_logits, other_features = main_forward(other, images, sub)
            other_rep = replica_forward(other, images, (other_logits, other_features), sub) if self.use_replica else None
            extra += [f for f in (other_features, other_rep) if f is not None]
            if self.flip:
                extra += flipped_forward(other, images, self.use_replica, sub)
            all_logits.append(other_logits.float())
        xy, score = self.model.keypoints_from_features(features, rep, images.shape[-2:], k=self.k,
                                                       extra_features=extra, **self.overrides)
        return KeypointOutput(xy, score, torch.stack(all_logits).mean(0))


def check_ensemble(model: LMPNetPair, other: LMPNetPair) -> None:
    """Check that ``other``'s proposals can be fused with ``model``'s (an ensemble member).

    Both must read the same input (input size, normalisation), give maps on the same grid
    (feature-map size, output stride, cell centre) and score the same classes (count).

    Raises:
        ValueError: naming the first setting that differs.
    """
    a, b = model.config, other.config
    for key in ("image_size", "output_stride", "mean", "std", "num_classes"):
        if getattr(a, key) != getattr(b, key):
            raise ValueError(f"ensemble members differ in {key}: {getattr(a, key)} vs {getattr(b, key)}")
    if model.cell_centre() != other.cell_centre():
        raise ValueError(f"ensemble members differ in where a cell sits: {model.cell_centre()} vs {other.cell_centre()}")
