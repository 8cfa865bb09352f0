"""Keypoint methods behind one interface (:class:`~lmpcli.methods.base.KeypointMethod`)."""

from __future__ import annotations

from ..model import LMPNetPair
from ..settings import KeypointSettings
from .base import KeypointMethod, KeypointOutput
from .baselines import CentreBaseline, ChannelMeanBaseline
from .cam import CAMMethod
from .lmpnet import LMPNetMethod
from .occlusion_gbp import OcclusionGBPMethod
from .parts import PartsMethod

from ..choices import METHODS


def create_method(name: str, model: LMPNetPair, settings: KeypointSettings | None = None, **options) -> KeypointMethod:
    """Build a keypoint method by name (see :data:`METHODS`).

    ``settings``: the run's :class:`~lmpcli.settings.KeypointSettings` (None fields: the
    checkpoint's). ``lmpnet`` takes all of them (:class:`LMPNetMethod`); the other methods take
    ``k`` only (resolved by :meth:`lmpcli.model.LMPNetPair.resolve`; ``parts`` uses its part
    model's K). ``options`` are passed to the method's constructor (``lmpnet``: ``name``,
    ``ensemble``; ``occlusion-gbp``: see :class:`OcclusionGBPMethod`, e.g. ``occluder_size``,
    ``chunk_size``, ``input_size``, ``nms_radius``; ``cam``: ``nms_radius`` in cells; ``parts``:
    ``part_model``, default the checkpoint's; ``parts`` also reads ``settings.flip``).

    Raises:
        ValueError: unknown method name or invalid option values.
        TypeError: an option the method does not accept.
    """
    if name == "lmpnet":
        return LMPNetMethod(model, settings, **options)
    if name == "parts":
        return PartsMethod(model, flip=bool(model.resolve(settings).flip), **options)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    k = settings.k if settings is not None and settings.k is not None else model.resolve(settings).k
    if name == "occlusion-gbp":
        return OcclusionGBPMethod(model, k=k, **options)
    if name == "cam":
        return CAMMethod(model, k=k, **options)
    if name == "centre":
        return CentreBaseline(k)
    return ChannelMeanBaseline(model, k)


__all__ = ["KeypointMethod", "KeypointOutput", "LMPNetMethod", "OcclusionGBPMethod", "CAMMethod", "CentreBaseline",
           "ChannelMeanBaseline", "PartsMethod", "METHODS", "create_method"]
