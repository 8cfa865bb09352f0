"""End to end on real bird photos with the shipped weights (skips where they are absent)."""

import math

import pandas as pd
from typer.testing import CliRunner

from lmpcli.cli import app
from lmpcli.evaluate import evaluate

from .conftest import CUB50, EXAMPLES, needs_cub50, needs_weights

runner = CliRunner()


@needs_weights
def test_predict_examples_with_shipped_weights(tmp_path):
    out, vis = tmp_path / "kps.csv", tmp_path / "vis"
    r = runner.invoke(app, ["predict", str(EXAMPLES), "--k", "5", "--out", str(out), "--vis-dir", str(vis)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    n_images = len(list(EXAMPLES.glob("*.jpg")))
    assert df["image"].nunique() == n_images
    assert df.groupby("image")["rank"].max().min() >= 3  # several distinct keypoints per bird
    assert len(list(vis.glob("*.jpg"))) == n_images
    assert df["score"].between(0, 1).all()


@needs_weights
@needs_cub50
def test_shipped_model_beats_chance_and_centre_on_real_test_images():
    report = evaluate(CUB50, split="test", limit=48, workers=0, batch_size=8, fit_images=48)
    t = report["table"].set_index("method")
    assert report["config"]["images"] == 48
    assert t.loc["lmpnet", "acc"] > 30  # 50 classes: chance is 2 %
    assert t.loc["lmpnet", "KP1"] > 50  # the first keypoint lands on the bird
    kp1 = report["landing"].set_index(["method", "rank"]).loc[("lmpnet", 1)]
    assert kp1["head"] > kp1[["body", "wings", "tail", "legs"]].max()  # ... and mostly on its head
    assert not math.isnan(t.loc["channel-mean", "avg"]) and math.isnan(t.loc["centre", "acc"])
