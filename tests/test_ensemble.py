"""Seed ensembles (an extension, docs/quality-log.md section 27): every pair's proposals fused."""
import copy

import pandas as pd
import pytest
import torch

from lmpcli.checkpoint import CheckpointError, save_checkpoint
from lmpcli.evaluate import evaluate
from lmpcli.methods import LMPNetMethod
from lmpcli.methods.lmpnet import check_ensemble
from lmpcli.head import KeypointHead
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.settings import KeypointSettings


def _pair(seed: int, **config) -> LMPNetPair:
    torch.manual_seed(seed)
    config = {"image_size": 128, "num_classes": 3, "keypoints": KeypointSettings(thr=1.0), **config}
    return LMPNetPair(LMPNetConfig(**config), pretrained=False).eval()


@pytest.fixture(scope="module")
def pairs():
    return _pair(0), _pair(1)


def test_an_ensemble_of_copies_keeps_the_keypoints(pairs):
    """A copy doubles every vote: same cells, same support shares, same logits (cell peaks: exact)."""
    a = pairs[0]
    x = torch.randn(3, 3, 128, 128)
    with torch.inference_mode():
        alone = LMPNetMethod(a, KeypointSettings(k=3, subcell=False))(x, {})
        both = LMPNetMethod(a, KeypointSettings(k=3, subcell=False), ensemble=[copy.deepcopy(a)])(x, {})
    torch.testing.assert_close(both.xy, alone.xy, equal_nan=True)
    torch.testing.assert_close(both.score, alone.score)
    torch.testing.assert_close(both.logits, alone.logits)


def test_each_member_runs_both_networks_on_its_own_mask_and_forwards_are_shared(pairs, monkeypatch):
    a, b = pairs
    x = torch.randn(2, 3, 128, 128)
    calls = []
    original = b.main.forward
    monkeypatch.setattr(b.main, "forward", lambda *args: calls.append(1) or original(*args))
    cache: dict = {}
    with torch.inference_mode():
        out = LMPNetMethod(a, KeypointSettings(k=3), ensemble=[b], name="e")(x, cache)
        LMPNetMethod(a, KeypointSettings(k=3, thr=2.0), ensemble=[b], name="e-thr2")(x, cache)
        assert len(calls) == 1  # the member's main network ran once for both rows
        la, fa, ra = a.features(x)
        lb, fb, rb = b.features(x)  # b's replica masks b's own first keypoint
        ref_xy, ref_score = KeypointHead(a.resolve(KeypointSettings(k=3)), a.cell_centre())([fa, ra, fb, rb], (128, 128))
        alone = LMPNetMethod(a, KeypointSettings(k=3))(x, {})
    torch.testing.assert_close(out.xy, ref_xy, equal_nan=True)
    torch.testing.assert_close(out.score, ref_score)
    torch.testing.assert_close(out.logits, (la + lb) / 2)
    assert not torch.allclose(out.xy, alone.xy, equal_nan=True)  # the member's proposals did move keypoints


def test_members_must_share_input_grid_and_classes(pairs):
    a = pairs[0]
    for other, what in ((_pair(2, image_size=160), "image_size"), (_pair(2, num_classes=4), "num_classes")):
        with pytest.raises(ValueError, match=what):
            LMPNetMethod(a, ensemble=[other])
    check_ensemble(a, pairs[1])  # same architecture and classes: fine


def test_evaluate_with_several_checkpoints(tiny_checkpoint, tiny_cub, tmp_path):
    torch.manual_seed(1)
    other = tmp_path / "seed1.pt"
    save_checkpoint(other, LMPNetPair(LMPNetConfig(image_size=64, num_classes=3, keypoints=KeypointSettings(thr=1.0)), pretrained=False),
                    ["a", "b", "c"], half=True)
    kw = dict(split="all", settings=KeypointSettings(k=3), workers=0, batch_size=4, device="cpu")
    rep = evaluate(tiny_cub, weights=[tiny_checkpoint, other], variants={"first": {"members": 1}}, **kw)
    single = evaluate(tiny_cub, weights=tiny_checkpoint, **kw)
    t, s = rep["table"].set_index("method"), single["table"].set_index("method")
    assert rep["config"]["weights"] == [str(tiny_checkpoint), str(other)]
    cols = ["KP1", "KP2", "KP3", "avg", "recall", "acc"]
    pd.testing.assert_series_equal(t.loc["first", cols], s.loc["lmpnet", cols], check_names=False)
    pd.testing.assert_series_equal(t.loc["channel-mean", cols], s.loc["channel-mean", cols])  # the first's maps
    with pytest.raises(ValueError, match="members"):
        evaluate(tiny_cub, weights=[tiny_checkpoint, other], variants={"x": {"members": 3}}, **kw)
    foreign = tmp_path / "foreign.pt"
    save_checkpoint(foreign, LMPNetPair(LMPNetConfig(image_size=64, num_classes=3), pretrained=False), ["a", "b", "d"])
    with pytest.raises(CheckpointError, match="other classes"):
        evaluate(tiny_cub, weights=[tiny_checkpoint, foreign], **kw)
