"""Occlusion + guided-backprop keypoints (Shan poster): fusion, the method on a real backbone, heat maps in
its output and through run_methods, the heat-map panel."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lmpcli.heatmaps import denormalise, draw_heatmap_panel
from lmpcli.inference import run_methods
from lmpcli.methods import METHODS, OcclusionGBPMethod, create_method
from lmpcli.attribution import GuidedBackprop, gbp_heatmap
from lmpcli.methods.occlusion_gbp import fuse_heatmaps
from lmpcli.methods.base import KeypointOutput
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.settings import KeypointSettings
from lmpcli.peaks import detect_keypoints




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
    method = create_method("occlusion-gbp", tiny_pair, KeypointSettings(k=5))
    assert isinstance(method, OcclusionGBPMethod) and method.name == "occlusion-gbp" and method.uses_main
    with torch.inference_mode():  # as in lmpcli.inference.run_methods: inference tensors in
        images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        out = method(images)
    coarse, fine = out.heatmaps
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


class _FixedMaps:
    """A method whose output carries given heat maps (or none)."""

    uses_main, k = False, 1

    def __init__(self, name, heatmaps):
        self.name, self.heatmaps = name, heatmaps

    def __call__(self, images, cache=None):
        b = images.shape[0]
        return KeypointOutput(torch.full((b, 1, 2), 8.0), torch.ones(b, 1), None, heatmaps=self.heatmaps)


class _Recording:
    """Calls a method and keeps its outputs."""

    def __init__(self, method):
        self.method, self.outputs = method, []
        self.name, self.k, self.uses_main = method.name, method.k, method.uses_main

    def __call__(self, images, cache=None):
        self.outputs.append(self.method(images, cache))
        return self.outputs[-1]


def test_occlusion_gbp_low_resolution_through_run_methods(tiny_pair):
    method = create_method("occlusion-gbp", tiny_pair, KeypointSettings(k=3), input_size=32, chunk_size=64)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    spy = _Recording(method)
    cache = {}
    res = run_methods([spy], images, torch.tensor([[128, 96], [64, 64]]), torch.device("cpu"), cache)
    assert res["occlusion-gbp"]["xy"].shape == (2, 3, 2) and res["occlusion-gbp"]["logits"].shape == (2, 3)
    for got, want in zip(res["occlusion-gbp"]["heatmaps"], spy.outputs[0].heatmaps, strict=True):  # the output's own maps
        assert got.shape == (2, 64, 64)
        torch.testing.assert_close(got, want)
    assert "heatmaps" not in cache  # no side channel


def test_run_methods_takes_heat_maps_from_each_output():
    maps = (torch.zeros(2, 16, 16), torch.ones(2, 16, 16))
    res = run_methods([_FixedMaps("with", maps), _FixedMaps("without", None)], torch.zeros(2, 3, 16, 16),
                      torch.tensor([[32, 32], [16, 16]]), torch.device("cpu"))
    assert [m.tolist() for m in res["with"]["heatmaps"]] == [m.tolist() for m in maps]
    assert "heatmaps" not in res["without"]  # a later method without maps gets none of the earlier one's
    assert res["with"]["xy"][0, 0].tolist() == [16.0, 16.0]  # still rescaled to original pixels


def test_guided_backprop_inplace_matches_out_of_place_on_efficientnet(tiny_pair):
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ref = copy.deepcopy(tiny_pair.main)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    target = torch.tensor([1])
    a = GuidedBackprop(tiny_pair.main).attribute(images, target)
    b = GuidedBackprop(ref).attribute(images, target)
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


def test_fine_sigma_blurs_the_fine_map_as_a_gaussian_from_its_definition(tiny_pair):
    """``fine_sigma`` > 0: the fine map is the sigma-0 map convolved with a normalised Gaussian of
    side 2 ceil(3 sigma) + 1 (reflected border), divided by its maximum; reference written here."""
    import math

    import torch.nn.functional as F

    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    sigma = 1.5
    with torch.inference_mode():
        _, sharp, _ = create_method("occlusion-gbp", tiny_pair, KeypointSettings(k=3)).heatmaps_and_logits(images)
        _, blurred, _ = create_method("occlusion-gbp", tiny_pair, KeypointSettings(k=3),
                                      fine_sigma=sigma).heatmaps_and_logits(images)
    r = math.ceil(3 * sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    ref = F.pad(sharp[:, None], (r, r, r, r), mode="reflect")
    ref = F.conv2d(F.conv2d(ref, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))[:, 0]
    ref = ref / ref.amax((1, 2), keepdim=True)
    torch.testing.assert_close(blurred, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(blurred, sharp, atol=1e-3)  # the option does something
