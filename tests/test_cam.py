"""CAM baseline: class activation map of the predicted class, NMS peaks at cell centres."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmpcli.methods import METHODS, CAMMethod, create_method
from lmpcli.methods.cam import class_activation_map
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.settings import KeypointSettings




class ToyMain(nn.Module):
    """Features = 8x8 average of the first two input channels; classifier W = [[1, .5], [0, 1]]."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(2, 2)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
            self.classifier.bias.zero_()

    def forward(self, images):
        features = F.avg_pool2d(images[:, :2], 8)
        return self.classifier(features.mean((2, 3))), features


class ToyPair(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = ToyMain()


def _paint(img, ch, cell_x, cell_y, value):
    img[ch, cell_y * 8:(cell_y + 1) * 8, cell_x * 8:(cell_x + 1) * 8] = value


def test_cam_toy_model_peaks_and_class():
    images = torch.zeros(2, 3, 48, 48)  # 6x6 cells
    _paint(images[0], 0, 1, 1, 4.0)
    _paint(images[0], 0, 4, 3, 2.0)
    _paint(images[0], 1, 1, 4, 0.2)  # class 0 predicted; CAM_0 = ch0 + 0.5 ch1
    _paint(images[1], 1, 5, 0, 6.0)  # class 1 predicted; CAM_1 = ch1
    _paint(images[1], 1, 2, 4, 3.0)
    _paint(images[1], 0, 3, 3, 1.0)
    model = ToyPair()
    out = create_method("cam", model, KeypointSettings(k=2))(images)
    assert out.logits.argmax(-1).tolist() == [0, 1]
    # cell (x, y) -> pixel centre ((x + .5) * 8, (y + .5) * 8)
    assert out.xy[0].tolist() == [[12.0, 12.0], [36.0, 28.0]]
    assert out.xy[1].tolist() == [[44.0, 4.0], [20.0, 36.0]]
    torch.testing.assert_close(out.score, torch.tensor([[1.0, 0.5], [1.0, 0.5]]))
    cam = class_activation_map(model.main(images)[1], model.main.classifier.weight, torch.tensor([0, 1]))
    assert cam.shape == (2, 6, 6) and cam[0, 4, 1].item() == pytest.approx(0.1)


def test_cam_missing_peaks_are_nan():
    images = torch.zeros(1, 3, 16, 16)  # 2x2 cells
    _paint(images[0], 0, 0, 0, 1.0)
    out = CAMMethod(ToyPair(), k=3, nms_radius=1)(images)
    assert out.xy[0, 0].tolist() == [4.0, 4.0]
    assert torch.isnan(out.xy[0, 1:]).all() and out.score[0, 1:].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        CAMMethod(ToyPair(), k=0)


def test_cam_smoke_lmpnet_pair():
    assert "cam" in METHODS
    torch.manual_seed(0)
    model = LMPNetPair(LMPNetConfig(image_size=64, num_classes=3, replica=False), pretrained=False).eval()
    method = create_method("cam", model, KeypointSettings(k=5), nms_radius=0)
    assert method.name == "cam" and method.uses_main
    with torch.inference_mode():
        out = method(torch.randn(2, 3, 64, 64))
    assert out.xy.shape == (2, 5, 2) and out.score.shape == (2, 5) and out.logits.shape == (2, 3)
    # a 2x2 feature map (64 px / 32) has 4 cells: the 5th keypoint is not found
    assert torch.isfinite(out.xy[:, :4]).all() and torch.isnan(out.xy[:, 4]).all()
    assert set(map(tuple, out.xy[0, :4].tolist())) == {(16.0, 16.0), (48.0, 16.0), (16.0, 48.0), (48.0, 48.0)}


def test_pooling_aware_cam_sums_to_the_logit():
    from lmpcli.layers import global_pool2d
    from lmpcli.methods.cam import class_activation_map

    torch.manual_seed(0)
    feats = torch.rand(2, 6, 4, 4)
    weight = torch.randn(3, 6)
    target = torch.tensor([0, 2])
    for mode in ("avg", "max", "lmp"):
        cam = class_activation_map(feats, weight, target, mode, 0.1)
        logits = global_pool2d(feats, mode, 0.1) @ weight.T
        assert torch.allclose(cam.sum((-2, -1)), logits.gather(1, target[:, None])[:, 0], atol=1e-5)
