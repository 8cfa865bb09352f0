"""Every bad input of issue 23 and of the README's promises, generated here: the message, the exit
status (docs/robustness.md: 0 all processed, 1 error, 2 refused before any work, 3 finished with
skipped inputs), the outputs, and that no input changed (checksums before and after)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from lmpcli.cli import app
from lmpcli.data.io import MAX_PIXELS, decode_image, load_rgb

runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def checksums(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders), by path."""
    files = [f for r in roots for f in ([r] if r.is_file() else sorted(r.rglob("*"))) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture
def photos(tmp_path) -> Path:
    """Two ordinary photos."""
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(d / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(d / "b.png")
    return d


@pytest.fixture(scope="module")
def bomb_bytes(tmp_path_factory) -> bytes:
    """A 1-bit PNG just above the pixel limit: 30 KB on disk, 250 megapixels decoded."""
    side = int(MAX_PIXELS ** 0.5) + 1
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (side, side)).save(path)
    return path.read_bytes()


# ---------------------------------------------------------------- 1. one huge image aborts the run

def test_image_above_pixel_limit_is_skipped_with_a_reason_and_the_rest_processed(photos, bomb_bytes, tiny_checkpoint,
                                                                                tmp_path):
    (photos / "huge.png").write_bytes(bomb_bytes)
    before = checksums(photos)
    out = tmp_path / "kps.csv"
    r = run("predict", photos, "--weights", tiny_checkpoint, "--out", out, "--workers", 0)
    assert r.exit_code == 3, r.output
    assert "huge.png" in r.output and "megapixels" in r.output and "Traceback" not in r.output
    assert {Path(p).name for p in pd.read_csv(out)["image"]} == {"a.jpg", "b.png"}
    assert checksums(photos) == before


def test_pixel_limit_is_checked_before_decoding(bomb_bytes, tmp_path):
    (tmp_path / "huge.png").write_bytes(bomb_bytes)
    with pytest.raises(OSError, match="megapixels"):
        load_rgb(tmp_path / "huge.png")
    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    with pytest.raises(OSError, match="limit of 0.001 megapixels"):
        decode_image(tmp_path / "small.png", max_pixels=1000)


# ---------------------------------------------------------------- 4. 16-bit and float images

def _gradient(h: int = 48, w: int = 64) -> np.ndarray:
    return np.tile(np.linspace(0.0, 1.0, w), (h, 1))  # (H, W) in [0, 1], left black, right white


@pytest.mark.parametrize("name, make", [
    ("g16.png", lambda g: Image.fromarray((g * 65535).round().astype(np.uint16))),
    ("g16.tif", lambda g: Image.fromarray((g * 65535).round().astype(np.uint16))),
    ("f32.tif", lambda g: Image.fromarray(g.astype(np.float32))),
])
def test_16bit_and_float_images_are_scaled_to_8_bits(name, make, tmp_path):
    g = _gradient()
    make(g).save(tmp_path / name)
    rgb = np.asarray(load_rgb(tmp_path / name)).astype(float)
    assert rgb.shape == (48, 64, 3)
    expected = g * 255  # full range of the type (16 bits) or [0, 1] (float) -> [0, 255]
    assert np.abs(rgb[..., 0] - expected).max() <= 1.0
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_float_image_outside_unit_range_is_stretched_and_nan_is_black(tmp_path):
    g = _gradient() * 1000.0 - 200.0
    g[0, 0] = np.nan
    Image.fromarray(g.astype(np.float32)).save(tmp_path / "f.tif")
    rgb = np.asarray(load_rgb(tmp_path / "f.tif"))[..., 0].astype(float)
    assert rgb[0, 0] == 0 and rgb[1, 0] == 0 and rgb[1, -1] == 255
    assert abs(rgb[1, 32] - 255 * 32 / 63) <= 1.0


def test_16bit_image_gives_keypoints_on_what_is_in_it(tiny_checkpoint, tmp_path):
    g = _gradient()
    Image.fromarray((g * 65535).round().astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray((g * 255).round().astype(np.uint8)).save(tmp_path / "g8.png")
    out = tmp_path / "kps.json"
    r = run("predict", tmp_path / "g16.png", tmp_path / "g8.png", "--weights", tiny_checkpoint, "--out", out,
            "--workers", 0)
    assert r.exit_code == 0, r.output
    a, b = json.loads(out.read_text())
    assert a["keypoints"] == b["keypoints"] and a["category"] == b["category"]


# ---------------------------------------------------------------- 5. EXIF orientation

def _oriented_jpeg(path: Path, orientation: int, w: int = 60, h: int = 40, mark: tuple[int, int] = (50, 5)) -> None:
    """A stored (w x h) JPEG, black with a white 5x5 block at stored ``mark`` (x, y), tagged ``orientation``."""
    a = np.zeros((h, w, 3), np.uint8)
    x, y = mark
    a[y - 2: y + 3, x - 2: x + 3] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, exif=exif.tobytes(), quality=95)


def _displayed(orientation: int, x: int, y: int, w: int, h: int) -> tuple[int, int]:
    """Where stored pixel (x, y) of a (w x h) image is shown, from the EXIF 2.3 definition of the tag
    (the row/column order each value names), written out independently of PIL."""
    return {1: (x, y), 2: (w - 1 - x, y), 3: (w - 1 - x, h - 1 - y), 4: (x, h - 1 - y),
            5: (y, x), 6: (h - 1 - y, x), 7: (h - 1 - y, w - 1 - x), 8: (y, w - 1 - x)}[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation, tmp_path):
    _oriented_jpeg(tmp_path / "o.jpg", orientation)
    d = decode_image(tmp_path / "o.jpg")
    a = np.asarray(d.image)[..., 0]
    assert d.orientation == orientation
    assert d.size == ((40, 60) if orientation >= 5 else (60, 40)) == d.image.size
    ys, xs = np.nonzero(a > 128)
    assert (round(xs.mean()), round(ys.mean())) == _displayed(orientation, 50, 5, 60, 40)


def test_predict_reports_coordinates_in_the_displayed_frame(tiny_checkpoint, tmp_path):
    _oriented_jpeg(tmp_path / "phone.jpg", 6)  # stored 60 x 40, shown 40 x 60
    before = checksums(tmp_path / "phone.jpg")
    out = tmp_path / "kps.json"
    r = run("predict", tmp_path / "phone.jpg", "--method", "centre", "--k", 1, "--weights", tiny_checkpoint,
            "--out", out, "--workers", 0, "--vis-dir", tmp_path / "vis")
    assert r.exit_code == 0, r.output
    (rec,) = json.loads(out.read_text())
    assert (rec["width"], rec["height"], rec["exif_orientation"]) == (40, 60, 6)
    assert rec["keypoints"][:2] == [20.0, 30.0]  # the centre of the displayed frame
    assert Image.open(tmp_path / "vis" / "phone.jpg").size == (40, 60)
    assert checksums(tmp_path / "phone.jpg") == before


# ---------------------------------------------------------------- 8. memory grows with the network input only

def test_large_jpeg_is_reduced_while_decoding_to_what_the_network_needs(tmp_path):
    Image.new("RGB", (4000, 3600), (90, 140, 60)).save(tmp_path / "big.jpg")
    d = decode_image(tmp_path / "big.jpg", min_side=448)
    assert d.size == (4000, 3600)  # the original frame, for the coordinates
    assert d.image.size == (500, 450)  # JPEG's 1/8 scale: the largest reduction keeping both sides >= 448
    assert decode_image(tmp_path / "big.jpg", min_side=460).image.size == (1000, 900)  # 1/4
    png = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (90, 140, 60)).save(png)
    d = decode_image(png, min_side=448)
    assert d.size == (2000, 1000) and d.image.size == (1000, 500)  # PIL's reduce: integer factor 2


def test_predict_on_a_large_jpeg_gives_full_resolution_coordinates(tiny_checkpoint, tmp_path):
    Image.new("RGB", (4000, 3600), (90, 140, 60)).save(tmp_path / "big.jpg")
    out = tmp_path / "kps.json"
    r = run("predict", tmp_path / "big.jpg", "--method", "centre", "--k", 1, "--weights", tiny_checkpoint,
            "--out", out, "--workers", 0)
    assert r.exit_code == 0, r.output
    (rec,) = json.loads(out.read_text())
    assert (rec["width"], rec["height"]) == (4000, 3600) and rec["keypoints"][:2] == [2000.0, 1800.0]
