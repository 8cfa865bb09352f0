"""Full-scale filter visualisation (Sec. 3.2, Fig. 4) and feature-map entropy (Fig. 6)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lmpcli.checkpoint import load_model, save_checkpoint
from lmpcli.data import ImagePathDataset, collate_skip_errors, eval_transform
from lmpcli.filters import (
    HEADER_H, MARGIN_W, PAD, TITLE_H, GridSelection, choose_grid, collect_filter_peaks, rank_filters,
    render_filter_grid, resolve_image_paths, sample_evenly, tile_origin, visualize_filters,
)
from lmpcli.metrics import feature_map_entropy
from lmpcli.model import LMPNetConfig, LMPNetPair
from lmpcli.outputs import OutputError
from lmpcli.sparsity import mean_feature_map_entropy, split_entropy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Untrained 64-px pair with replica (2x2 feature maps, C=1280)."""
    torch.manual_seed(0)
    model = LMPNetPair(LMPNetConfig(image_size=64, num_classes=3, replica=True), pretrained=False)
    path = tmp_path_factory.mktemp("filters_ckpt") / "tiny.pt"
    save_checkpoint(path, model, ["a", "b", "c"])
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five synthetic PNGs of different sizes, each with a bright square in a different place."""
    root = tmp_path_factory.mktemp("filters_images")
    rng = np.random.default_rng(1)
    for i in range(5):
        w, h = 64 + 16 * i, 80 - 4 * i
        img = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
        x, y = (i * 13) % (w - 20), (i * 7) % (h - 20)
        img[y:y + 20, x:x + 20] = (250, 40 * i, 20)
        Image.fromarray(img).save(root / f"img{i}.png")
    return root


# ---------------------------------------------------------------- ranking and sampling


def test_rank_filters_by_max_over_images():
    peaks = torch.tensor([[1.0, 5.0, 0.0, 3.0],
                          [2.0, 1.0, 0.0, 4.0]])  # max per filter: 2, 5, 0, 4
    assert rank_filters(peaks).tolist() == [1, 3, 0, 2]
    assert rank_filters(torch.tensor([[1.0, 1.0, 2.0]])).tolist() == [2, 0, 1]  # ties: lower id first


def test_sample_evenly_includes_both_ends():
    order = torch.arange(10) * 10
    assert sample_evenly(order, 4).tolist() == [0, 30, 60, 90]  # positions round(linspace(0, 9, 4))
    assert sample_evenly(order, 2).tolist() == [0, 90]
    assert sample_evenly(order, 1).tolist() == [0]
    assert sample_evenly(order, 10).tolist() == order.tolist()
    assert sample_evenly(order, 50).tolist() == order.tolist()
    assert sample_evenly(torch.tensor([7, 3, 5]), 2).tolist() == [7, 5]
    with pytest.raises(ValueError):
        sample_evenly(order, 0)


def test_choose_grid_even_mode_known_answer():
    peaks = torch.tensor([[0.0, 9.0, 1.0],
                          [3.0, 2.0, 1.5],
                          [1.0, 4.0, 0.5],
                          [2.0, 6.0, 0.0],
                          [4.0, 1.0, 0.2]])  # filter max: 4, 9, 1.5 -> ranking 1, 0, 2
    sel = choose_grid(peaks, n_filters=2, n_rows=3)
    assert sel.mode == "even"
    assert sel.filters.tolist() == [1, 2]  # strongest and weakest
    assert sel.strength.tolist() == [9.0, 1.5]
    assert sel.rank.tolist() == [0, 2, 4]
    # filter 1 ranks images 0 (9), 3 (6), 2 (4), 1 (2), 4 (1); filter 2 ranks 1, 0, 2, 4, 3
    assert sel.rows.tolist() == [[0, 1], [2, 2], [4, 3]]
    assert sel.values.tolist() == [[9.0, 1.5], [4.0, 0.5], [1.0, 0.0]]


def test_choose_grid_explicit_filters_top_images():
    peaks = torch.tensor([[0.0, 9.0, 1.0],
                          [3.0, 2.0, 1.5],
                          [1.0, 4.0, 0.5]])
    sel = choose_grid(peaks, n_rows=2, filters=[2, 0])
    assert sel.mode == "top"
    assert sel.filters.tolist() == [2, 0]  # given order kept
    assert sel.rank.tolist() == [0, 1]
    assert sel.rows.tolist() == [[1, 1], [0, 2]]
    with pytest.raises(ValueError, match="out of range"):
        choose_grid(peaks, filters=[3])


# ---------------------------------------------------------------- peaks and grid on a tiny model


def _loader(model, paths):
    cfg = model.config
    ds = ImagePathDataset(paths, eval_transform(cfg.image_size, cfg.mean, cfg.std))
    return torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_skip_errors)


@pytest.fixture(scope="module")
def model_stats(checkpoint, images):
    model, _ = load_model(checkpoint)
    return model, collect_filter_peaks(model, _loader(model, resolve_image_paths(images)), "main")


def test_collect_filter_peaks_matches_a_direct_forward(model_stats, images):
    model, stats = model_stats
    paths = resolve_image_paths(images)
    assert stats.peaks.shape == (5, 1280) and stats.cells.shape == (5, 1280)
    assert stats.paths == paths and stats.map_size == (2, 2) and stats.errors == []
    batch = collate_skip_errors([ImagePathDataset(paths[4:], eval_transform(64, model.config.mean,
                                                                            model.config.std))[0]])
    with torch.inference_mode():
        _, features = model.main(batch["image"])
    peak, cell = features.flatten(-2).max(-1)
    torch.testing.assert_close(stats.peaks[4], peak[0], rtol=1e-4, atol=1e-4)  # second batch
    xy = stats.cell_xy()[4]
    assert torch.equal(xy[:, 1] * 2 + xy[:, 0], stats.cells[4].float())
    assert torch.equal(stats.peaks[4].gt(0), stats.peaks[4].gt(0) & (stats.cells[4] == cell[0]))


def test_collect_filter_peaks_replica_and_unreadable(model_stats, images, tmp_path):
    model, stats = model_stats
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    rep = collect_filter_peaks(model, _loader(model, [*resolve_image_paths(images), str(bad)]), "replica")
    assert rep.peaks.shape == (5, 1280) and rep.network == "replica"
    assert [p for p, _ in rep.errors] == [str(bad)]
    assert not torch.equal(rep.peaks, stats.peaks)  # other weights, masked input


def _tile(grid, row, col, tile):
    y, x = tile_origin(row, col, tile)
    return grid[y:y + tile, x:x + tile].astype(int)


def test_grid_size_and_column_order(model_stats):
    model, stats = model_stats
    sel = choose_grid(stats.peaks, n_filters=3, n_rows=2)
    assert sel.filters.tolist() == sample_evenly(rank_filters(stats.peaks), 3).tolist()
    assert sel.strength[0] == stats.peaks.max() and (sel.strength.diff() <= 0).all()  # left to right: weaker
    assert (sel.values.diff(dim=0) <= 0).all()  # top to bottom: weaker
    tile = 48
    grid = render_filter_grid(model, stats, sel, tile=tile)
    assert grid.dtype == np.uint8
    assert grid.shape == (TITLE_H + HEADER_H + 2 * (tile + PAD) + PAD, MARGIN_W + 3 * (tile + PAD) + PAD, 3)
    # the same columns in reverse order: column j of one grid is column 2 - j of the other
    rev = GridSelection(sel.filters.flip(0), sel.strength.flip(0), sel.rows.flip(1), sel.rank,
                        sel.values.flip(1), sel.mode)
    flipped = render_filter_grid(model, stats, rev, tile=tile)
    for i in range(2):
        for j in range(3):
            assert np.abs(_tile(grid, i, j, tile) - _tile(flipped, i, 2 - j, tile)).mean() < 0.5, (i, j)
    strongest = _tile(grid, 0, 0, tile)
    assert np.abs(strongest - _tile(flipped, 0, 0, tile)).mean() > 1  # the columns do differ


def test_visualize_filters_writes_png_and_refuses_overwrite(checkpoint, images, tmp_path):
    out = tmp_path / "grid.png"
    s = visualize_filters([str(images)], weights=checkpoint, out=out, n_filters=4, n_rows=3, tile=40,
                          device="cpu", workers=0)
    img = cv2.imread(str(out))
    assert img.shape[:2] == tuple(s["size"]) == (TITLE_H + HEADER_H + 3 * 42 + PAD, MARGIN_W + 4 * 42 + PAD)
    assert s["images"] == 5 and s["mode"] == "even" and s["rank"] == [1, 3, 5]
    assert s["filter_max"] == sorted(s["filter_max"], reverse=True)
    assert len(s["tiles"]) == 3 and len(s["tiles"][0]) == 4
    before = out.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        visualize_filters([str(images)], weights=checkpoint, out=out, workers=0, device="cpu")
    assert out.read_bytes() == before
    s = visualize_filters([str(images)], weights=checkpoint, out=out, filters=[7, 3], n_rows=2, tile=40,
                          network="replica", overwrite=True, device="cpu", workers=0)
    assert s["columns"] == [7, 3] and s["mode"] == "top" and s["network"] == "replica"
    with pytest.raises(OutputError, match="image file"):
        visualize_filters([str(images)], weights=checkpoint, out=tmp_path / "grid.csv", workers=0)


def test_visualize_filters_replica_missing(images, tmp_path):
    model = LMPNetPair(LMPNetConfig(image_size=64, num_classes=2, replica=False), pretrained=False)
    ckpt = tmp_path / "norep.pt"
    save_checkpoint(ckpt, model, ["a", "b"])
    with pytest.raises(ValueError, match="no replica"):
        visualize_filters([str(images)], weights=ckpt, out=tmp_path / "g.png", network="replica",
                          device="cpu", workers=0)


def test_cub_split_paths(tiny_cub):
    paths = resolve_image_paths(tiny_cub, "test")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["img_3.jpg", "img_5.jpg", "img_6.jpg"]
    assert len(resolve_image_paths(tiny_cub, "train", limit=2)) == 2
    assert len(resolve_image_paths(tiny_cub, "all", classes=[7])) == 3


# ---------------------------------------------------------------- entropy (Fig. 6)


def test_feature_map_entropy_uniform_and_one_hot():
    maps = torch.zeros(1, 2, 3, 4)
    maps[0, 0] = 2.5  # uniform
    maps[0, 1, 1, 2] = 7.0  # one-hot
    ent = feature_map_entropy(maps)
    torch.testing.assert_close(ent, torch.tensor([[math.log(12), 0.0]]), atol=1e-5, rtol=0)


class _FixedMaps(nn.Module):
    """Stand-in pair whose main network returns hand-made maps: filter 0 uniform, filter 1 one-hot."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.replica = None

    def main(self, images):
        b = images.shape[0]
        maps = torch.zeros(b, 3, 2, 2)
        maps[:, 0] = 1.0  # uniform, peak 1
        maps[:, 1, 0, 1] = 5.0  # one-hot, peak 5
        # filter 2 all zero: counted as uniform
        return None, maps


def test_mean_feature_map_entropy_known_answer():
    loader = [torch.zeros(2, 3, 8, 8), torch.zeros(1, 3, 8, 8)]
    r = mean_feature_map_entropy(_FixedMaps(), loader, "main", "cpu", top_m=1)
    assert r["images"] == 3 and r["filters"] == 3 and r["map_size"] == (2, 2) and r["top_m"] == 1
    assert r["all_filters"] == pytest.approx(2 * math.log(4) / 3, abs=1e-5)
    assert r["top1_filters"] == pytest.approx(0.0, abs=1e-5)  # the strongest filter is the one-hot one
    assert r["uniform_map"] == pytest.approx(math.log(4))
    assert r["dead_fraction"] == pytest.approx(1 / 3)
    assert r["active_filters"] == pytest.approx(math.log(4) / 2, abs=1e-5)  # uniform and one-hot, the dead one left out
    no_top = mean_feature_map_entropy(_FixedMaps(), loader, device="cpu")
    assert no_top["top_m"] is None and not any(key.startswith("top") and key != "top_m" for key in no_top)


def test_split_entropy_on_images(checkpoint, images):
    r = split_entropy([str(images)], weights=checkpoint, top_m=16, device="cpu", workers=0)
    assert r["images"] == 5 and r["top_m"] == 16
    assert 0 <= r["top16_filters"] <= r["uniform_map"] + 1e-6 and 0 <= r["all_filters"] <= r["uniform_map"] + 1e-6
