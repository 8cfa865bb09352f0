"""Named landmarks: predict-time frames, fit/apply round trip, the stored file, COCO input, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lmpcli.cli import app
from lmpcli.data import InputError
from lmpcli.named_landmarks import (
    CocoKeypointDataset,
    apply_named_landmarks,
    balanced_threshold,
    fit_landmark_prototypes,
    fit_named_landmarks,
    landmark_descriptors,
    load_landmarks,
    reference_boxes,
    save_landmarks,
)
from lmpcli.outputs import OutputError
from lmpcli.parts import centred_cells

run = CliRunner().invoke


def test_reference_boxes_known_answers():
    xy = torch.tensor([[[10.0, 20.0], [50.0, 100.0], [float("nan"), 0.0]],
                       [[10.0, 20.0], [11.0, 20.0], [float("nan")] * 2],
                       [[10.0, 20.0], [float("nan")] * 2, [float("nan")] * 2]])
    sizes = torch.tensor([[200.0, 100.0]] * 3)
    assert reference_boxes(xy, sizes, "image").tolist() == [[0, 0, 200, 100]] * 3
    boxes = reference_boxes(xy, sizes, "keypoints")
    assert boxes[0].tolist() == [10, 20, 40, 80]
    assert boxes[1].tolist() == [5.5, 15, 10, 10]  # sides widened to a tenth of the shorter image side
    assert boxes[2].tolist() == [0, 0, 200, 100]  # one keypoint: the whole image
    with pytest.raises(ValueError, match="normalisation"):
        reference_boxes(xy, sizes, "box")


@pytest.mark.parametrize("normalisation", ["image", "keypoints"])
def test_landmarks_that_follow_the_keypoints_are_recovered_in_pixels(normalisation):
    rng = np.random.default_rng(0)
    n = 60
    sizes = rng.uniform(200, 500, (n, 2))
    rel = rng.uniform(0.2, 0.8, (n, 3, 2))
    xy = rel * sizes[:, None]
    # landmark 0: the midpoint of keypoints 0 and 1; landmark 1: keypoint 2 shifted by a tenth of the frame
    frame = reference_boxes(xy, sizes, normalisation).numpy()
    marks = np.stack([(xy[:, 0] + xy[:, 1]) / 2, xy[:, 2] + 0.1 * frame[:, 2:]], 1)
    vis = np.ones((n, 2), bool)
    reg = fit_named_landmarks(xy, sizes, marks, vis, ["beak", "tail"], normalisation)
    np.testing.assert_allclose(apply_named_landmarks(reg, xy, sizes, normalisation), marks, atol=1e-6)


def test_landmarks_file_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    xy, sizes = rng.uniform(0, 100, (20, 2, 2)), np.full((20, 2), 100.0)
    reg = fit_named_landmarks(xy, sizes, rng.uniform(0, 100, (20, 3, 2)), np.ones((20, 3), bool), ["a", "b", "c"])
    path = save_landmarks(tmp_path / "lm.json", reg, {"method": "lmpnet", "k": 2, "normalisation": "image"})
    back, meta = load_landmarks(path)
    assert meta["k"] == 2 and back.names == ["a", "b", "c"]
    np.testing.assert_allclose(back.predict(xy / 100), reg.predict(xy / 100))
    with pytest.raises(OutputError, match="overwrite"):
        save_landmarks(path, reg, meta)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    for bad in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(InputError):
            load_landmarks(bad)


def _coco(tmp_path, n=4):
    names = ["beak", "eye", "tail"]
    images, anns = [], []
    for i in range(n):
        Image.new("RGB", (64 + i, 48), (i * 40, 90, 20)).save(tmp_path / f"b{i}.jpg")
        images.append({"id": i, "file_name": f"b{i}.jpg", "width": 64 + i, "height": 48})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [2, 3, 40, 30],
                     "keypoints": [10 + i, 12, 2, 20, 15, 1, 0, 0, 0]})
    path = tmp_path / "kp.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "bird", "keypoints": names}]}))
    return path


def test_coco_keypoint_dataset(tmp_path):
    ds = CocoKeypointDataset(_coco(tmp_path))
    assert len(ds) == 4 and ds.part_names == ["beak", "eye", "tail"]
    item = ds[1]
    assert item["orig_keypoints"][0].tolist() == [11, 12] and item["visible"].tolist() == [True, True, False]
    assert item["size"].tolist() == [65, 48] and item["box"].tolist() == [2, 3, 40, 30]
    (tmp_path / "b2.jpg").unlink()
    with pytest.raises(InputError, match="not found"):
        CocoKeypointDataset(tmp_path / "kp.json")


def test_cli_fit_landmarks_then_predict_named_landmarks(tmp_path, tiny_cub, tiny_checkpoint):
    lm = tmp_path / "lm.json"
    common = ["--weights", str(tiny_checkpoint), "--k", "3", "--workers", "0"]
    r = run(app, ["fit-landmarks", str(tiny_cub), "--out", str(lm), *common])
    assert r.exit_code == 0, r.output
    assert "3 labelled images" in r.output and "left out" in r.output  # tiny CUB: every 3rd part never visible
    r = run(app, ["fit-landmarks", str(tiny_cub), "--out", str(lm), *common])
    assert r.exit_code == 2 and "--overwrite" in r.output  # refused before any work
    out = tmp_path / "named.csv"
    images = sorted(str(p) for p in (tiny_cub / "images").rglob("*.jpg"))
    r = run(app, ["predict", *images, "--landmarks", str(lm), "--out", str(out), "--weights", str(tiny_checkpoint),
                  "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["image", "landmark", "x", "y"]
    assert set(table["landmark"]) == {"back", "beak", "breast", "crown", "left eye", "left leg", "nape", "right eye",
                                      "right wing", "tail"}
    assert len(table) == 10 * len(images)
    r = run(app, ["predict", images[0], "--landmarks", str(tmp_path / "nope.json"), "--weights",
                  str(tiny_checkpoint), "--workers", "0", "-q"])
    assert r.exit_code == 2 and "not found" in r.output  # refused before any work


def test_cli_fit_landmarks_from_coco(tmp_path, tiny_checkpoint):
    lm = tmp_path / "coco-lm.json"
    r = run(app, ["fit-landmarks", str(_coco(tmp_path)), "--out", str(lm), "--weights", str(tiny_checkpoint),
                  "--k", "2", "--workers", "0", "--normalisation", "keypoints", "-q"])
    assert r.exit_code == 0, r.output
    reg, meta = load_landmarks(lm)
    assert reg.names == ["beak", "eye"] and meta["normalisation"] == "keypoints" and meta["images"] == 4
    r = run(app, ["predict", str(tmp_path / "b0.jpg"), "--landmarks", str(lm), "--json", "--out", "-",
                  "--weights", str(tiny_checkpoint), "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.stdout)[0]["landmarks"]) == {"beak", "eye"}


def test_landmark_descriptors_sample_the_centred_cells_bilinearly():
    torch.manual_seed(0)
    f = torch.rand(2, 8, 4, 4)  # 4 x 4 maps of a 64-px input: stride 16, cell (i, j) centred at 16 * (i + 0.5)
    ref = centred_cells(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(2, 8, 4, 4)  # (N, C, h, w)
    pts = torch.tensor([[[24.0, 8.0], [32.0, 40.0]], [[56.0, 56.0], [0.0, 0.0]]])  # (x, y) input pixels
    d = landmark_descriptors(f, pts, (64, 64))
    torch.testing.assert_close(d[0, 0], ref[0, :, 0, 1])  # a cell centre: that cell
    mid = torch.nn.functional.normalize((ref[0, :, 2, 1] + ref[0, :, 2, 2]) / 2, dim=0)  # halfway along x
    torch.testing.assert_close(d[0, 1], mid)
    torch.testing.assert_close(d[1, 0], ref[1, :, 3, 3])
    torch.testing.assert_close(d[1, 1], ref[1, :, 0, 0])  # beyond the outer centres: the border cell
    raw = landmark_descriptors(f, pts, (64, 64), centred=False)
    torch.testing.assert_close(raw[0, 0], torch.nn.functional.normalize(f[0, :, 0, 1], dim=0))


def test_prototypes_find_each_landmark_where_its_pattern_is():
    """Landmark l is a fixed pattern placed at a random cell of each image over noise; the
    prototypes fit on 12 labelled images find it on 20 new ones, and a landmark whose pattern is
    missing from an image is reported absent."""
    gen = torch.Generator().manual_seed(1)
    c, h = 512, 7  # wide enough that noise cells are far from every prototype
    patterns = torch.nn.functional.normalize(torch.randn(3, c, generator=gen), dim=1) * 5

    def images(n, vis):
        f = torch.rand(n, c, h, h, generator=gen) * 0.2
        cells = torch.stack([torch.randperm(h * h, generator=gen)[:3] for _ in range(n)])  # distinct cells
        for i in range(n):
            for lm in range(3):
                if vis[i, lm]:
                    f[i, :, cells[i, lm] // h, cells[i, lm] % h] += patterns[lm].abs() + patterns[lm]
        xy = torch.stack([cells % h, cells // h], -1).float()  # (n, 3, 2) cells
        return f, (xy + 0.5) * 32  # 224-px input, stride 32

    vis = torch.ones(12, 3, dtype=torch.bool)
    vis[:3, 2] = False  # landmark 2 is not on three images: not averaged in, and it sets the threshold
    f, pts = images(12, vis)
    models = {rule: fit_landmark_prototypes(f, pts, vis, (224, 224), threshold=rule) for rule in ("median", "labels")}
    model = models["labels"]
    assert model.k == 3 and model.method == "kmeans-centred" and model.meta["fit_counts"] == [12, 12, 9]
    torch.testing.assert_close(models["median"].projection, model.projection)
    peaks = model.responses(f).flatten(2).amax(-1)  # (12, 3)
    assert peaks[:3, 2].max() < model.threshold[2] <= peaks[3:, 2].min()  # separates labelled from not
    assert model.threshold[:2].tolist() == models["median"].threshold[:2].tolist()  # labelled everywhere: median rule
    test_vis = torch.ones(20, 3, dtype=torch.bool)
    test_vis[0] = False  # no landmark on this image
    test, truth = images(20, test_vis)
    for m in models.values():
        xy, _, visible, _ = m.locate(test)
        assert visible[1:].all() and not visible[0].any()
        torch.testing.assert_close((xy[1:] + 0.5) * 32, truth[1:], atol=8.0, rtol=0)  # within a quarter cell
    with pytest.raises(ValueError, match="labelled on none"):
        fit_landmark_prototypes(f, pts, torch.zeros(12, 3, dtype=torch.bool), (224, 224))


def test_balanced_threshold_known_answer():
    peaks = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.2])
    labelled = torch.tensor([False, True, False, True, True])
    # t = 0.5: 2 of 3 labelled above, both unlabelled below (balanced 0.83); t = 0.2: 3 of 3 and 1 of 2 (0.75)
    assert balanced_threshold(peaks, labelled).item() == 0.5
    assert balanced_threshold(torch.tensor([0.25, 0.125, 0.5]), torch.tensor([True, False, True])).item() == 0.25


def test_prototype_landmarks_file_round_trip(tmp_path):
    f = torch.rand(4, 8, 2, 2)
    pts = torch.full((4, 2, 2), 16.0)
    model = fit_landmark_prototypes(f, pts, torch.ones(4, 2, dtype=torch.bool), (64, 64))
    path = save_landmarks(tmp_path / "p.json", model, {"method": "parts", "k": 2, "images": 4}, names=["beak", "tail"])
    back, meta = load_landmarks(path)
    assert meta["model"] == "prototypes" and meta["names"] == ["beak", "tail"]
    torch.testing.assert_close(back.projection, model.projection)
    torch.testing.assert_close(back.threshold, model.threshold)
    doc = json.loads(path.read_text())
    doc["names"] = ["beak"]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="names"):
        load_landmarks(tmp_path / "bad.json")


def test_cli_fit_prototype_landmarks_then_predict(tmp_path, tiny_cub, tiny_checkpoint):
    lm = tmp_path / "protos.json"
    r = run(app, ["fit-landmarks", str(tiny_cub), "--model", "prototypes", "--out", str(lm),
                  "--weights", str(tiny_checkpoint), "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    model, meta = load_landmarks(lm)
    assert meta["model"] == "prototypes" and model.k == len(meta["names"]) == 10  # tiny CUB: 10 parts ever labelled
    images = sorted(str(p) for p in (tiny_cub / "images").rglob("*.jpg"))
    out, vis = tmp_path / "named.csv", tmp_path / "vis"
    r = run(app, ["predict", *images, "--landmarks", str(lm), "--out", str(out), "--weights", str(tiny_checkpoint),
                  "--workers", "0", "--vis-dir", str(vis), "-q"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["image", "landmark", "x", "y"] and len(table) == 10 * len(images)
    drawn = np.asarray(Image.open(vis / Path(images[0]).name))  # the landmarks' legend is drawn over the image
    assert drawn.shape[:2] == np.asarray(Image.open(images[0])).shape[:2]
    assert np.abs(drawn[:40, :40].astype(int) - np.asarray(Image.open(images[0]).convert("RGB"))[:40, :40]).mean() > 5
    assert set(table["landmark"]) == set(meta["names"])
    r = run(app, ["predict", images[0], "--landmarks", str(lm), "--json", "--out", "-", "--weights",
                  str(tiny_checkpoint), "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    named = json.loads(r.stdout)[0]["landmarks"]
    assert list(named) == meta["names"]
    assert all(v is None or (len(v) == 2 and all(np.isfinite(v))) for v in named.values())
    r = run(app, ["fit-landmarks", str(tiny_cub), "--model", "nope", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2


def test_landmark_descriptors_with_the_mid_level_map_concatenate_each_map_centred():
    """With ``mid_channels`` a landmark's descriptor is the bilinear sample, at the point, of each
    map's centred cells (foreground chosen by the final map's energy), concatenated and normalised;
    a prototype model fitted on stacked maps reads them (mid_channels stored)."""
    from lmpcli.named_landmarks import fit_landmark_prototypes, landmark_descriptors
    from lmpcli.parts import centred_cells

    g = torch.Generator().manual_seed(2)
    final, mid = torch.rand(3, 12, 7, 7, generator=g), torch.rand(3, 5, 7, 7, generator=g)
    pts = torch.rand(3, 4, 2, generator=g) * 224  # input pixels of a 224-px input, 7 x 7 cells of 32 px
    got = landmark_descriptors(torch.cat([final, mid], 1), pts, (224, 224), mid_channels=5)
    energy = final.flatten(2).sum(1)
    cells = torch.nn.functional.normalize(torch.cat([centred_cells(final.flatten(2).transpose(1, 2), energy),
                                                     centred_cells(mid.flatten(2).transpose(1, 2), energy)], -1), dim=-1)
    grid = ((2 * (pts / 32 - 0.5) + 1) / 7 - 1)[:, :, None]  # cell centres at (i + 0.5) x 32 px
    want = torch.nn.functional.grid_sample(cells.transpose(1, 2).reshape(3, 17, 7, 7), grid, mode="bilinear",
                                           padding_mode="border", align_corners=False)[..., 0].transpose(1, 2)
    torch.testing.assert_close(got, torch.nn.functional.normalize(want, dim=-1))
    model = fit_landmark_prototypes(torch.cat([final, mid], 1), pts, torch.ones(3, 4, dtype=torch.bool), (224, 224),
                                    mid_channels=5)
    assert model.mid_channels == 5 and model.projection.shape == (4, 17)
    xy, _, _, _ = model.locate(torch.cat([final, mid], 1))
    assert xy.shape == (3, 4, 2)


def test_prototype_file_keeps_the_mid_level_channels(tmp_path):
    from lmpcli.named_landmarks import load_landmarks, save_landmarks
    from lmpcli.parts import PartModel

    pm = PartModel("kmeans-centred", torch.rand(2, 17), torch.zeros(2), torch.ones(2), meta={}, mid_channels=5)
    path = save_landmarks(tmp_path / "lm.json", pm, {"method": "parts", "k": 2}, names=["beak", "tail"])
    back, meta = load_landmarks(path)
    assert back.mid_channels == 5 and meta["names"] == ["beak", "tail"]
    old = json.loads(path.read_text())
    del old["prototypes"]["mid_channels"]  # a file written before section 38
    path.write_text(json.dumps(old))
    assert load_landmarks(path)[0].mid_channels == 0
