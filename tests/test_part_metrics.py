"""Kp / NMI / ARI in ``lmp evaluate`` and box crops, on the tiny CUB-layout folder."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lmpcli.cli import app
from lmpcli.data import CUBDataset
from lmpcli.evaluate import evaluate
from lmpcli.landmarks import MEAN_LANDMARK, normalise_to_box, part_discovery_metrics
from lmpcli.part_metrics import DEFAULT_FIT_IMAGES, PART_COLUMNS
from lmpcli.settings import KeypointSettings

KW = {"settings": KeypointSettings(k=3), "workers": 0, "batch_size": 4, "device": "cpu"}


def test_evaluate_adds_part_columns_and_the_mean_landmark_row(tiny_cub, tiny_checkpoint):
    rep = evaluate(tiny_cub, split="test", weights=tiny_checkpoint, **KW)
    t = rep["table"].set_index("method")
    assert list(t.index) == ["lmpnet", "centre", "channel-mean", MEAN_LANDMARK]
    assert t.loc[["lmpnet", "centre", "channel-mean"], list(PART_COLUMNS)].notna().all().all()
    assert np.isnan(t.loc[MEAN_LANDMARK, "avg"]) and np.isnan(t.loc[MEAN_LANDMARK, "NMI"])
    # the tiny folder's parts sit at the same pixels on every image, so the mean landmark in box
    # coordinates is off by exactly the spread of the boxes: recompute it from the annotations
    fit, test = CUBDataset(tiny_cub, "train"), CUBDataset(tiny_cub, "test")
    seen = fit.visible.any(0)

    def split(ds):
        box = ds.table[["bx", "by", "bw", "bh"]].to_numpy()
        return np.zeros((len(ds), 0, 2)), normalise_to_box(ds.keypoints[:, seen], box), ds.visible[:, seen].numpy()

    assert t.loc[MEAN_LANDMARK, "Kp"] == pytest.approx(part_discovery_metrics(split(fit), split(test))["Kp"])
    assert rep["config"]["fit_images"] == 3 and rep["config"]["crop_to_box"] is False
    none = evaluate(tiny_cub, split="test", weights=tiny_checkpoint, fit_images=0, **KW)["table"]
    assert "Kp" not in none.columns and MEAN_LANDMARK not in set(none["method"])
    assert none.drop(columns="images_per_s").equals(
        rep["table"].iloc[:3].drop(columns=[*PART_COLUMNS, "images_per_s"]))


def test_crop_to_box_shifts_keypoints_and_sizes(tiny_cub, tiny_checkpoint):
    full, crop = CUBDataset(tiny_cub, "all"), CUBDataset(tiny_cub, "all", crop_to_box=True)
    a, b = full[0], crop[0]
    x, y, w, h = a["box"].tolist()
    assert b["size"].tolist() == [w, h] and b["box"].tolist() == [0, 0, w, h]
    assert (b["orig_keypoints"] - (a["orig_keypoints"] - a["box"][:2])).abs().max() < 1e-6
    rep = evaluate(tiny_cub, split="test", weights=tiny_checkpoint, crop_to_box=True, **KW)
    assert rep["config"]["crop_to_box"] is True
    centre = rep["table"].set_index("method").loc["centre"]
    # the centre baseline's first point is the crop's centre: known distances to the shifted parts
    test = CUBDataset(tiny_cub, "test", crop_to_box=True)
    sizes = np.stack([test[i]["size"].numpy() for i in range(len(test))])
    kps = np.stack([test[i]["orig_keypoints"].numpy() for i in range(len(test))])
    d = np.linalg.norm(kps - sizes[:, None] / 2, axis=-1)
    d[~test.visible.numpy()] = np.inf
    assert centre["KP1"] == pytest.approx(100 * (d.min(1) <= 0.1 * sizes.min(1)).mean())


def test_cli_reports_part_discovery_and_writes_it(tiny_cub, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval.csv"
    r = CliRunner().invoke(app, ["evaluate", "--data", str(tiny_cub), "--weights", str(tiny_checkpoint), "--k", "3",
                                 "--workers", "0", "--fit-images", "2", "--crop-to-box", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "part discovery" in r.output and MEAN_LANDMARK in r.output
    table = pd.read_csv(out)
    assert set(PART_COLUMNS) <= set(table.columns) and table["method"].iloc[-1] == MEAN_LANDMARK


def test_cli_fit_images_default_is_the_library_default():
    from lmpcli.cli.evaluate import evaluate as evaluate_command

    option = inspect.signature(evaluate_command).parameters["fit_images"].default
    assert option == DEFAULT_FIT_IMAGES == inspect.signature(evaluate).parameters["fit_images"].default


def test_fit_classes_choose_the_regressors_train_images(tiny_cub, tiny_checkpoint):
    """The class-held-out protocol: regressors fit on the seen classes' train images, the unseen scored."""
    same = evaluate(tiny_cub, split="test", weights=tiny_checkpoint, **KW)["config"]
    assert same["fit_images"] == 3 and same["fit_classes"] is None  # every train image: 2 of class 3, 1 of class 7
    rep = evaluate(tiny_cub, split="test", weights=tiny_checkpoint, classes=[7], fit_classes=[3], **KW)
    cfg = rep["config"]
    assert cfg["images"] == 2 and cfg["classes"] == [7]  # the test images of class 7 only
    assert cfg["fit_images"] == 2 and cfg["fit_classes"] == [3]  # the train images of class 3 only
    assert rep["table"].set_index("method").loc["lmpnet", "Kp"] >= 0
    r = CliRunner().invoke(app, ["evaluate", "--data", str(tiny_cub), "--weights", str(tiny_checkpoint), "--k", "3",
                                 "--classes", "7", "--fit-classes", "3", "--workers", "0", "--no-baselines"])
    assert r.exit_code == 0, r.output
    assert "regressors fit on 2 train images of classes 3" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["evaluate", "--data", str(tiny_cub), "--fit-classes", "three"])
    assert r.exit_code == 2 and "Traceback" not in r.output
