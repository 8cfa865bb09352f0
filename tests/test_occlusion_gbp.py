"""Occlusion + guided-backprop keypoints (Shan poster): NMS, Förstner, occlusion, GBP, method smoke test."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lmpcli.heatmaps import denormalise, draw_heatmap_panel
from lmpcli.inference import run_methods
from lmpcli.methods import METHODS, OcclusionGBPMethod, create_method
from lmpcli.methods.occlusion_gbp import (
    detect_keypoints, forstner_refine, fuse_heatmaps, gaussian_blur, gbp_heatmap, guided_backprop,
    guided_relu_hooks, nms_peaks, occluder_starts, occlusion_sensitivity,
)
from lmpcli.model import LMPNetConfig, LMPNetPair




# ------------------------------------------------------------------ NMS

def test_nms_peaks_hand_made_map():
    m = torch.zeros(1, 10, 12)
    m[0, 3, 2] = 1.0   # peak
    m[0, 3, 4] = 0.9   # within radius 2 of the first: suppressed
    m[0, 7, 8] = 0.8   # peak
    m[0, 0, 11] = 0.5  # peak (corner of the map)
    values, xy, valid = nms_peaks(m, radius=2, max_peaks=3)
    assert valid.tolist() == [[True, True, True]]
    assert values[0].tolist() == pytest.approx([1.0, 0.8, 0.5])
    assert xy[0].tolist() == [[2.0, 3.0], [8.0, 7.0], [11.0, 0.0]]
    # radius 1: the 0.9 pixel is its own peak
    values, xy, _ = nms_peaks(m, radius=1, max_peaks=2)
    assert xy[0].tolist() == [[2.0, 3.0], [4.0, 3.0]]


def test_nms_peaks_ties_keep_fraction_and_padding():
    m = torch.full((2, 6, 6), -math.inf)
    m[0, 2, 2] = m[0, 2, 3] = 1.0  # a two-pixel plateau gives one peak
    m[0, 5, 0], m[0, 0, 5] = 0.5, 0.25
    m[1, 1, 1] = 2.0
    values, xy, valid = nms_peaks(m, radius=1, max_peaks=4, keep_fraction=0.4)
    # image 0: 3 peaks -> ceil(1.2) = 2 kept; image 1: 1 peak
    assert valid.tolist() == [[True, True, False, False], [True, False, False, False]]
    assert xy[0, 0].tolist() == [2.0, 2.0] and xy[0, 1].tolist() == [0.0, 5.0]
    assert torch.isnan(xy[~valid]).all() and (values[~valid] == -math.inf).all()
    # NaN pixels never peak; max_peaks None -> most peaks of any image
    m2 = torch.tensor([[[math.nan, 0.0, 1.0]]])
    values, xy, valid = nms_peaks(m2, radius=0)
    assert valid.tolist() == [[True, True]] and xy[0, 0].tolist() == [2.0, 0.0]
    with pytest.raises(ValueError):
        nms_peaks(m, radius=-1)
    with pytest.raises(ValueError):
        nms_peaks(m, radius=1, keep_fraction=0.0)


# ------------------------------------------------------------------ Förstner

def _checkerboard_corner(cx: float, cy: float, n: int = 32, ss: int = 8, sigma: float = 1.0) -> torch.Tensor:
    """(1, n, n) checkerboard corner at (cx, cy) (pixel i spans [i - 0.5, i + 0.5]), area-sampled, blurred."""
    t = (torch.arange(n * ss) + 0.5) / ss - 0.5
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    img = (torch.sign(xx - cx) * torch.sign(yy - cy)).view(n, ss, n, ss).mean((1, 3))
    return gaussian_blur(img[None], sigma)


@pytest.mark.parametrize("cx,cy", [(15.3, 16.7), (15.5, 15.5), (16.1, 15.9), (15.45, 16.2)])
def test_forstner_recovers_subpixel_corner(cx, cy):
    m = _checkerboard_corner(cx, cy)
    start = torch.tensor([[[round(cx), round(cy)], [math.nan, math.nan]]], dtype=torch.float32)
    out = forstner_refine(m, start, window=5)
    assert (out[0, 0] - torch.tensor([cx, cy])).abs().max() < 0.1
    assert torch.isnan(out[0, 1]).all()


def test_forstner_centre_model_on_blob_and_flat_map():
    t = torch.arange(32.0)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    cx, cy = 15.3, 16.7
    blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18.0)[None]
    out = forstner_refine(blob, torch.tensor([[[15.0, 17.0]]]), window=5, model="centre")
    assert (out[0, 0] - torch.tensor([cx, cy])).abs().max() < 0.05
    flat = torch.ones(1, 8, 8)  # singular A: unchanged
    assert forstner_refine(flat, torch.tensor([[[3.0, 4.0]]])).tolist() == [[[3.0, 4.0]]]
    with pytest.raises(ValueError):
        forstner_refine(flat, torch.tensor([[[3.0, 4.0]]]), window=4)


# ------------------------------------------------------------------ coarse: occlusion

class RegionNet(nn.Module):
    """Class-0 logit depends only on the mean of the 16x16 region at rows/cols 24..39."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        s = 4.0 * (x[:, :, 24:40, 24:40].mean((1, 2, 3)) - 0.75)
        return torch.stack([s, -s], 1)


def test_occluder_starts_cover_the_axis():
    assert occluder_starts(64, 16, 8) == [0, 8, 16, 24, 32, 40, 48]
    assert occluder_starts(30, 16, 8) == [0, 8, 14]
    assert occluder_starts(10, 16, 8) == [0]


def test_occlusion_map_peaks_on_the_region_and_is_zero_elsewhere():
    net = RegionNet()
    images = torch.ones(2, 3, 64, 64)
    images[1] = 0.0  # p0 ~ 0; noise in [0, 1] only raises the score -> no drop anywhere
    gen = torch.Generator().manual_seed(0)
    heat = occlusion_sensitivity(net, images, torch.tensor([0, 0]), 16, 8, chunk_size=20, fill="noise", generator=gen)
    assert heat.shape == (2, 64, 64)
    assert net.calls == 1 + math.ceil(2 * 49 / 20)  # one base forward + batched chunks
    row, col = divmod(int(heat[0].argmax()), 64)
    assert 24 <= row < 40 and 24 <= col < 40
    assert heat[0, 30:34, 30:34].min() > 0.1
    far = torch.ones(64, 64, dtype=torch.bool)
    far[9:55, 9:55] = False  # every occluder covering these pixels misses the region
    assert heat[0][far].abs().max() == 0
    assert heat[1].abs().max() == 0


def test_occlusion_chunking_does_not_change_the_map():
    net = RegionNet()
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    a = occlusion_sensitivity(net, images, torch.tensor([0, 1]), 16, 8, chunk_size=7, fill="mean")
    b = occlusion_sensitivity(net, images, torch.tensor([0, 1]), 16, 8, chunk_size=1000, fill="mean")
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        occlusion_sensitivity(net, images, torch.tensor([0, 1]), fill="grey")


# ------------------------------------------------------------------ fine: guided backprop

def _mlp(act: nn.Module) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, -1], [0, -1, 0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[2.0, -3.0, 0.5, 5.0], [1.0, 1.0, 1.0, 1.0]]))
        net[2].bias.zero_()
    return net


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU6(), nn.ReLU6(inplace=True)],
                         ids=["relu", "relu-inplace", "relu6", "relu6-inplace"])
def test_guided_backprop_hand_computed(act):
    net = _mlp(act)
    x = torch.tensor([[1.0, 2.0, -1.0]])
    # hidden h = W1 x = [1, 2, 1, -2]; R = W2[0] = [2, -3, 0.5, 5]
    # plain:  W1^T ([h > 0] R)          = W1^T [2, -3, 0.5, 0] = [2, -3, -0.5]
    # guided: W1^T ([h > 0] [R > 0] R)  = W1^T [2,  0, 0.5, 0] = [2,  0, -0.5]
    grad = guided_backprop(net, x, torch.tensor([0]), objective="logit")
    torch.testing.assert_close(grad, torch.tensor([[2.0, 0.0, -0.5]]))
    # softmax objective: R = W2^T p0 (e0 - p), then the same guided gate
    z = net[2](net[1](net[0](x)))  # no hooks: the plain forward
    p = z.detach().softmax(-1)[0]
    r = net[2].weight.detach().T @ (p[0] * (torch.tensor([1.0, 0.0]) - p))
    r = r * (torch.tensor([1.0, 2.0, 1.0, -2.0]) > 0) * (r > 0)
    expected = net[0].weight.detach().T @ r
    torch.testing.assert_close(guided_backprop(net, x, torch.tensor([0]), objective="prob")[0], expected)
    assert all(len(m._forward_hooks) == 0 for m in net.modules())


def test_guided_backprop_relu6_upper_gate_and_batch():
    net = _mlp(nn.ReLU6())
    x = torch.tensor([[1.0, 8.0, -1.0], [1.0, 2.0, -1.0]])  # image 0: unit 1 saturates at 6
    grad = guided_backprop(net, x, torch.tensor([1, 0]), objective="logit")
    # image 0, class 1: R = [1, 1, 1, 1], h = [1, 8, 1, -8] -> gate [1, 0, 1, 0] -> W1^T = [1, 0, -1]
    torch.testing.assert_close(grad, torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -0.5]]))


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        self.relu(x.clone())
        raise RuntimeError("boom")


def test_guided_hooks_removed_after_exception():
    net = _mlp(nn.ReLU())
    with pytest.raises(RuntimeError):
        guided_backprop(net, torch.ones(1, 3), torch.tensor([5]), objective="logit")  # bad class index
    assert len(net[1]._forward_hooks) == 0
    boom = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        guided_backprop(boom, torch.ones(1, 3), torch.tensor([0]))
    assert len(boom.relu._forward_hooks) == 0
    with pytest.raises(KeyError):
        with guided_relu_hooks(net) as n:
            assert n == 1 and len(net[1]._forward_hooks) == 1
            raise KeyError("x")
    assert len(net[1]._forward_hooks) == 0


def test_guided_backprop_under_inference_mode():
    net = _mlp(nn.ReLU(inplace=True))
    with torch.inference_mode():
        x = torch.tensor([[1.0, 2.0, -1.0]])
        grad = guided_backprop(net, x, torch.tensor([0]), objective="logit")
    torch.testing.assert_close(grad, torch.tensor([[2.0, 0.0, -0.5]]))


# ------------------------------------------------------------------ fusion, detection, method

def test_fuse_heatmaps_range_and_detect():
    coarse = torch.zeros(1, 32, 32)
    fine = torch.zeros(1, 32, 32)
    f0 = fuse_heatmaps(coarse, fine)
    assert f0.abs().max() < 1e-6
    f1 = fuse_heatmaps(coarse + 1, fine + 1)
    torch.testing.assert_close(f1, torch.ones_like(f1))
    t = torch.arange(32.0)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    coarse[0] = torch.exp(-((xx - 10) ** 2 + (yy - 20) ** 2) / 20)
    fine[0] = torch.exp(-((xx - 25) ** 2 + (yy - 5) ** 2) / 4)
    xy, score = detect_keypoints(fuse_heatmaps(coarse, fine), k=3, nms_radius=4, keep_fraction=1.0)
    assert xy.shape == (1, 3, 2) and score.shape == (1, 3)
    # peaks at map pixels (10, 20) and (25, 5): pixel centres (+0.5) in input pixels
    expected = torch.tensor([[10.5, 20.5], [25.5, 5.5]])
    got = xy[0, :2][xy[0, :2, 0].argsort()]
    torch.testing.assert_close(got, expected, atol=0.05, rtol=0)
    assert (score[0, :2] > 0.4).all() and (score <= 1).all()
    with pytest.raises(ValueError):
        fuse_heatmaps(coarse, fine, weights=(0.0, 0.0))


@pytest.fixture(scope="module")
def tiny_pair():
    """Random EfficientNet-Lite0 pair at 64 px, batch-norm statistics calibrated on one random
    batch (with the default running statistics a random-init network's activations vanish)."""
    torch.manual_seed(0)
    model = LMPNetPair(LMPNetConfig(image_size=64, num_classes=3, replica=False), pretrained=False).eval()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        model.main(torch.randn(8, 3, 64, 64))
    return model.eval()


def test_occlusion_gbp_method_smoke(tiny_pair):
    assert "occlusion-gbp" in METHODS
    method = create_method("occlusion-gbp", tiny_pair, k=5)
    assert isinstance(method, OcclusionGBPMethod) and method.name == "occlusion-gbp" and method.uses_main
    with torch.inference_mode():  # as in lmpcli.inference.run_methods: inference tensors in
        images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        out, coarse, fine = method.predict(images)
    assert out.xy.shape == (2, 5, 2) and out.score.shape == (2, 5) and out.logits.shape == (2, 3)
    found = torch.isfinite(out.xy).all(-1)
    assert found[:, 0].all()
    assert ((out.xy[found] >= 0) & (out.xy[found] <= 64)).all()
    assert ((out.score >= 0) & (out.score <= 1)).all()
    assert coarse.shape == fine.shape == (2, 64, 64)
    assert fine.amax((1, 2)).tolist() == pytest.approx([1.0, 1.0])  # GBP through in-place ReLU6 works
    assert all(len(m._forward_hooks) == 0 for m in tiny_pair.modules())
    with pytest.raises(ValueError):
        create_method("occlusion-gbp", tiny_pair, keep_fraction=1.5)


def test_occlusion_gbp_low_resolution_through_run_methods(tiny_pair):
    method = create_method("occlusion-gbp", tiny_pair, k=3, input_size=32, chunk_size=64)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    res = run_methods([method], images, torch.tensor([[128, 96], [64, 64]]), torch.device("cpu"))
    assert res["occlusion-gbp"]["xy"].shape == (2, 3, 2) and res["occlusion-gbp"]["logits"].shape == (2, 3)


def test_guided_backprop_inplace_matches_out_of_place_on_efficientnet(tiny_pair):
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ref = copy.deepcopy(tiny_pair.main)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    target = torch.tensor([1])
    a = guided_backprop(tiny_pair.main, images, target)
    b = guided_backprop(ref, images, target)
    scale = a.abs().max()
    assert scale > 0
    torch.testing.assert_close(a / scale, b / scale)
    plain = images.clone().requires_grad_(True)
    tiny_pair.main(plain)[0].softmax(-1)[0, 1].backward()
    assert not torch.allclose(a / scale, plain.grad / plain.grad.abs().max(), atol=1e-3)  # the guided rule acts
    assert gbp_heatmap(a).shape == (1, 32, 32)


def test_draw_heatmap_panel():
    image = np.zeros((40, 50, 3), np.uint8)
    panel = draw_heatmap_panel(image, torch.rand(64, 64), np.random.rand(64, 64), np.array([[10.0, 20.0], [np.nan, np.nan]]),
                               label="bird")
    assert panel.shape == (40, 4 * 50 + 3 * 4, 3) and panel.dtype == np.uint8
    assert denormalise(torch.zeros(3, 8, 8), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).shape == (8, 8, 3)
    with pytest.raises(ValueError):
        draw_heatmap_panel(image, torch.rand(2, 64, 64), torch.rand(64, 64), np.zeros((0, 2)))
