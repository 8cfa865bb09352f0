"""LMPNet (Guo & Farrell, Fig. 2): a classifier with leaky max pooling plus a keypoint branch.

``LMPNet``: backbone -> final-conv feature map (B, C, h, w) -> global pooling -> linear
classifier. ``LMPNetPair`` holds the main network and its replica (same architecture, own
weights, Sec. 3.3) and predicts keypoints: filter selection (Sec. 3.2) on both networks,
the replica fed the image with the main network's first keypoint masked out, proposals
fused, then learnable clustering (Sec. 3.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .backbones import create_backbone, freeze_stages
from .layers import GlobalPool2d, concat_proposals, gate_proposals, learnable_clustering, mask_out, select_filters


@dataclass
class LMPNetConfig:
    """Everything needed to rebuild an :class:`LMPNetPair` (stored in checkpoints).

    Attributes:
        backbone: name from :data:`lmpcli.backbones.BACKBONES`.
        num_classes: classifier outputs.
        pooling: ``avg``, ``max`` or ``lmp`` (Sec. 3.1).
        eps: leak of leaky max pooling (paper 0.1).
        image_size: square network input side, pixels (448 -> 14x14 feature maps).
        num_filters: filters kept per image and network by filter selection (Sec. 3.2).
        k: keypoints predicted.
        thr: clustering erase radius, feature-map cells (Sec. 3.4; paper 3 on 14x14, ours 1.2,
            a 5-cell disk: docs/quality-log.md, sections 15 and 17).
        iterations: clustering re-weighting iterations per keypoint.
        mask_size: attention mask side as a fraction of the input side (Sec. 3.3).
        replica: whether the replica network exists and is fused at test time.
        subcell: refine proposal peaks to sub-cell precision (3x3 centroid; an extension, on since
            quality log section 18; the training mask-out uses cell peaks either way).
        refine: place keypoints at their cluster's vote-weighted centroid (extension).
        gate: drop proposals where the main network's channel-mean map is below this
            fraction of its maximum (object prior; extension, 0 = off as in the paper).
        output_stride: 32 (as trained: 448 px -> 14x14 maps) or 16 (28x28 maps from the same
            weights, a test-time extension for EfficientNet-Lite; see
            :meth:`LMPNetPair.set_output_stride`).
        freeze: number of backbone stages kept frozen during training.
        dropout: dropout before the classifier.
        mean, std: input normalisation of the backbone.
    """

    backbone: str = "efficientnet-lite0"
    num_classes: int = 50
    pooling: str = "lmp"
    eps: float = 0.1
    image_size: int = 448
    num_filters: int = 128
    k: int = 5
    thr: float = 1.2
    iterations: int = 3
    mask_size: float = 0.15
    replica: bool = True
    subcell: bool = True
    refine: bool = True
    gate: float = 0.0
    output_stride: int = 32
    freeze: int = 12
    dropout: float = 0.2
    mean: tuple[float, float, float] = field(default=(0.498, 0.498, 0.498))
    std: tuple[float, float, float] = field(default=(0.502, 0.502, 0.502))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LMPNetConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


class LMPNet(nn.Module):
    """One LMPNet: (B, 3, S, S) normalised images -> logits (B, K) and feature maps (B, C, S/32, S/32)."""

    def __init__(self, config: LMPNetConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.backbone = create_backbone(config.backbone, pretrained)
        if config.output_stride != 32:
            self.backbone.set_output_stride(config.output_stride)
        freeze_stages(self.backbone, config.freeze)
        self.frozen = config.freeze
        self.pool = GlobalPool2d(config.pooling, config.eps)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.backbone.out_channels, config.num_classes)

    def train(self, mode: bool = True) -> "LMPNet":
        super().train(mode)
        for stage in self.backbone.stages()[: self.frozen]:
            stage.eval()  # frozen batch-norm statistics
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (logits (B, K), feature maps (B, C, h, w)).

        At output stride 16 the logits pool the stride-32 map contained in the dense one
        (``backbone.as_trained``), so classification is exactly the trained model's.
        """
        features = self.backbone(images)
        logits = self.classifier(self.dropout(self.pool(self.backbone.as_trained(features))))
        return logits, features


class KeypointOutput(NamedTuple):
    """Output of a keypoint method on a batch of network inputs.

    Attributes:
        xy: (B, k, 2) float32 keypoints, (x, y) in pixels of the network input
            (:func:`cells_to_pixels`: ``(cell + 0.5) * stride`` at output stride 32); NaN where
            not found.
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


def cells_to_pixels(xy: Tensor, map_size: tuple[int, int], image_size: tuple[int, int],
                    centre: float = 0.5) -> Tensor:
    """Map (…, 2) feature-map cells (x, y) to pixels of a (H, W) input: ``(cell + centre) * stride``.

    Args:
        xy: (…, 2) float cells (x, y); fractional for sub-cell peaks and cluster centroids.
        map_size: (h, w); the stride is ``W / w`` along x and ``H / h`` along y.
        image_size: (H, W) network input, pixels.
        centre: where a cell sits, fraction of the stride: 0.5 (the tile centre) at output
            stride 32, which docs/quality-log.md section 14 measured to be unbiased;
            ``backbone.cell_centre`` in general (:meth:`LMPNetPair.cell_centre`).

    Returns:
        (…, 2) input pixels.
    """
    h, w = map_size
    scale = xy.new_tensor([image_size[1] / w, image_size[0] / h])
    return (xy + centre) * scale


def shift_cells(maps: Tensor, dx: int) -> Tensor:
    """(B, C, h, w) maps moved ``dx`` cells along the width (positive: right), zero-filled."""
    if dx == 0:
        return maps
    pad = maps.new_zeros(*maps.shape[:-1], min(abs(dx), maps.shape[-1]))
    if dx > 0:
        return torch.cat([pad, maps[..., : maps.shape[-1] - dx]], -1)
    return torch.cat([maps[..., -dx:], pad], -1)


class LMPNetPair(nn.Module):
    """Main LMPNet and its replica (Sec. 3.3), with the keypoint branch (Secs. 3.2-3.4).

    Args:
        config: :class:`LMPNetConfig`.
        pretrained: load ImageNet weights into both backbones (False for tests / loading).
    """

    def __init__(self, config: LMPNetConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        self.main = LMPNet(config, pretrained)
        self.replica = LMPNet(config, pretrained) if config.replica else None
        self.part_model = None  # lmpcli.parts.PartModel of the checkpoint, when it has one (issue 25)

    def cell_centre(self) -> float:
        """Where a feature-map cell sits, as a fraction of the output stride (:func:`cells_to_pixels`)."""
        return float(self.main.backbone.cell_centre)

    def set_output_stride(self, output_stride: int | None) -> None:
        """Run both networks at output stride 16 or 32 (None: keep), weights unchanged (test time).

        At 16 the maps are twice as fine (448 px -> 28x28; the stride-32 map is contained in
        them, see :meth:`lmpcli.backbones.EfficientNetLiteFeatures.set_output_stride`) and the
        forward costs about 1.4x as much on a CPU (quality log, section 15). ``config.thr`` is
        in cells, so it is rescaled to keep the same erase radius in pixels (1.2 -> 2.4); pass
        ``thr`` to the keypoint branch to override it (section 15 measured 3, 4, 5 and 6: 3 scored best).

        Raises:
            ValueError: not 16 or 32. BackboneError: the backbone supports only 32 (ResNet).
        """
        if output_stride is None or output_stride == self.config.output_stride:
            return
        for net in (self.main, self.replica):
            if net is not None:
                net.backbone.set_output_stride(output_stride)
        self.config.thr *= self.config.output_stride / output_stride
        self.config.output_stride = output_stride

    def set_image_size(self, image_size: int | None) -> None:
        """Run both networks on ``image_size`` x ``image_size`` inputs (None: keep), weights unchanged (test time).

        The feature maps grow with the input (448 px -> 14x14, 512 px -> 16x16 at output stride
        32), and the forward cost grows with the pixel count. ``config.thr`` is in cells, so it
        is rescaled by ``image_size / config.image_size`` to keep the erased disk the same
        fraction of the image (1.2 cells of 14x14 -> 1.37 cells of 16x16); pass ``thr`` to the
        keypoint branch to override it. An option, not a default: on the shipped recipe every
        other size measured (384, 512, 576 px) traded greedy PCK against part recall and lowered
        accuracy (docs/quality-log.md, sections 21-22); ``eps`` of the pooling is not changed.

        Raises:
            ValueError: ``image_size`` not a positive multiple of 32 (the cell grid would no
                longer tile the input exactly).
        """
        if image_size is None or image_size == self.config.image_size:
            return
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32 or image_size % 32:
            raise ValueError(f"image size must be a positive multiple of 32 pixels, got {image_size!r}")
        self.config.thr *= image_size / self.config.image_size
        self.config.image_size = image_size

    def first_keypoint(self, features: Tensor, image_size: tuple[int, int]) -> Tensor:
        """(B, 2) first keypoint of the main network, input pixels: the region to mask out."""
        c = self.config
        clusters = learnable_clustering(
            select_filters(features, c.num_filters), features.shape[-2:], 1, c.thr, c.iterations
        )
        return cells_to_pixels(clusters.xy[:, 0], features.shape[-2:], image_size, self.cell_centre())

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Training forward: (logits of main (B, K), logits of replica on masked images or None)."""
        logits, features = self.main(images)
        if self.replica is None:
            return logits, None
        with torch.no_grad():
            first = self.first_keypoint(features.detach(), images.shape[-2:])
        replica_logits, _ = self.replica(mask_out(images, first, self.config.mask_size))
        return logits, replica_logits

    @torch.no_grad()
    def features(self, images: Tensor, use_replica: bool = True,
                 main_out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Both networks' final-conv feature maps, as keypoint prediction sees them.

        The replica sees the image with the main network's first keypoint masked out (Sec. 3.3).

        Args:
            images: (B, 3, S, S) normalised images.
            use_replica: run the replica (when the pair has one).
            main_out: the main network's (logits, features) when already computed.

        Returns:
            (logits (B, K), main features (B, C, h, w), replica features (B, C, h, w) or None).
        """
        logits, features = self.main(images) if main_out is None else main_out
        rep = None
        if use_replica and self.replica is not None:
            first = self.first_keypoint(features.float(), images.shape[-2:])
            rep = self.replica(mask_out(images, first, self.config.mask_size))[1]
        return logits, features, rep

    def flipped_features(self, images: Tensor, use_replica: bool = True) -> list[Tensor]:
        """Both networks' maps of the horizontally mirrored images, flipped back (test-time flip).

        An extension, not in the paper: the mirrored input goes through :meth:`features` (the
        replica masks the mirrored input's own first keypoint) and each map is mirrored back
        along its width, so cell (x, y) again covers the same region of the original input (at
        output stride 16 the mirrored-back map is also moved one cell right: its cell ``m``
        sits at ``16 (m + 1)`` px, see :meth:`set_output_stride`).

        Args:
            images: (B, 3, S, S) normalised images.
            use_replica: also run the replica (when the pair has one).

        Returns:
            [main (B, C, h, w)] or [main, replica], aligned with :meth:`features`' maps.
        """
        _, features, rep = self.features(images.flip(-1), use_replica)
        dx = int(round(1 - 2 * self.cell_centre()))  # mirrored cell m sits at (m + 1 - centre) * stride
        return [shift_cells(f.flip(-1), dx) for f in (features, rep) if f is not None]

    def keypoints_from_features(self, features: Tensor, replica_features: Tensor | None,
                                image_size: tuple[int, int], *, k: int | None = None, thr: float | None = None,
                                num_filters: int | None = None, iterations: int | None = None,
                                subcell: bool | None = None, refine: bool | None = None,
                                gate: float | None = None, extra_features: Sequence[Tensor] = ()) -> tuple[Tensor, Tensor]:
        """Filter selection (Sec. 3.2) on each network, proposals fused, learnable clustering (Sec. 3.4).

        Args:
            features, replica_features: (B, C, h, w) maps from :meth:`features`.
            image_size: (S, S) network input size, pixels.
            extra_features: more (B, C, h, w) maps aligned cell for cell with ``features``, e.g.
                both networks' maps of the mirrored image flipped back (test-time flip, an
                extension); each gets its own top-``num_filters`` selection and its proposals
                are fused with the others before clustering.
            Keywords override the config (``thr`` in cells).

        Returns:
            (xy (B, k, 2) keypoints in input pixels, NaN where not found; score (B, k)).
        """
        c = self.config
        pick = lambda value, default: default if value is None else value  # noqa: E731
        m, subcell = pick(num_filters, c.num_filters), pick(subcell, c.subcell)
        proposals = select_filters(features.float(), m, subcell)
        others = ([] if replica_features is None else [replica_features]) + list(extra_features)
        if others:
            proposals = concat_proposals(proposals, *(select_filters(f.float(), m, subcell) for f in others))
        proposals = gate_proposals(proposals, features, pick(gate, c.gate))
        map_size = features.shape[-2:]
        clusters = learnable_clustering(proposals, map_size, pick(k, c.k), pick(thr, c.thr),
                                        pick(iterations, c.iterations), pick(refine, c.refine))
        xy = cells_to_pixels(clusters.xy, map_size, image_size, self.cell_centre())
        return torch.where(clusters.found[..., None], xy, float("nan")), clusters.score

    @torch.no_grad()
    def predict(self, images: Tensor, *, use_replica: bool = True, flip: bool = False,
                main_out: tuple[Tensor, Tensor] | None = None, **overrides) -> KeypointOutput:
        """Keypoints for (B, 3, S, S) normalised images (Secs. 3.2-3.4); see :class:`KeypointOutput`.

        ``overrides``: ``k``, ``thr`` (cells), ``num_filters``, ``iterations``, ``subcell``,
        ``refine``, ``gate`` (see :meth:`keypoints_from_features`); ``flip``: also fuse the
        proposals of the mirrored images (:meth:`flipped_features`; twice the forward passes);
        ``main_out``: the main network's (logits, features) when already computed.
        """
        logits, features, rep = self.features(images, use_replica, main_out)
        extra = self.flipped_features(images, use_replica) if flip else ()
        xy, score = self.keypoints_from_features(features, rep, images.shape[-2:], extra_features=extra, **overrides)
        return KeypointOutput(xy, score, logits.float())
