"""The keypoint-method interface: a method is a small object called on a batch of network inputs."""

from __future__ import annotations

import time
from typing import NamedTuple, Protocol

from torch import Tensor


class KeypointOutput(NamedTuple):
    """Output of a keypoint method on a batch of network inputs.

    Attributes:
        xy: (B, k, 2) float32 keypoints, (x, y) in pixels of the network input
            (:func:`lmpcli.head.cells_to_pixels`: ``(cell + 0.5) * stride`` at output stride 32);
            NaN where not found.
        score: (B, k) confidence in [0, 1]; 0 where not found.
        logits: (B, K) class logits of the main network, or None for class-agnostic methods.
        heatmaps: the maps the keypoints were found on, for figures, or None (the default)
            for methods that make none: occlusion-gbp returns ``(coarse, fine)``, each
            (B, S, S) float32 in [0, 1] on the network input's pixel grid
            (:func:`lmpcli.heatmaps.draw_heatmap_panel`).
    """

    xy: Tensor
    score: Tensor
    logits: Tensor | None
    heatmaps: tuple[Tensor, ...] | None = None


class KeypointMethod(Protocol):
    """Predicts ``k`` keypoints for (B, 3, S, S) normalised images.

    Implementations return :class:`KeypointOutput` with (x, y) in pixels of the
    network input; callers rescale to original-image pixels. ``cache`` lets methods on the
    same batch share work (key ``"main"``: the main network's (logits, features)).
    """

    name: str
    k: int
    uses_main: bool  # True if it runs the main network (and may share its forward via ``cache``)

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput: ...


def _forward(model, images: Tensor, cache: dict | None, with_mid: bool) -> tuple[Tensor, ...]:
    """One forward of the main network; fills ``cache["main"]`` (if empty), its seconds and, with
    ``with_mid``, ``cache["mid"]``."""
    start = time.perf_counter()
    out = model.main(images, with_mid=True) if with_mid else model.main(images)
    if cache is not None:
        if "main" not in cache:
            cache["main"] = tuple(out[:2])
            cache["main_seconds"] = time.perf_counter() - start
        if with_mid:
            cache["mid"] = out[2]
    return out


def main_forward(model, images: Tensor, cache: dict | None) -> tuple[Tensor, Tensor]:
    """The main network's (logits (B, K), features (B, C, h, w)), computed once per batch.

    When the checkpoint's part model reads the mid-level map (``model.part_model.mid_channels``),
    the same forward also returns it and caches it under ``"mid"`` (:func:`mid_forward`), so that
    the ``parts`` method after another method on the batch needs no second forward.
    """
    if cache is not None and "main" in cache:
        return cache["main"]
    with_mid = bool(getattr(getattr(model, "part_model", None), "mid_channels", 0))
    return tuple(_forward(model, images, cache, with_mid)[:2])


def mid_forward(model, images: Tensor, cache: dict | None) -> Tensor:
    """The main network's mid-level map (B, C', H/16, W/16) at its own resolution (:func:`lmpcli.parts.stack_maps`),
    computed once per batch; also fills ``cache["main"]`` when it is empty. When the main forward
    was already cached without it (a part model other than the checkpoint's, :func:`main_forward`),
    the network runs once more."""
    if cache is not None and "mid" in cache:
        return cache["mid"]
    return _forward(model, images, cache, True)[2]


def replica_forward(model, images: Tensor, main_out: tuple[Tensor, Tensor], cache: dict | None) -> Tensor | None:
    """The replica's (B, C, h, w) maps on the masked images (Sec. 3.3), computed once per batch.

    The mask comes from the main network's first keypoint under the checkpoint's keypoint
    settings (:meth:`lmpcli.model.LMPNetPair.replica_input`), so every method and test-time
    variant on the batch can share it. None when the pair has no
    replica.
    """
    if model.replica is None:
        return None
    if cache is not None and "replica" in cache:
        return cache["replica"]
    rep = model.features(images, True, main_out)[2]
    if cache is not None:
        cache["replica"] = rep
    return rep


def flipped_forward(model, images: Tensor, use_replica: bool, cache: dict | None) -> list[Tensor]:
    """Both networks' maps of the mirrored images, flipped back (test-time flip), once per batch.

    See :meth:`lmpcli.model.LMPNetPair.flipped_features`; cached under ``"flip"`` (with the
    replica) or ``"flip-main"`` (without it).
    """
    key = "flip" if use_replica and model.replica is not None else "flip-main"
    if cache is not None and key in cache:
        return cache[key]
    maps = model.flipped_features(images, use_replica)
    if cache is not None:
        cache[key] = maps
    return maps
