"""Attribution objects (lmpcli.attribution): occlusion sensitivity on a network with a known answer,
guided backprop against hand-computed gradients (ReLU, ReLU6, in place), hooks removed on errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lmpcli.attribution import GuidedBackprop, Occlusion, guided_relu_hooks, occluder_starts


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
    heat = Occlusion(net).attribute(images, torch.tensor([0, 0]), size=16, stride=8, chunk_size=20, fill="noise",
                                   generator=gen)
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
    a = Occlusion(net).attribute(images, torch.tensor([0, 1]), size=16, stride=8, chunk_size=7, fill="mean")
    b = Occlusion(net).attribute(images, torch.tensor([0, 1]), size=16, stride=8, chunk_size=1000, fill="mean")
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        Occlusion(net).attribute(images, torch.tensor([0, 1]), fill="grey")


class RecordingNet(nn.Module):
    """Records every batch it is given; logits from the image mean."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        m = x.mean((1, 2, 3))
        return torch.stack([m, -m], 1)


@pytest.mark.parametrize("fill", ["noise", "colour", "mean"])
def test_occluded_copies_change_only_the_occluder_window(fill):
    net = RecordingNet()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    images = torch.randn(2, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    size, stride = 16, 10
    ys, xs = occluder_starts(40, size, stride), occluder_starts(36, size, stride)
    Occlusion(net, mean, std).attribute(images, torch.tensor([0, 1]), size=size, stride=stride, chunk_size=5,
                                        fill=fill, generator=torch.Generator().manual_seed(1))
    copies = torch.cat(net.seen[1:])  # after the base forward, image-major, positions row-major
    assert len(copies) == 2 * len(ys) * len(xs)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    for j, copy in enumerate(copies):
        img, pos = divmod(j, len(ys) * len(xs))
        top, left = ys[pos // len(xs)], xs[pos % len(xs)]
        inside = torch.zeros(40, 36, dtype=torch.bool)
        inside[top:top + size, left:left + size] = True
        assert torch.equal(copy[:, ~inside], images[img][:, ~inside])  # the rest of the image untouched
        pixels = copy * s + m  # back to [0, 1] pixel space
        window = pixels[:, top:top + size, left:left + size]
        if fill == "mean":
            torch.testing.assert_close(window, m.expand_as(window))
        else:
            assert window.min() >= -1e-6 and window.max() <= 1 + 1e-6
            per_pixel = window.flatten(1).std(1)
            assert (per_pixel > 0.1).all() if fill == "noise" else (per_pixel < 1e-6).all()


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
    grad = GuidedBackprop(net).attribute(x, torch.tensor([0]), objective="logit")
    torch.testing.assert_close(grad, torch.tensor([[2.0, 0.0, -0.5]]))
    # softmax objective: R = W2^T p0 (e0 - p), then the same guided gate
    z = net[2](net[1](net[0](x)))  # no hooks: the plain forward
    p = z.detach().softmax(-1)[0]
    r = net[2].weight.detach().T @ (p[0] * (torch.tensor([1.0, 0.0]) - p))
    r = r * (torch.tensor([1.0, 2.0, 1.0, -2.0]) > 0) * (r > 0)
    expected = net[0].weight.detach().T @ r
    torch.testing.assert_close(GuidedBackprop(net).attribute(x, torch.tensor([0]), objective="prob")[0], expected)
    assert all(len(m._forward_hooks) == 0 for m in net.modules())


def test_guided_backprop_relu6_upper_gate_and_batch():
    net = _mlp(nn.ReLU6())
    x = torch.tensor([[1.0, 8.0, -1.0], [1.0, 2.0, -1.0]])  # image 0: unit 1 saturates at 6
    grad = GuidedBackprop(net).attribute(x, torch.tensor([1, 0]), objective="logit")
    # image 0, class 1: R = [1, 1, 1, 1], h = [1, 8, 1, -8] -> gate [1, 0, 1, 0] -> W1^T = [1, 0, -1]
    torch.testing.assert_close(grad, torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -0.5]]))


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.act = nn.ReLU6()

    def forward(self, x):
        self.act(self.relu(x.clone()))
        raise RuntimeError("boom")


def _no_hooks(net: nn.Module) -> bool:
    return all(len(m._forward_hooks) == 0 and len(m._backward_hooks) == 0 for m in net.modules())


def test_guided_backprop_object_leaves_no_hooks_after_an_exception():
    net = _mlp(nn.ReLU())
    gbp = GuidedBackprop(net)
    with pytest.raises(RuntimeError):
        gbp.attribute(torch.ones(1, 3), torch.tensor([5]), objective="logit")  # bad class index: fails after the forward
    assert _no_hooks(net)
    boom = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        GuidedBackprop(boom).attribute(torch.ones(1, 3), torch.tensor([0]))  # fails inside the forward
    assert _no_hooks(boom)
    with pytest.raises(ValueError, match="objective"):
        gbp.attribute(torch.ones(1, 3), torch.tensor([0]), objective="softmax")
    assert _no_hooks(net)
    # the model backpropagates the plain way again: x = [1, 2, -1] gives the ordinary gradient
    x = torch.tensor([[1.0, 2.0, -1.0]], requires_grad=True)
    net(x)[0, 0].backward()
    torch.testing.assert_close(x.grad, torch.tensor([[2.0, -3.0, -0.5]]))
    with pytest.raises(KeyError):
        with guided_relu_hooks(net) as n:
            assert n == 1 and len(net[1]._forward_hooks) == 1
            raise KeyError("x")
    assert _no_hooks(net)


def test_guided_backprop_under_inference_mode():
    net = _mlp(nn.ReLU(inplace=True))
    with torch.inference_mode():
        x = torch.tensor([[1.0, 2.0, -1.0]])
        grad = GuidedBackprop(net).attribute(x, torch.tensor([0]), objective="logit")
    torch.testing.assert_close(grad, torch.tensor([[2.0, 0.0, -0.5]]))


def test_guided_backprop_in_the_networks_channels_last_format_gives_the_same_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    images = torch.randn(2, 3, 20, 20)
    target = torch.tensor([1, 3])
    plain = GuidedBackprop(net).attribute(images, target)
    cl = GuidedBackprop(net.to(memory_format=torch.channels_last)).attribute(images, target)
    assert cl.is_contiguous()  # handed back in the plain format
    torch.testing.assert_close(cl, plain, rtol=1e-4, atol=1e-6)
