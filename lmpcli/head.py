"""LMPNet's keypoint head: feature maps -> ranked keypoints in input pixels (Secs. 3.2-3.4).

One owner for the keypoint branch: filter selection on every map (Sec. 3.2), the proposals
fused (the replica's, Sec. 3.3; mirrored and ensemble maps, extensions), the object gate (an
extension), learnable clustering (Sec. 3.4, Algorithm 1) and the mapping of cells to pixels.
Used by :class:`lmpcli.methods.LMPNetMethod`, the replica's mask-out
(:meth:`lmpcli.model.LMPNetPair.first_keypoint`) and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .layers import Clusters, Proposals, concat_proposals, gate_proposals, learnable_clustering, select_filters
from .settings import KeypointSettings, check_settings

#: The fields a head reads; each must be set (a resolved record, :func:`lmpcli.settings.resolve_settings`).
HEAD_FIELDS = ("k", "thr", "num_filters", "iterations", "subcell", "refine", "gate")


def cells_to_pixels(xy: Tensor, map_size: tuple[int, int], image_size: tuple[int, int],
                    centre: float = 0.5) -> Tensor:
    """Map (…, 2) feature-map cells (x, y) to pixels of a (H, W) input: ``(cell + centre) * stride``.

    Args:
        xy: (…, 2) float cells (x, y); fractional for sub-cell peaks and cluster centroids.
        map_size: (h, w); the stride is ``W / w`` along x and ``H / h`` along y.
        image_size: (H, W) network input, pixels.
        centre: where a cell sits, fraction of the stride: 0.5 (the tile centre) at output
            stride 32, which docs/quality-log.md section 14 measured to be unbiased;
            ``backbone.cell_centre`` in general (:meth:`lmpcli.model.LMPNetPair.cell_centre`).

    Returns:
        (…, 2) input pixels.
    """
    h, w = map_size
    scale = xy.new_tensor([image_size[1] / w, image_size[0] / h])
    return (xy + centre) * scale


class KeypointHead:
    """Select, fuse, gate, cluster, map to pixels: LMPNet's keypoints from feature maps.

    Args:
        settings: a record whose :data:`HEAD_FIELDS` are set (``k``, ``thr`` in cells of the maps
            the head is given, ``num_filters``, ``iterations``, ``subcell``, ``refine``, ``gate``);
            its other fields (replica, flip, grid, members) decide which maps the caller passes.
        cell_centre: where a cell sits, fraction of the stride (:func:`cells_to_pixels`).

    Raises:
        ValueError: a head field unset, or out of range (:func:`lmpcli.settings.check_settings`).
    """

    def __init__(self, settings: KeypointSettings, cell_centre: float = 0.5) -> None:
        missing = [key for key in HEAD_FIELDS if getattr(settings, key) is None]
        if missing:
            raise ValueError(f"keypoint head needs resolved settings; unset: {', '.join(missing)}")
        check_settings(settings)
        self.settings = settings
        self.cell_centre = cell_centre

    def proposals(self, maps: Sequence[Tensor]) -> Proposals:
        """Top-``num_filters`` filters of each (B, C, h, w) map (Sec. 3.2), fused in order, then gated.

        ``maps[0]`` is the main network's: the object gate's channel-mean prior comes from it. The
        others (the replica's, mirrored maps flipped back, ensemble members') must be aligned
        cell for cell with it; each gets its own selection.

        Returns:
            :class:`~lmpcli.layers.Proposals`, (B, num_filters x len(maps)) proposals in cells.
        """
        s = self.settings
        found = [select_filters(m.float(), s.num_filters, s.subcell) for m in maps]
        proposals = found[0] if len(found) == 1 else concat_proposals(*found)
        return gate_proposals(proposals, maps[0], s.gate)

    def cluster(self, proposals: Proposals, map_size: tuple[int, int]) -> Clusters:
        """Learnable clustering (Sec. 3.4, Algorithm 1): ``k`` ranked clusters, (x, y) in cells."""
        s = self.settings
        return learnable_clustering(proposals, map_size, s.k, s.thr, s.iterations, s.refine)

    def to_pixels(self, clusters: Clusters, map_size: tuple[int, int],
                  image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(xy (B, k, 2) float32 input pixels, NaN where not found; score (B, k) in [0, 1])."""
        xy = cells_to_pixels(clusters.xy, map_size, image_size, self.cell_centre)
        return torch.where(clusters.found[..., None], xy, float("nan")), clusters.score

    def __call__(self, maps: Sequence[Tensor], image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Keypoints from (B, C, h, w) maps of a (H, W) network input.

        Args:
            maps: the main network's map first, then any aligned maps to fuse (see :meth:`proposals`).
            image_size: (H, W) network input, pixels.

        Returns:
            (xy (B, k, 2) float32 keypoints, (x, y) in input pixels, rank order, NaN where not
            found; score (B, k): share of the proposals each keypoint erased).
        """
        map_size = tuple(maps[0].shape[-2:])
        return self.to_pixels(self.cluster(self.proposals(maps), map_size), map_size, image_size)
