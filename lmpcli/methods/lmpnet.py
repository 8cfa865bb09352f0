"""LMPNet keypoints: filter selection + attention mask-out fusion + learnable clustering."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from ..head import KeypointHead
from ..model import LMPNetPair
from ..settings import KeypointSettings
from .base import KeypointOutput, flipped_forward, main_forward, replica_forward


class LMPNetMethod:
    """LMPNet keypoints (Secs. 3.2-3.4) from an :class:`~lmpcli.model.LMPNetPair`.

    Several instances with different settings share both networks' forward passes through
    ``cache`` (keys ``"main"``, ``"replica"`` and, for ``flip``, ``"flip"``: the replica's input
    mask depends only on the checkpoint's settings, never on a run's), so a sweep over ``thr`` /
    ``num_filters`` / replica fusion / flip costs one forward per batch (two with flip).

    Args:
        model: trained pair, eval mode, at the grid the settings ask for (the pair's input size
            and output stride are set when loading: :func:`lmpcli.inference.load_for_inference`).
        settings: keypoint settings (:class:`~lmpcli.settings.KeypointSettings`; None fields and
            None: the checkpoint's), resolved once here by :meth:`LMPNetPair.resolve`. ``replica``
            fuses the replica's proposals (Sec. 3.3); ``flip`` also fuses the proposals of the
            horizontally mirrored images, maps flipped back (an extension; twice the forward
            passes); ``members``: fuse only the first ``members`` pairs of ``model`` + ``ensemble``.
        name: row name in reports (default ``"lmpnet"``; test-time variants need their own).
        ensemble: more trained pairs (an extension; e.g. other training seeds): each runs both
            networks on the same (B, 3, S, S) input, its maps get their own filter selection, and
            all proposals are fused before one clustering; logits (B, K) are averaged. Their
            forwards are cached per pair (cache key ``("ensemble", id(pair))``), so variants
            share them. See :func:`check_ensemble`; docs/quality-log.md section 27.

    Attributes:
        settings: the resolved record (every field set; ``members`` = pairs fused).
        head: the :class:`~lmpcli.head.KeypointHead` built from it.

    Raises:
        ValueError: a bad setting, ``members`` above the pairs given, or an ensemble pair that
            does not fit ``model`` (:func:`check_ensemble`).
    """

    uses_main = True

    def __init__(self, model: LMPNetPair, settings: KeypointSettings | None = None, *, name: str = "lmpnet",
                 ensemble: Sequence[LMPNetPair] = ()) -> None:
        resolved = model.resolve(settings)
        members = 1 + len(ensemble) if resolved.members is None else resolved.members
        if members > 1 + len(ensemble):
            raise ValueError(f"members must be 1 to {1 + len(ensemble)} (the checkpoints given), got {members}")
        self.model = model
        self.name = name
        self.settings = replace(resolved, members=members)
        self.k = resolved.k
        self.ensemble = tuple(ensemble)[: members - 1]
        for other in self.ensemble:
            check_ensemble(model, other)
        self.head = KeypointHead(resolved, model.cell_centre())

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        """Keypoints for (B, 3, S, S) normalised images; see :class:`~lmpcli.methods.base.KeypointOutput`."""
        use_replica, flip = self.settings.replica, self.settings.flip
        maps: list[Tensor] = []
        all_logits = []
        for pair in (self.model, *self.ensemble):  # each pair's forwards cached on their own
            sub = cache if pair is self.model or cache is None else cache.setdefault(("ensemble", id(pair)), {})
            logits, features = main_forward(pair, images, sub)
            rep = replica_forward(pair, images, (logits, features), sub) if use_replica else None
            maps += [f for f in (features, rep) if f is not None]
            if flip:
                maps += flipped_forward(pair, images, use_replica, sub)
            all_logits.append(logits.float())
        xy, score = self.head(maps, images.shape[-2:])
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
