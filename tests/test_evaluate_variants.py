from dataclasses import replace

import pandas as pd
import pytest

from lmpcli.evaluate import evaluate
from lmpcli.settings import KeypointSettings


def test_variants_share_forwards_and_match_separate_runs(tiny_checkpoint, tiny_cub):
    """A variant row equals a separate evaluation with the same settings."""
    kw = dict(split="all", weights=tiny_checkpoint, workers=0, batch_size=4, device="cpu", baselines=False)
    base = KeypointSettings(k=3)
    rep = evaluate(tiny_cub, settings=base, variants={"thr2": {"thr": 2.0}, "solo": {"replica": False}}, **kw)
    t = rep["table"].set_index("method")
    assert list(t.index) == ["lmpnet", "thr2", "solo", "mean-landmark"]
    for name, single in (("thr2", evaluate(tiny_cub, settings=replace(base, thr=2.0), **kw)),
                         ("solo", evaluate(tiny_cub, settings=replace(base, replica=False), **kw))):
        ref = single["table"].set_index("method").loc["lmpnet"]
        cols = ["KP1", "KP2", "KP3", "avg", "recall", "Kp", "NMI", "ARI"]
        pd.testing.assert_series_equal(t.loc[name, cols], ref[cols], check_names=False)
    with pytest.raises(ValueError):
        evaluate(tiny_cub, variants={"lmpnet": {}}, **kw)
    with pytest.raises(ValueError, match="unknown setting"):
        evaluate(tiny_cub, variants={"x": {"bogus": 1}}, **kw)
    with pytest.raises(ValueError, match="output_stride cannot change"):
        evaluate(tiny_cub, variants={"x": {"output_stride": 16}}, **kw)


def test_flip_variant_matches_a_flip_run(tiny_checkpoint, tiny_cub):
    kw = dict(split="all", weights=tiny_checkpoint, workers=0, batch_size=4, device="cpu", baselines=False)
    rep = evaluate(tiny_cub, settings=KeypointSettings(k=2), variants={"flip": {"flip": True}}, **kw)
    single = evaluate(tiny_cub, settings=KeypointSettings(k=2, flip=True), **kw)
    assert single["config"]["flip"] is True and rep["config"]["flip"] is False
    cols = ["KP1", "KP2", "avg", "recall"]
    pd.testing.assert_series_equal(rep["table"].set_index("method").loc["flip", cols],
                                   single["table"].set_index("method").loc["lmpnet", cols], check_names=False)


def test_landing_splits_each_rank_by_part_group(tiny_checkpoint, tiny_cub):
    """Where each keypoint rank lands: part-group shares sum to that rank's greedy PCK, misses to the rest."""
    kw = dict(split="all", weights=tiny_checkpoint, settings=KeypointSettings(k=3), workers=0, batch_size=4, device="cpu")
    rep = evaluate(tiny_cub, variants={"thr2": {"thr": 2.0}}, **kw)
    table, landing = rep["table"].set_index("method"), rep["landing"]
    assert list(landing.columns) == ["method", "rank", "head", "body", "wings", "tail", "legs", "miss"]
    assert len(landing) == 3 * table["avg"].notna().sum()  # every method and variant (not mean-landmark), k ranks each
    for _, row in landing.iterrows():
        pck = table.loc[row["method"], f"KP{row['rank']}"]
        assert row[["head", "body", "wings", "tail", "legs"]].sum() == pytest.approx(pck)
        assert row["miss"] == pytest.approx(100 - pck)
