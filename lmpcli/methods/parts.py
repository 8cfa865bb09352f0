"""``parts``: keypoints with fixed identities from the checkpoint's part model (issue 25)."""

from __future__ import annotations

from torch import Tensor

from .base import KeypointOutput, main_forward, mid_forward
from ..parts import PartModel, part_keypoints, stack_maps


class PartsMethod:
    """One keypoint per part of the checkpoint's :class:`lmpcli.parts.PartModel`, in part order.

    Unlike LMPNet's ranked keypoints, index j is the same part on every image. Runs the main
    network only (no replica, no clustering).

    Args:
        model: :class:`lmpcli.model.LMPNetPair` whose main network the part model was fitted on.
        part_model: the fitted parts (default: ``model.part_model``, set by
            :func:`lmpcli.checkpoint.load_model` from the checkpoint).
        flip: test-time flip, an extension (``--flip``; quality log section 44 item 2): the
            maps the part model reads are averaged over the image and its horizontal mirror, the
            mirror's maps flipped back (:meth:`part_features`); one more forward of the main
            network per batch. The logits stay the unmirrored image's.

    Returns (``__call__``): :class:`KeypointOutput` with xy (B, K, 2) in network-input pixels,
    index = part id, NaN where the part is absent; score (B, K) in [0, 1], 0 where absent; the
    main network's logits (B, classes).

    Raises:
        ValueError: the checkpoint has no part model.
    """

    name = "parts"
    uses_main = True

    def __init__(self, model, part_model: PartModel | None = None, flip: bool = False) -> None:
        part_model = part_model if part_model is not None else getattr(model, "part_model", None)
        if part_model is None:
            raise ValueError("this checkpoint has no part model; fit one with "
                             "`lmp fit-parts WEIGHTS --data DIR --out NEW.pt`")
        self.model, self.part_model, self.k, self.flip = model, part_model, part_model.k, bool(flip)

    def part_features(self, images: Tensor, cache: dict | None = None) -> tuple[Tensor, Tensor]:
        """(logits (B, classes), the maps the part model reads: (B, C, h, w) final-conv maps, or
        with a mid-level part model the final and mid-level maps stacked on its grid, (B, C + C', H, W):
        :func:`lmpcli.parts.stack_maps`). With ``flip``, the mean of those maps and the mirrored
        images' maps flipped back along the width (cached per grid and map kind, so part models that
        read different maps on one batch never share it)."""
        cache = {} if cache is None else cache
        logits, maps = self._stacked_maps(images, cache)
        if not self.flip:
            return logits, maps
        key = f"parts-flip-{self.part_model.grid}-{self.part_model.mid_channels}"  # per kind of map
        if key not in cache:
            cache[key] = self._stacked_maps(images.flip(-1), {}, mirrored=True)[1]
        return logits, (maps + cache[key].to(maps.dtype)) / 2

    def _stacked_maps(self, images: Tensor, cache: dict, mirrored: bool = False) -> tuple[Tensor, Tensor]:
        """One main forward: (logits, the stacked maps); ``mirrored``: ``images`` are mirrored and the
        maps are flipped back (:meth:`lmpcli.model.LMPNetPair.mirror_back` for the final map; the
        stride-16 block's cells mirror onto themselves)."""
        mid = mid_forward(self.model, images, cache) if self.part_model.mid_channels else None
        logits, features = main_forward(self.model, images, cache)
        if mirrored:
            features, mid = self.model.mirror_back(features), (mid.flip(-1) if mid is not None else None)
        return logits, stack_maps(features, mid, self.part_model.grid)

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        logits, features = self.part_features(images, cache)
        xy, score, _ = part_keypoints(self.part_model, features, images.shape[-2:], self.model.cell_centre())
        return KeypointOutput(xy, score, logits.float())
