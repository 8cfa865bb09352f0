"""LMPNet (Guo & Farrell, Fig. 2): a classifier with leaky max pooling, and the pair with its replica.

``LMPNet``: backbone -> final-conv feature map (B, C, h, w) -> global pooling -> linear
classifier. ``LMPNetPair`` holds the main network and its replica (same architecture, own
weights, Sec. 3.3): the training forward, the replica's input with the main network's first
keypoint masked out (written once, :meth:`LMPNetPair.replica_input`), and the feature maps as
keypoint prediction sees them. The keypoint branch itself is :class:`lmpcli.head.KeypointHead`,
its test-time settings :class:`lmpcli.settings.KeypointSettings`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import Tensor, nn

from .backbones import create_backbone, freeze_stages
from .head import KeypointHead, cells_to_pixels
from .layers import GlobalPool2d, mask_out
from .settings import TRAIN_DEFAULTS, KeypointSettings, resolve_settings, settings_from_config, stored_settings


@dataclass
class LMPNetConfig:
    """Everything needed to rebuild an :class:`LMPNetPair` (stored in checkpoints).

    Attributes:
        backbone: name from :data:`lmpcli.backbones.BACKBONES`.
        num_classes: classifier outputs.
        pooling: ``avg``, ``max`` or ``lmp`` (Sec. 3.1).
        eps: leak of leaky max pooling (paper 0.1).
        image_size: square network input side, pixels (448 -> 14x14 feature maps); the size the
            networks run at (:meth:`LMPNetPair.set_image_size` changes it at test time).
        mask_size: attention mask side as a fraction of the input side (Sec. 3.3).
        replica: whether the replica network exists.
        output_stride: 32 (as trained: 448 px -> 14x14 maps) or 16 (28x28 maps from the same
            weights, a test-time extension for EfficientNet-Lite; see
            :meth:`LMPNetPair.set_output_stride`).
        freeze: number of backbone stages kept frozen during training.
        dropout: dropout before the classifier.
        mean, std: input normalisation of the backbone.
        keypoints: the checkpoint's keypoint settings (:class:`~lmpcli.settings.KeypointSettings`,
            thr in cells of the trained grid), completed at construction by
            :func:`lmpcli.settings.stored_settings` (unset fields: :data:`lmpcli.settings.DEFAULTS`,
            and this config's input size, output stride and replica as trained); never changed
            by the test-time settings.
    """

    backbone: str = TRAIN_DEFAULTS["backbone"]
    num_classes: int = 50
    pooling: str = TRAIN_DEFAULTS["pooling"]
    eps: float = TRAIN_DEFAULTS["eps"]
    image_size: int = TRAIN_DEFAULTS["image_size"]
    mask_size: float = TRAIN_DEFAULTS["mask_size"]
    replica: bool = TRAIN_DEFAULTS["replica"]
    output_stride: int = 32
    freeze: int = TRAIN_DEFAULTS["freeze"]
    dropout: float = 0.2
    mean: tuple[float, float, float] = field(default=(0.498, 0.498, 0.498))
    std: tuple[float, float, float] = field(default=(0.502, 0.502, 0.502))
    keypoints: KeypointSettings | None = None

    def __post_init__(self) -> None:
        self.keypoints = stored_settings(self.keypoints, image_size=self.image_size,
                                         output_stride=self.output_stride, replica=self.replica)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["keypoints"] = self.keypoints.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LMPNetConfig":
        """Config from a checkpoint's dict; one written before ``keypoints`` existed gets the keypoint
        settings its flat config held (:func:`lmpcli.settings.settings_from_config`)."""
        known = {f.name for f in fields(cls)} - {"keypoints"}
        out = {k: v for k, v in d.items() if k in known}
        for key in ("mean", "std"):
            if key in out:
                out[key] = tuple(out[key])
        return cls(**out, keypoints=settings_from_config(d))


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

    def forward(self, images: Tensor, with_mid: bool = False) -> tuple[Tensor, ...]:
        """Returns (logits (B, K), feature maps (B, C, h, w)), and with ``with_mid`` also the
        mid-level map (B, C', H/16, W/16) at its own resolution (the last stride-16 block; part
        models with ``mid_channels`` read it through :func:`lmpcli.parts.stack_maps`).

        At output stride 16 the logits pool the stride-32 map contained in the dense one
        (``backbone.as_trained``), so classification is exactly the trained model's.
        """
        out = self.backbone(images, with_mid=True) if with_mid else (self.backbone(images),)
        features = out[0]
        logits = self.classifier(self.dropout(self.pool(self.backbone.as_trained(features))))
        return (logits, *out)


def shift_cells(maps: Tensor, dx: int) -> Tensor:
    """(B, C, h, w) maps moved ``dx`` cells along the width (positive: right), zero-filled."""
    if dx == 0:
        return maps
    pad = maps.new_zeros(*maps.shape[:-1], min(abs(dx), maps.shape[-1]))
    if dx > 0:
        return torch.cat([pad, maps[..., : maps.shape[-1] - dx]], -1)
    return torch.cat([maps[..., -dx:], pad], -1)


class LMPNetPair(nn.Module):
    """Main LMPNet and its replica (Sec. 3.3): the architecture and the training forward.

    Args:
        config: :class:`LMPNetConfig` (its ``keypoints``: the checkpoint's keypoint settings).
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

    def resolve(self, settings: KeypointSettings | None = None) -> KeypointSettings:
        """``settings`` resolved against the checkpoint's record for the grid the pair runs at.

        Unset input size and output stride are the pair's current ones (after
        :meth:`set_image_size` / :meth:`set_output_stride`); the rest is
        :func:`lmpcli.settings.resolve_settings` (the erase radius rescaled there, once).
        ``replica`` is False when the pair has no replica network.

        Raises:
            ValueError: a bad value, or an input size / output stride other than the one the pair
                runs at (load it with those settings: :func:`lmpcli.inference.load_for_inference`).
        """
        c = self.config
        requested = settings if settings is not None else KeypointSettings()
        requested = replace(requested, image_size=requested.image_size or c.image_size,
                            output_stride=requested.output_stride or c.output_stride)
        if (requested.image_size, requested.output_stride) != (c.image_size, c.output_stride):
            raise ValueError(f"the networks run at {c.image_size} px, output stride {c.output_stride}, not "
                             f"{requested.image_size} px, {requested.output_stride}; set those when loading "
                             "(load_for_inference, set_image_size / set_output_stride)")
        resolved = resolve_settings(requested, c.keypoints)
        return resolved if self.replica is not None or not resolved.replica else replace(resolved, replica=False)

    def set_output_stride(self, output_stride: int | None) -> None:
        """Run both networks at output stride 16 or 32 (None: keep), weights unchanged (test time).

        At 16 the maps are twice as fine (448 px -> 28x28; the stride-32 map is contained in
        them, see :meth:`lmpcli.backbones.EfficientNetLiteFeatures.set_output_stride`) and the
        forward costs about 1.4x as much on a CPU (quality log, section 15). Only the networks
        and ``config.output_stride`` change; the checkpoint's keypoint settings do not (their
        radius is rescaled by :meth:`resolve`).

        Raises:
            ValueError: not 16 or 32. BackboneError: the backbone supports only 32 (ResNet).
        """
        if output_stride is None or output_stride == self.config.output_stride:
            return
        for net in (self.main, self.replica):
            if net is not None:
                net.backbone.set_output_stride(output_stride)
        self.config.output_stride = output_stride

    def set_image_size(self, image_size: int | None) -> None:
        """Run both networks on ``image_size`` x ``image_size`` inputs (None: keep), weights unchanged (test time).

        The feature maps grow with the input (448 px -> 14x14, 512 px -> 16x16 at output stride
        32), and the forward cost grows with the pixel count. Only ``config.image_size`` changes
        (the input transforms read it); :meth:`resolve` rescales the erase radius so the erased
        disk stays the same fraction of the image. An option, not a default: on the shipped recipe
        every other size measured (384, 512, 576 px) traded greedy PCK against part recall and
        lowered accuracy (docs/quality-log.md, sections 21-22); ``eps`` of the pooling is not changed.

        Raises:
            ValueError: ``image_size`` not a positive multiple of 32 (the cell grid would no
                longer tile the input exactly).
        """
        if image_size is None or image_size == self.config.image_size:
            return
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32 or image_size % 32:
            raise ValueError(f"image size must be a positive multiple of 32 pixels, got {image_size!r}")
        self.config.image_size = image_size

    def first_keypoint(self, features: Tensor, image_size: tuple[int, int]) -> Tensor:
        """(B, 2) first keypoint of the main network, input pixels: the region to mask out (Sec. 3.3).

        The checkpoint's keypoint settings at the grid the pair runs at (:meth:`resolve`), never a
        run's overrides, with cell peaks, the cluster's winning cell, no gate: one mask per image,
        shared by every test-time variant. An image without proposals gets cell (0, 0).
        """
        settings = replace(self.resolve(), k=1, subcell=False, refine=False, gate=0.0)
        head = KeypointHead(settings, self.cell_centre())
        map_size = tuple(features.shape[-2:])
        clusters = head.cluster(head.proposals([features]), map_size)
        return cells_to_pixels(clusters.xy[:, 0], map_size, image_size, self.cell_centre())

    def replica_input(self, images: Tensor, features: Tensor) -> Tensor:
        """The replica's input: (B, 3, S, S) images with the main network's first keypoint masked out.

        The one mask-out path (Sec. 3.3), used by the training forward, :meth:`features` and
        :func:`lmpcli.filters.network_features`. No gradient flows through the mask's position.

        Args:
            images: (B, 3, S, S) normalised images.
            features: the main network's (B, C, h, w) maps of ``images``.
        """
        with torch.no_grad():
            first = self.first_keypoint(features.detach().float(), images.shape[-2:])
        return mask_out(images, first, self.config.mask_size)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Training forward: (logits of main (B, K), logits of replica on masked images or None)."""
        logits, features = self.main(images)
        if self.replica is None:
            return logits, None
        replica_logits, _ = self.replica(self.replica_input(images, features))
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
            rep = self.replica(self.replica_input(images, features))[1]
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
        return [self.mirror_back(f) for f in (features, rep) if f is not None]

    def mirror_back(self, maps: Tensor) -> Tensor:
        """(B, C, h, w) final-conv maps of mirrored images, flipped back along the width and aligned
        with the unmirrored images' cells: a mirrored cell ``m`` sits at ``(m + 1 - centre) *
        stride`` px, so at output stride 16 (cell centre 0) the map also moves one cell right."""
        return shift_cells(maps.flip(-1), int(round(1 - 2 * self.cell_centre())))
