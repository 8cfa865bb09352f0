import urllib.error

import pytest
import torch

from lmpcli.backbones import BackboneError, create_backbone
from lmpcli.model import LMPNetConfig, LMPNetPair


def test_resnet_feature_map_shape():
    net = create_backbone("resnet18", pretrained=False).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 64, 96)).shape == (1, 512, 2, 3)


def test_offline_resnet_weights_give_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(BackboneError, match="need internet"):
        create_backbone("resnet50", pretrained=True)


def test_lite_backbone_has_unbounded_head_and_ships_imagenet_weights():
    net = create_backbone("efficientnet-lite0", pretrained=True).eval()
    assert isinstance(net.head[-1], torch.nn.ReLU)  # not ReLU6: no ties at 6 in filter selection
    with torch.no_grad():
        f = net(torch.randn(1, 3, 64, 64))
    assert f.shape == (1, 1280, 2, 2) and f.max() > 0


def test_unknown_backbone():
    with pytest.raises(BackboneError, match="unknown backbone"):
        LMPNetPair(LMPNetConfig(backbone="vgg16"), pretrained=False)
