"""benchmarks/part_branch_study.py (quality log section 40): the branch is the ImageNet network's top,
and the head's map assignment is PDiscoNet's (upsample the K + 1 maps, argmax at the pixel)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import part_branch_study as bench  # noqa: E402
from parts_head_study import PartHead  # noqa: E402

from lmpcli.backbones import EfficientNetLiteFeatures  # noqa: E402


def test_branch_on_the_block10_map_is_the_imagenet_networks_final_map():
    torch.manual_seed(0)
    net = EfficientNetLiteFeatures("efficientnet-lite0").eval()
    branch = bench.Branch().eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        final, mid = net(x, with_mid=True)
        ours = branch(mid)
    assert mid.shape == (2, net.mid_channels, 6, 6)
    assert ours.shape == final.shape == (2, 1280, 3, 3)
    torch.testing.assert_close(ours, final)
    # trainable copy, not shared modules: a step on the branch leaves the backbone alone
    assert all(p.data_ptr() != q.data_ptr() for p in branch.parameters() for q in net.parameters())


def test_map_assignment_is_argmax_of_the_upsampled_maps_at_the_pixel():
    g = torch.Generator().manual_seed(1)
    head = PartHead(torch.randn(4, 8, generator=g), rms=1.0, classes=3, beta=0.5).eval()
    features = torch.randn(2, 8, 4, 4, generator=g)
    size = 64
    px = torch.randint(0, size, (2, 10, 2), generator=g)
    points = (px.float() + 0.5) / size  # pixel centres as fractions of (W, H)
    points[1, 3] = float("nan")
    _, _, _, ids = bench.head_outputs(head, features, points, cell_centre=0.5)
    with torch.no_grad():
        up = F.interpolate(head.maps(features), size=(size, size), mode="bilinear", align_corners=False)
    ref = torch.stack([up[b].argmax(0)[px[b, :, 1], px[b, :, 0]] for b in range(2)])
    ref[1, 3] = -1
    assert torch.equal(ids, ref)
    assert ids.max() <= 3  # K + 1 = 4 maps, the last the background
