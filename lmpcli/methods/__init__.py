"""Keypoint methods behind one interface (:class:`~lmpcli.methods.base.KeypointMethod`)."""

from __future__ import annotations

from ..model import LMPNetPair
from .base import KeypointMethod
from .baselines import CentreBaseline, ChannelMeanBaseline
from .cam import CAMMethod
from .lmpnet import LMPNetMethod
from .occlusion_gbp import OcclusionGBPMethod
from .parts import PartsMethod

from ..choices import METHODS


def create_method(name: str, model: LMPNetPair, k: int = 5, thr: float | None = None, **options) -> KeypointMethod:
    """Build a keypoint method by name (see :data:`METHODS`).

    ``options`` are passed to the method's constructor (``lmpnet``: see
    :class:`LMPNetMethod`; ``occlusion-gbp``: see :class:`OcclusionGBPMethod`, e.g.
    ``occluder_size``, ``chunk_size``, ``input_size``, ``nms_radius``; ``cam``: ``nms_radius``
    in cells; ``parts``: ``part_model``, default the checkpoint's, and ``k`` is the part model's K).
    ``thr`` (clustering radius in cells) only applies to ``lmpnet``.

    Raises:
        ValueError: unknown method name or invalid option values.
        TypeError: an option the method does not accept.
    """
    if name == "lmpnet":
        return LMPNetMethod(model, k=k, thr=thr, **options)
    if name == "occlusion-gbp":
        return OcclusionGBPMethod(model, k=k, **options)
    if name == "cam":
        return CAMMethod(model, k=k, **options)
    if name == "parts":
        return PartsMethod(model, **options)
    if name == "centre":
        return CentreBaseline(k)
    if name == "channel-mean":
        return ChannelMeanBaseline(model, k)
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")


__all__ = ["KeypointMethod", "LMPNetMethod", "OcclusionGBPMethod", "CAMMethod", "CentreBaseline",
           "ChannelMeanBaseline", "PartsMethod", "METHODS", "create_method"]
