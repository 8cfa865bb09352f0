"""``parts``: keypoints with fixed identities from the checkpoint's part model (issue 25)."""

from __future__ import annotations

from torch import Tensor

from .base import KeypointOutput, _forward, main_forward, mid_forward
from ..model import shift_cells
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
        mid = mid_forward(self.model, images, cache) if self.part_model.mid_channels else None
        logits, features = main_forward(self.model, images, cache)
        maps = stack_maps(features, mid, self.part_model.grid)
        if not self.flip:
            return logits, maps
        key = f"parts-flip-{self.part_model.grid}-{self.part_model.mid_channels}"  # per kind of map
        if key not in cache:
            out = _forward(self.model, images.flip(-1), None, bool(self.part_model.mid_channels))
            # the final map's mirrored cell m sits one cell over at output stride 16
            # (LMPNetPair.flipped_features); the stride-16 block's cells mirror onto themselves
            dx = int(round(1 - 2 * self.model.cell_centre()))
            mid_back = out[2].flip(-1) if self.part_model.mid_channels else None
            cache[key] = stack_maps(shift_cells(out[1].flip(-1), dx), mid_back, self.part_model.grid)
        return logits, (maps + cache[key].to(maps.dtype)) / 2

    def __call__(self, images: Tensor, cache: dict | None = None) -> KeypointOutput:
        logits, features = self.part_features(images, cache)
        xy, score, _ = part_keypoints(self.part_model, features, images.shape[-2:], self.model.cell_centre())
        return KeypointOutput(xy, score, logits.float())
