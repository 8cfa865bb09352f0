"""Keypoint methods behind one interface (:class:`~lmpcli.methods.base.KeypointMethod`)."""

from __future__ import annotations

from ..model import LMPNetPair
from .base import KeypointMethod
from .baselines import CentreBaseline, ChannelMeanBaseline
from .lmpnet import LMPNetMethod

METHODS = ("lmpnet", "centre", "channel-mean")


def create_method(name: str, model: LMPNetPair, k: int = 5, thr: float | None = None, **options) -> KeypointMethod:
    """Build a keypoint method by name (see :data:`METHODS`).

    Raises:
        ValueError: unknown method name.
    """
    if name == "lmpnet":
        return LMPNetMethod(model, k=k, thr=thr, **options)
    if name == "centre":
        return CentreBaseline(k)
    if name == "channel-mean":
        return ChannelMeanBaseline(model, k)
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")


__all__ = ["KeypointMethod", "LMPNetMethod", "CentreBaseline", "ChannelMeanBaseline", "METHODS", "create_method"]
