"""The keypoint-settings record (lmpcli.settings) and the keypoint head (lmpcli.head)."""
from dataclasses import FrozenInstanceError, replace

import pytest
import torch

from lmpcli.checkpoint import load_model, read_checkpoint, save_checkpoint
from lmpcli.head import KeypointHead
from lmpcli.layers import concat_proposals, gate_proposals, learnable_clustering, select_filters
from lmpcli.methods import LMPNetMethod
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.settings import DEFAULTS, LEGACY_CONFIG_KEYS, KeypointSettings, resolve_settings, stored_settings

from .conftest import needs_weights

STORED = stored_settings(None, image_size=448, output_stride=32, replica=True)


def test_resolve_rescales_the_radius_once_for_grid_and_input_size():
    assert STORED.thr == DEFAULTS.thr == 1.2 and STORED.image_size == 448
    assert resolve_settings(None, STORED) == STORED  # nothing asked: the checkpoint's record
    dense = resolve_settings(KeypointSettings(output_stride=16), STORED)
    assert dense.thr == 2.4 and dense.output_stride == 16  # 1.2 cells of 14x14 -> 2.4 of 28x28
    assert resolve_settings(KeypointSettings(image_size=512), STORED).thr == pytest.approx(1.2 * 16 / 14)
    assert resolve_settings(KeypointSettings(output_stride=16, thr=3.0), STORED).thr == 3.0  # given: as given
    again = resolve_settings(dense, STORED)  # a resolved record resolves to itself
    assert again == dense and STORED.thr == 1.2  # and the stored record is never changed
    with pytest.raises(FrozenInstanceError):
        STORED.thr = 2.0
    for bad, match in (({"output_stride": 8}, "output stride"), ({"image_size": 100}, "multiple of 32"),
                       ({"thr": 0.0}, "thr"), ({"k": 0}, "k"), ({"gate": 1.5}, "gate")):
        with pytest.raises(ValueError, match=match):
            resolve_settings(KeypointSettings(**bad), STORED)


def test_variants_are_replacements_and_unset_fields_are_the_checkpoints():
    base = KeypointSettings(k=3, thr=None)
    assert replace(base, thr=2.0).given() == {"k": 3, "thr": 2.0}
    stored = stored_settings(KeypointSettings(num_filters=16, thr=1.0), image_size=64, output_stride=32, replica=False)
    got = resolve_settings(base, stored)
    assert (got.k, got.thr, got.num_filters, got.replica, got.image_size) == (3, 1.0, 16, False, 64)


def test_checkpoints_store_the_record_and_old_ones_load_their_flat_config(tmp_path):
    torch.manual_seed(0)
    pair = LMPNetPair(LMPNetConfig(image_size=64, num_classes=3, keypoints=KeypointSettings(k=3, num_filters=16)),
                      pretrained=False)
    new = tmp_path / "new.pt"
    save_checkpoint(new, pair, ["a", "b", "c"])
    assert read_checkpoint(new)["config"]["keypoints"]["num_filters"] == 16
    assert load_model(new)[0].config.keypoints == pair.config.keypoints
    # a checkpoint written before the record: k, thr ... sat flat in its config
    obj = read_checkpoint(new)
    flat = {key: v for key, v in obj["config"].items() if key != "keypoints"}
    obj["config"] = {**flat, "k": 2, "thr": 0.9, "num_filters": 8, "iterations": 1, "subcell": False,
                     "refine": False, "gate": 0.25}
    old = tmp_path / "old.pt"
    torch.save(obj, old)
    model = load_model(old)[0]
    assert model.config.keypoints == KeypointSettings(k=2, thr=0.9, num_filters=8, iterations=1, subcell=False,
                                                      refine=False, gate=0.25, replica=True, flip=False,
                                                      output_stride=32, image_size=64)
    out = LMPNetMethod(model)(torch.randn(2, 3, 64, 64))
    assert out.xy.shape == (2, 2, 2)  # the old file's k


@needs_weights
def test_the_shipped_weights_load_the_settings_their_config_holds():
    """The shipped file (since quality log section 44) stores the keypoint record; the load returns
    exactly it, with the defaults the tool documents (thr 1.2 cells, sub-cell peaks, k 5)."""
    model, ckpt = load_model()
    record = ckpt["config"]["keypoints"]
    assert not set(LEGACY_CONFIG_KEYS) & set(ckpt["config"])  # no flat copy beside the record
    s = model.config.keypoints
    assert {key: getattr(s, key) for key in record} == record
    assert (s.k, s.thr, s.num_filters, s.subcell, s.flip) == (5, 1.2, 128, True, False)


def _reference_keypoints(maps, settings, image_size, centre):
    """The keypoint branch written out from its definition: selection on every map, fusion, gate,
    Algorithm 1, cell (x, y) -> (x + centre) * stride."""
    s = settings
    props = concat_proposals(*(select_filters(m.float(), s.num_filters, s.subcell) for m in maps))
    props = gate_proposals(props, maps[0], s.gate)
    h, w = maps[0].shape[-2:]
    clusters = learnable_clustering(props, (h, w), s.k, s.thr, s.iterations, s.refine)
    stride = torch.tensor([image_size[1] / w, image_size[0] / h])
    xy = (clusters.xy + centre) * stride
    return torch.where(clusters.found[..., None], xy, float("nan")), clusters.score


@pytest.mark.parametrize("delta", [{}, {"subcell": False, "refine": False}, {"gate": 0.3, "thr": 2.0, "k": 4}])
def test_head_matches_the_branch_written_from_its_definition(delta):
    torch.manual_seed(0)
    maps = [torch.rand(3, 32, 6, 6) ** 4 for _ in range(3)]
    settings = replace(STORED, num_filters=8, **delta)
    head = KeypointHead(settings, cell_centre=0.5)
    xy, score = head(maps, (192, 192))
    ref_xy, ref_score = _reference_keypoints(maps, settings, (192, 192), 0.5)
    torch.testing.assert_close(xy, ref_xy, equal_nan=True)
    torch.testing.assert_close(score, ref_score)
    with pytest.raises(ValueError, match="unset: thr"):
        KeypointHead(KeypointSettings(k=3, num_filters=8, iterations=3, subcell=True, refine=True, gate=0.0))


def test_a_method_changes_with_its_settings_and_mask_out_ignores_them():
    torch.manual_seed(0)
    pair = LMPNetPair(LMPNetConfig(image_size=128, num_classes=3, keypoints=KeypointSettings(thr=1.0)),
                      pretrained=False).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        cache: dict = {}
        wide_cache: dict = {}
        plain = LMPNetMethod(pair, KeypointSettings(k=3))(x, cache)
        wide = LMPNetMethod(pair, KeypointSettings(k=3, thr=3.0), name="wide")(x, wide_cache)
    # the replica's input mask comes from the checkpoint's settings, not from a run's
    torch.testing.assert_close(wide_cache["replica"], cache["replica"])
    assert not torch.equal(plain.xy.nan_to_num(-1), wide.xy.nan_to_num(-1))
    assert LMPNetMethod(pair, KeypointSettings(k=3, thr=3.0)).settings.thr == 3.0


def test_method_option_defaults_are_the_constructors_defaults():
    """The CLI's occlusion-gbp / cam defaults and the methods' constructors read one table."""
    import inspect

    from lmpcli.cli.options import METHOD_KEYWORDS, METHOD_OPTIONS
    from lmpcli.methods import CAMMethod, OcclusionGBPMethod
    from lmpcli.settings import METHOD_DEFAULTS

    constructors = {"occlusion-gbp": OcclusionGBPMethod, "cam": CAMMethod}
    for method, keywords in METHOD_KEYWORDS.items():
        params = inspect.signature(constructors[method]).parameters
        for option, keyword in keywords.items():
            assert METHOD_OPTIONS.options[option][1] == params[keyword].default == METHOD_DEFAULTS[method][keyword]
