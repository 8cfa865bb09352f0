import urllib.error

import pytest
import torch

from lmpcli.backbones import BackboneError, create_backbone
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.settings import KeypointSettings


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


def test_output_stride_16_holds_the_stride_32_map_at_odd_cells():
    """A trous: same weights, twice as fine maps; the trained stride-32 map is exactly the odd cells."""
    torch.manual_seed(0)
    net = create_backbone("efficientnet-lite0", pretrained=False).eval()
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        coarse = net(x)
        net.set_output_stride(16)
        dense = net(x)
        assert (net.stride, net.cell_centre) == (16, 0.0)
        net.set_output_stride(32)
        again = net(x)
    assert coarse.shape[-2:] == (4, 5) and dense.shape[-2:] == (8, 10)
    torch.testing.assert_close(dense[..., 1::2, 1::2], coarse)
    assert not torch.allclose(dense[..., ::2, ::2], coarse)  # the even cells are new evaluations
    torch.testing.assert_close(again, coarse)  # the switch is undone exactly
    assert (net.stride, net.cell_centre) == (32, 0.5)
    with pytest.raises(ValueError, match="16 or 32"):
        net.set_output_stride(8)
    with pytest.raises(BackboneError, match="EfficientNet-Lite"):
        create_backbone("resnet18", pretrained=False).set_output_stride(16)


def test_pair_at_output_stride_16_keeps_pixel_geometry():
    from lmpcli.head import cells_to_pixels
    from lmpcli.methods import ChannelMeanBaseline, LMPNetMethod

    torch.manual_seed(0)
    pair = LMPNetPair(LMPNetConfig(image_size=128, num_classes=3, keypoints=KeypointSettings(thr=1.5)),
                      pretrained=False).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        logits, coarse = pair.main(x)
        pair.set_output_stride(16)
        dense_logits, dense = pair.main(x)
        torch.testing.assert_close(dense_logits, logits)  # classification is the trained model's
        pair.set_output_stride(16)  # idempotent
        assert pair.config.output_stride == 16 and pair.cell_centre() == 0.0
        assert pair.config.keypoints.thr == 1.5  # the checkpoint's record is never rescaled in place
        assert pair.resolve().thr == 3.0  # 1.5 cells of 4x4 -> 3 cells of 8x8, resolved once
        assert pair.resolve(KeypointSettings(thr=2.0)).thr == 2.0  # an explicit radius is used as given
        with pytest.raises(ValueError, match="output stride 16"):
            pair.resolve(KeypointSettings(output_stride=32))  # the networks run at 16 now
        assert pair.replica.backbone.stride == 16
        kp = LMPNetMethod(pair)(x)
        base = ChannelMeanBaseline(pair, 1)(x, {})
    assert coarse.shape[-2:] == (4, 4) and dense.shape[-2:] == (8, 8) and kp.xy.shape == (2, 5, 2)
    found = ~kp.xy.isnan().any(-1)  # NaN: every proposal of the image already erased
    assert found.sum() >= 8 and ((kp.xy[found] >= 0) & (kp.xy[found] <= 128)).all()
    # stride-32 cell i and its dense twin 2 i + 1 land on the same pixel
    i = torch.tensor([[0.0, 3.0], [2.0, 1.0]])
    torch.testing.assert_close(cells_to_pixels(2 * i + 1, (8, 8), (128, 128), 0.0),
                               cells_to_pixels(i, (4, 4), (128, 128)))
    # the channel-mean baseline's strongest cell is placed by the same rule
    top = dense.float().mean(1).flatten(1).argmax(1)
    expected = torch.stack([top % 8, top // 8], -1).float() * 16
    torch.testing.assert_close(base.xy[:, 0], expected)


def test_pair_at_a_larger_input_keeps_the_erased_fraction_of_the_image():
    """set_image_size: maps grow with the input, thr (cells) grows with them; bad sizes are refused."""
    from lmpcli.methods import LMPNetMethod

    torch.manual_seed(0)
    pair = LMPNetPair(LMPNetConfig(image_size=128, num_classes=3, keypoints=KeypointSettings(thr=1.5)),
                      pretrained=False).eval()
    pair.set_image_size(None)
    assert (pair.config.image_size, pair.resolve().thr) == (128, 1.5)
    for bad in (100, 0, True, 160.0):
        with pytest.raises(ValueError, match="multiple of 32"):
            pair.set_image_size(bad)
    pair.set_image_size(192)
    pair.set_image_size(192)  # idempotent
    assert (pair.config.image_size, pair.resolve().thr) == (192, 2.25)  # 1.5 cells of 4x4 -> 2.25 of 6x6
    assert pair.config.keypoints.thr == 1.5 and pair.config.keypoints.image_size == 128  # as trained
    x = torch.randn(2, 3, 192, 192)
    with torch.inference_mode():
        _, features = pair.main(x)
        kp = LMPNetMethod(pair)(x)
    assert features.shape[-2:] == (6, 6) and kp.xy.shape == (2, 5, 2)
    found = ~kp.xy.isnan().any(-1)  # NaN: every proposal already erased (likely on 6x6 maps at 2.25 cells)
    assert found[:, 0].all() and ((kp.xy[found] >= 0) & (kp.xy[found] <= 192)).all()
    assert (kp.xy[found] > 128).any()  # keypoints in pixels of the 192-px input, not the 128-px one
