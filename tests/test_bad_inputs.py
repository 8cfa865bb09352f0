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


# ---------------------------------------------------------------- files the README promises to report and skip

def test_corrupt_truncated_empty_and_text_files_are_reported_and_skipped(photos, tiny_checkpoint, tmp_path):
    good = (photos / "a.jpg").read_bytes()
    (photos / "corrupt.jpg").write_bytes(good[:20] + b"\x00" * 300)
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.jpg").write_text("not an image")
    before = checksums(photos)
    out = tmp_path / "kps.csv"
    r = run("predict", photos, "--weights", tiny_checkpoint, "--out", out, "--workers", 0)
    assert r.exit_code == 3, r.output
    for name in ("corrupt.jpg", "truncated.jpg", "empty.png", "notes.jpg"):
        assert f"{name}:" in r.output
    assert "4 skipped" in r.output and "Traceback" not in r.output
    assert {Path(p).name for p in pd.read_csv(out)["image"]} == {"a.jpg", "b.png"}
    assert checksums(photos) == before


def test_a_missing_path_on_stdin_is_skipped_and_stdin_is_read_once(photos, tiny_checkpoint, tmp_path):
    lines = f"{photos / 'a.jpg'}\n{tmp_path / 'gone.jpg'}\n{photos / 'b.png'}\n"
    out = tmp_path / "kps.csv"
    r = run("predict", "-", "--weights", tiny_checkpoint, "--out", out, "--workers", 0, input=lines)
    assert r.exit_code == 3 and "gone.jpg" in r.output and "1 skipped" in r.output, r.output
    assert {Path(p).name for p in pd.read_csv(out)["image"]} == {"a.jpg", "b.png"}


def test_nothing_readable_is_an_error_and_writes_nothing(tmp_path, tiny_checkpoint):
    (tmp_path / "x.jpg").write_text("not an image")
    r = run("predict", tmp_path / "x.jpg", "--weights", tiny_checkpoint, "--out", tmp_path / "kps.csv", "--workers", 0)
    assert r.exit_code == 1 and "no image could be read" in r.output
    assert not (tmp_path / "kps.csv").exists()


def test_pickle_payload_as_weights_is_not_executed(photos, tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload(), protocol=2))
    r = run("predict", photos, "--weights", evil, "--workers", 0)
    assert r.exit_code == 1 and "cannot read checkpoint" in r.output and "Traceback" not in r.output
    assert not marker.exists()


# ---------------------------------------------------------------- 2. a training run is never replaced

@pytest.mark.parametrize("present", [("model.pt", "metrics.csv"), ("metrics.csv",), ("last.pt", "model.pt")])
def test_train_never_replaces_a_previous_run_without_resume_or_overwrite(present, tiny_cub, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in present:
        (run_dir / name).write_text(f"precious {name}")
    before = checksums(run_dir)
    r = run("train", tiny_cub, "--out", run_dir, "--epochs", 1, "--no-pretrained", "--image-size", 64,
            "--workers", 0, "-q")
    assert r.exit_code == 2, r.output
    assert "already holds a training run" in r.output and "--resume" in r.output and "--overwrite" in r.output
    assert checksums(run_dir) == before


def test_train_refuses_an_output_inside_its_data_and_resume_without_last(tiny_cub, tmp_path):
    before = checksums(tiny_cub)
    r = run("train", tiny_cub, "--out", tiny_cub / "runs", "--workers", 0)
    assert r.exit_code == 2 and "inside the training data" in r.output
    r = run("train", tiny_cub, "--out", tmp_path / "fresh", "--resume", "--workers", 0)
    assert r.exit_code == 2 and "nothing to resume" in r.output
    assert checksums(tiny_cub) == before


# ---------------------------------------------------------------- 3. and 6. outputs never write over inputs; checked first

@pytest.mark.parametrize("where", ["same", "parent"])
def test_vis_dir_holding_the_inputs_is_refused_even_with_overwrite(where, photos, tiny_checkpoint, tmp_path):
    before = checksums(photos)
    vis = photos if where == "same" else tmp_path
    r = run("predict", photos, "--vis-dir", vis, "--overwrite", "--weights", tiny_checkpoint,
            "--out", tmp_path / "kps.csv", "--workers", 0)
    assert r.exit_code == 2, r.output
    assert "holds input images" in r.output and "Traceback" not in r.output
    assert checksums(photos) == before and not (tmp_path / "kps.csv").exists()


def test_out_that_is_an_input_or_the_weights_is_refused_even_with_overwrite(photos, tiny_checkpoint, tmp_path):
    before = checksums(photos, tiny_checkpoint)
    r = run("predict", photos, "--out", photos / "a.jpg", "--overwrite", "--weights", tiny_checkpoint, "--workers", 0)
    assert r.exit_code == 2 and "is one of the inputs" in r.output
    r = run("predict", photos, "--out", tiny_checkpoint, "--overwrite", "--weights", tiny_checkpoint, "--workers", 0)
    assert r.exit_code == 2 and "is one of the inputs" in r.output
    r = run("visualize-filters", photos, "--out", photos / "b.png", "--overwrite", "--weights", tiny_checkpoint)
    assert r.exit_code == 2 and "is one of the inputs" in r.output
    r = run("predict", photos, "--out", tmp_path, "--overwrite", "--weights", tiny_checkpoint, "--workers", 0)
    assert r.exit_code == 2 and "is a folder" in r.output
    r = run("export", "--out", tiny_checkpoint, "--overwrite", "--weights", tiny_checkpoint)
    assert r.exit_code == 2 and "is one of the inputs" in r.output
    assert checksums(photos, tiny_checkpoint) == before


def test_clashing_or_unwritable_vis_dir_is_refused_before_inference(photos, tiny_checkpoint, tmp_path, monkeypatch):
    import lmpcli.predict

    def no_inference(*a, **k):
        raise AssertionError("inference ran before the outputs were checked")

    monkeypatch.setattr(lmpcli.predict, "predict_images", no_inference)
    vis = tmp_path / "vis"
    vis.mkdir()
    (vis / "b.jpg").write_text("an earlier annotated image")
    before = checksums(vis)
    out = tmp_path / "kps.csv"
    r = run("predict", photos, "--vis-dir", vis, "--weights", tiny_checkpoint, "--out", out, "--workers", 0)
    assert r.exit_code == 2 and "b.jpg exists; pass --overwrite" in r.output, r.output
    (tmp_path / "afile").write_text("")
    r = run("predict", photos, "--vis-dir", tmp_path / "afile" / "vis", "--weights", tiny_checkpoint, "--out", out)
    assert r.exit_code == 2 and "--vis-dir" in r.output and "Traceback" not in r.output
    assert checksums(vis) == before and not out.exists()


def test_repeated_image_names_get_their_own_annotated_files(tiny_checkpoint, tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / sub / "bird.jpg")
    r = run("predict", tmp_path / "x", tmp_path / "y", "--vis-dir", tmp_path / "vis", "--weights", tiny_checkpoint,
            "--out", tmp_path / "kps.csv", "--workers", 0)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["bird.jpg", "bird_2.jpg"]


# ---------------------------------------------------------------- 7. rough edges: one line, no traceback, fast

@pytest.mark.parametrize("args, message", [
    (["--device", "meta"], "unknown device 'meta'"),
    (["--device", "mps"], "mps"),
    (["--thr", "nan"], "--thr must be a finite number"),
    (["--thr", "0"], "--thr must be > 0"),
    (["--num-filters", "0"], "--num-filters must be >= 1"),
    (["--k", "1001"], "--k must be >= 1 and <= 1000"),
    (["--image-size", "100"], "multiple of 32"),
    (["--weights", "{text}"], "is not a PyTorch checkpoint"),
    (["--weights", "{missing}"], "checkpoint not found"),
    (["--heatmaps", "{tmp}/heat"], "--heatmaps needs --method occlusion-gbp"),
    (["--shard", "3/2"], "the shard number must be 0 to 1"),
    (["--shard", "half"], "--shard wants i/N"),
])
def test_bad_arguments_are_refused_with_one_line_and_exit_2(args, message, photos, tiny_checkpoint, tmp_path):
    (tmp_path / "notes.txt").write_text("these are not weights\n" * 20)
    fmt = {"text": tmp_path / "notes.txt", "missing": tmp_path / "missing.pt", "tmp": tmp_path}
    args = [a.format(**fmt) for a in args]
    if "--weights" not in args:
        args += ["--weights", str(tiny_checkpoint)]
    r = run("predict", photos, "--out", tmp_path / "kps.csv", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "kps.csv").exists()


@pytest.mark.parametrize("flag, message", [(["--shard", "0/2"], "--shard needs --out FILE"),
                                           (["--resume"], "--resume needs --out FILE")])
def test_shard_or_resume_onto_stdout_is_refused(flag, message, photos, tiny_checkpoint):
    r = run("predict", photos, "--weights", tiny_checkpoint, *flag)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_bad_calls_fail_before_torch_is_imported(photos, tmp_path):
    """Each refusal happens in the torch-free checks (so in well under a second, not after ~8 s)."""
    import subprocess
    import sys

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_text("x")
    fake = tmp_path / "fake.pt"  # looks like a checkpoint (a zip archive's magic) to the torch-free checks
    fake.write_bytes(b"PK\x03\x04" + bytes(60))
    (tmp_path / "k.shard-00000-of-00002.csv").write_text("image,rank,x,y,score\n")  # shard 1 of 2 missing
    calls = [["predict", str(photos), "--thr", "nan"], ["predict", str(photos), "--device", "meta"],
             ["predict", str(photos), "--weights", str(photos / "a.jpg")], ["predict", str(tmp_path / "missing")],
             ["predict", str(photos), "--vis-dir", str(photos), "--overwrite"],
             ["evaluate", "--data", str(tmp_path / "nowhere")], ["evaluate", "--data", str(photos), "--split", "val"],
             ["train", str(photos), "--out", str(tmp_path / "run")], ["train", str(photos), "--lr", "nan"],
             ["visualize-filters", str(photos), "--network", "other"],
             ["fit-parts", str(fake), "--data", str(photos), "--out", str(fake), "--overwrite"],
             ["fit-parts", str(fake), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "new.pt")],
             ["fit-parts", str(photos / "a.jpg"), "--data", str(photos), "--out", str(tmp_path / "new.pt")],
             ["fit-parts", str(fake), "--data", str(photos), "--out", str(tmp_path / "new.pt"), "--maps", "final+mid",
              "--method", "nmf"],
             ["visualize-parts", str(photos), "--device", "meta"],
             ["fit-landmarks", str(tmp_path / "missing.json"), "--out", str(tmp_path / "lm.json")],
             ["fit-landmarks", str(photos), "--out", str(tmp_path / "lm.json"), "--normalisation", "box"],
             ["fit-landmarks", str(fake), "--out", str(fake), "--overwrite"],
             ["predict", str(photos), "--landmarks", str(tmp_path / "missing.json")],
             ["predict", str(photos), "--backend", "tvm"], ["predict", str(photos), "--method", "sift"],
             ["evaluate", "--data", str(photos), "--method", "lmpnet,sift"],
             ["merge-shards", str(tmp_path / "kps.csv")], ["merge-shards", str(tmp_path / "nowhere" / "kps.csv")],
             ["merge-shards", str(tmp_path / "k.csv")],
             ["predict", str(photos), "--shard", "0/2"], ["predict", str(photos), "--resume"],
             ["predict", str(photos), "--shard", "2/2", "--out", str(tmp_path / "s.csv")]]
    code = ("import json, sys\nfrom typer.testing import CliRunner\nfrom lmpcli.cli import app\n"
            f"codes = [CliRunner().invoke(app, c).exit_code for c in {calls!r}]\n"
            "print(json.dumps([codes, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent,
                         check=True)
    codes, torch_imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert codes == [2] * len(calls) and not torch_imported


def test_checkpoint_whose_class_names_do_not_match_its_classifier_is_a_clear_error(photos, tiny_checkpoint, tmp_path):
    import torch

    obj = torch.load(tiny_checkpoint, weights_only=True)
    obj["class_names"] = ["a", "b"]  # the classifier has 3 outputs
    bad = tmp_path / "bad.pt"
    torch.save(obj, bad)
    r = run("predict", photos, "--weights", bad, "--out", tmp_path / "kps.csv", "--workers", 0)
    assert r.exit_code == 1 and "2 class names" in r.output and "3 classes" in r.output, r.output
    assert "Traceback" not in r.output


def test_k_above_what_the_method_can_return_is_reported(photos, tiny_checkpoint, tmp_path):
    out = tmp_path / "kps.csv"
    r = run("predict", photos, "--k", 1000, "--weights", tiny_checkpoint, "--out", out, "--workers", 0)
    assert r.exit_code == 0, r.output
    assert "2 of 2 images have fewer than 1000 keypoints" in r.output
    assert pd.read_csv(out).groupby("image").size().max() < 1000


# ---------------------------------------------------------------- 9. skipped inputs show in the exit status

def test_exit_status_tells_a_partial_run_from_a_full_one(photos, tiny_checkpoint, tmp_path):
    r = run("predict", photos, "--weights", tiny_checkpoint, "--out", tmp_path / "full.csv", "--workers", 0)
    assert r.exit_code == 0, r.output
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    r = run("predict", photos, "--weights", tiny_checkpoint, "--out", tmp_path / "partial.csv", "--workers", 0)
    assert r.exit_code == 3 and "1 skipped" in r.output
    assert len(pd.read_csv(tmp_path / "partial.csv")) == len(pd.read_csv(tmp_path / "full.csv"))
