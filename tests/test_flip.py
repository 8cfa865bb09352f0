"""Test-time flip (an extension): mirrored maps are flipped back into the original's cells."""
import pytest
import torch

from lmpcli.head import KeypointHead
from lmpcli.methods import LMPNetMethod
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.settings import KeypointSettings


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return LMPNetPair(LMPNetConfig(image_size=128, num_classes=3, keypoints=KeypointSettings(thr=1.0)), pretrained=False).eval()


def test_flipped_maps_align_with_the_original_cells(pair):
    """For the mirror image x' of x, the flipped-back maps of x' are x's maps mirrored along the width."""
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        _, f, r = pair.features(x)
        ff, rf = pair.flipped_features(x.flip(-1))
        assert f.shape[-2:] == (4, 4) and ff.shape == f.shape and rf.shape == r.shape
        torch.testing.assert_close(ff, f.flip(-1))
        torch.testing.assert_close(rf, r.flip(-1))
        assert not torch.allclose(ff, f.flip(-2))  # the width axis, not the height
        assert len(pair.flipped_features(x, use_replica=False)) == 1


def test_duplicate_extra_maps_leave_keypoints_unchanged(pair):
    """Fusing a copy of the same maps doubles every vote: same cells, same support shares.

    Exact with cell peaks (thr 1 erases only the winning cell, so the centroid is that cell);
    with sub-cell peaks (the default) the re-weighting's softmax term halves for each copy, so
    the centroid inside the winning cell may move slightly, never to another cell."""
    x = torch.randn(3, 3, 128, 128)
    with torch.inference_mode():
        _, f, r = pair.features(x)
        for subcell, atol in ((False, 1e-4), (True, 0.5)):
            head = KeypointHead(pair.resolve(KeypointSettings(k=3, subcell=subcell)), pair.cell_centre())
            xy, score = head([f, r], (128, 128))
            xy2, score2 = head([f, r, f, r], (128, 128))
            torch.testing.assert_close(xy2, xy, equal_nan=True, atol=atol, rtol=0)
            torch.testing.assert_close(score2, score)


def test_flip_method_fuses_mirrored_proposals_and_shares_the_forward(pair, monkeypatch):
    x = torch.randn(2, 3, 128, 128)
    calls = []
    original = pair.flipped_features
    monkeypatch.setattr(pair, "flipped_features", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    cache: dict = {}
    with torch.inference_mode():
        a = LMPNetMethod(pair, KeypointSettings(k=3, flip=True), name="a")(x, cache)
        b = LMPNetMethod(pair, KeypointSettings(k=3, flip=True, thr=2.0), name="b")(x, cache)
        _, f, r = pair.features(x)
        head = KeypointHead(pair.resolve(KeypointSettings(k=3)), pair.cell_centre())
        ref_xy, _ = head([f, r, *original(x)], (128, 128))
        plain = LMPNetMethod(pair, KeypointSettings(k=3))(x, {})
    assert len(calls) == 1  # one mirrored forward per batch, shared through the cache
    torch.testing.assert_close(a.xy, ref_xy, equal_nan=True)
    assert a.xy.shape == b.xy.shape == plain.xy.shape == (2, 3, 2)


def test_flip_at_output_stride_16_moves_the_mirrored_maps_one_cell():
    """Dense cell j sits at 16 j px, so the mirrored-back cell m (at 16 (m + 1) px) joins cell m + 1."""
    from lmpcli.model import shift_cells

    torch.manual_seed(0)
    dense = LMPNetPair(LMPNetConfig(image_size=128, num_classes=3, keypoints=KeypointSettings(thr=1.0)), pretrained=False).eval()
    dense.set_output_stride(16)
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        _, f, r = dense.features(x)
        ff, rf = dense.flipped_features(x.flip(-1))
    torch.testing.assert_close(ff, shift_cells(f.flip(-1), 1))
    torch.testing.assert_close(rf, shift_cells(r.flip(-1), 1))
    assert (ff[..., 0] == 0).all()
