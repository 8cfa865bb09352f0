"""Test-time flip (an extension): mirrored maps are flipped back into the original's cells."""
import pytest
import torch

from lmpcli.methods import LMPNetMethod
from lmpcli.model import LMPNetConfig, LMPNetPair


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return LMPNetPair(LMPNetConfig(image_size=128, num_classes=3, thr=1.0), pretrained=False).eval()


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
            xy, score = pair.keypoints_from_features(f, r, (128, 128), k=3, subcell=subcell)
            xy2, score2 = pair.keypoints_from_features(f, r, (128, 128), k=3, subcell=subcell,
                                                       extra_features=[f, r])
            torch.testing.assert_close(xy2, xy, equal_nan=True, atol=atol, rtol=0)
            torch.testing.assert_close(score2, score)


def test_flip_method_fuses_mirrored_proposals_and_shares_the_forward(pair, monkeypatch):
    x = torch.randn(2, 3, 128, 128)
    calls = []
    original = pair.flipped_features
    monkeypatch.setattr(pair, "flipped_features", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    cache: dict = {}
    with torch.inference_mode():
        a = LMPNetMethod(pair, k=3, flip=True, name="a")(x, cache)
        b = LMPNetMethod(pair, k=3, flip=True, name="b", thr=2.0)(x, cache)
        _, f, r = pair.features(x)
        ref_xy, _ = pair.keypoints_from_features(f, r, (128, 128), k=3, extra_features=original(x))
        plain = LMPNetMethod(pair, k=3)(x, {})
    assert len(calls) == 1  # one mirrored forward per batch, shared through the cache
    torch.testing.assert_close(a.xy, ref_xy, equal_nan=True)
    assert a.xy.shape == b.xy.shape == plain.xy.shape == (2, 3, 2)


def test_flip_at_output_stride_16_moves_the_mirrored_maps_one_cell():
    """Dense cell j sits at 16 j px, so the mirrored-back cell m (at 16 (m + 1) px) joins cell m + 1."""
    from lmpcli.model import shift_cells

    torch.manual_seed(0)
    dense = LMPNetPair(LMPNetConfig(image_size=128, num_classes=3, thr=1.0), pretrained=False).eval()
    dense.set_output_stride(16)
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        _, f, r = dense.features(x)
        ff, rf = dense.flipped_features(x.flip(-1))
    torch.testing.assert_close(ff, shift_cells(f.flip(-1), 1))
    torch.testing.assert_close(rf, shift_cells(r.flip(-1), 1))
    assert (ff[..., 0] == 0).all()
