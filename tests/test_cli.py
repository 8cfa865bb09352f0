"""The CLI through typer's CliRunner: outputs, bad input, overwrite protection, atomic writes."""

import json
import math

import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lmpcli.cli import app


runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def messy_folder(tmp_path):
    """A corrupt JPEG, a text file, a grayscale JPEG and an RGBA PNG."""
    d = tmp_path / "imgs"
    d.mkdir()
    good = Image.new("RGB", (90, 60), (30, 120, 200))
    good.save(d / "ok.jpg")
    (d / "corrupt.jpg").write_bytes((d / "ok.jpg").read_bytes()[:200])
    (d / "notes.txt").write_text("not an image")
    good.convert("L").save(d / "gray.jpg")
    Image.new("RGBA", (50, 70), (255, 0, 0, 128)).save(d / "alpha.png")
    return d


def test_predict_reports_bad_files_and_processes_the_rest(messy_folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "kps.csv"
    r = run("predict", messy_folder / "corrupt.jpg", messy_folder / "notes.txt", messy_folder,
            "--weights", tiny_checkpoint, "--out", out, "--workers", 0)
    assert r.exit_code == 3, r.output  # finished with skipped inputs
    assert "corrupt.jpg" in r.output and "notes.txt" in r.output and "skipped" in r.output
    df = pd.read_csv(out)
    assert list(df.columns) == ["image", "rank", "x", "y", "score"]
    assert {p.split("/")[-1] for p in df["image"]} == {"ok.jpg", "gray.jpg", "alpha.png"}
    # coordinates are in original-image pixels
    assert (df["x"] >= 0).all() and (df.loc[df["image"].str.endswith("alpha.png"), "y"] <= 70).all()


@pytest.mark.parametrize("args, message, code", [  # 2: refused before any work, 1: failed later
    (["predict", "missing_dir"], "no such file or folder", 2),
    (["predict", "{empty}"], "no images", 2),
    (["predict", "{img}", "--weights", "missing.pt"], "checkpoint not found", 2),
    (["predict", "{img}", "--weights", "{foreign}"], "not an lmp checkpoint", 1),
    (["predict", "{img}", "--out", "{afile}/x.csv"], "cannot create folder", 2),
    (["predict", "{img}", "--output-stride", "8"], "output stride must be 16 or 32", 2),
    (["predict", "{img}", "--image-size", "100"], "multiple of 32", 2),
    (["predict", "{img}", "--device", "cuda:99" if torch.cuda.is_available() else "cuda"], "CUDA", 1),
])
def test_bad_input_is_one_line_error(args, message, code, messy_folder, tiny_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    (tmp_path / "afile").write_text("")
    fmt = {"empty": tmp_path / "empty", "img": messy_folder / "ok.jpg", "foreign": foreign, "afile": tmp_path / "afile"}
    args = [a.format(**fmt) for a in args]
    if "--weights" not in args:
        args += ["--weights", str(tiny_checkpoint)]
    r = run(*args, "--workers", 0)
    assert r.exit_code == code
    assert message in r.output
    assert "Traceback" not in r.output


def test_existing_output_needs_overwrite_and_interrupted_run_leaves_no_file(messy_folder, tiny_checkpoint, tmp_path,
                                                                             monkeypatch):
    out = tmp_path / "kps.csv"
    out.write_text("precious\n")
    r = run("predict", messy_folder / "ok.jpg", "--weights", tiny_checkpoint, "--out", out, "--workers", 0)
    assert r.exit_code == 2 and "--overwrite" in r.output and out.read_text() == "precious\n"
    r = run("predict", messy_folder / "ok.jpg", "--weights", tiny_checkpoint, "--out", out, "--workers", 0,
            "--overwrite")
    assert r.exit_code == 0 and out.read_text().startswith("image,rank")

    import lmpcli.predict as predict_mod

    real = predict_mod.predict_images

    def interrupted(*a, **kw):
        for i, item in enumerate(real(*a, **kw)):
            yield item
            raise KeyboardInterrupt

    monkeypatch.setattr(predict_mod, "predict_images", interrupted)
    fresh = tmp_path / "fresh.csv"
    r = run("predict", messy_folder, "--weights", tiny_checkpoint, "--out", fresh, "--workers", 0)
    assert r.exit_code == 130 and not fresh.exists()
    assert not list(tmp_path.glob(".fresh.csv*"))  # no temporary leftovers


def test_predict_exits_quietly_when_the_reader_of_stdout_goes_away(messy_folder, tiny_checkpoint):
    """``lmp predict ... | head``: a closed pipe ends the run with 141 (128 + SIGPIPE), no error message."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "lmpcli", "predict", messy_folder / "ok.jpg", "--weights",
                             tiny_checkpoint, "--out", "-", "--workers", "0", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first row is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr
    assert "error" not in stderr.lower() and "Traceback" not in stderr


def test_stdin_paths_and_json(messy_folder, tiny_checkpoint, tmp_path):
    paths = f"{messy_folder / 'ok.jpg'}\n{messy_folder / 'gray.jpg'}\n"
    r = run("predict", "-", "--weights", tiny_checkpoint, "--out", "-", "--workers", 0, input=paths)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "image,rank,x,y,score"
    out = tmp_path / "kps.json"
    r = run("predict", messy_folder / "ok.jpg", "--weights", tiny_checkpoint, "--json", "--out", out, "--workers", 0,
            "--gate", 0.2, "--flip")
    rec = json.loads(out.read_text())[0]
    assert rec["category"] in ["a", "b", "c"] and 0 <= rec["score"] <= 1
    assert len(rec["keypoints"]) == 3 * rec["num_keypoints"] and rec["num_keypoints"] >= 1


def test_predict_with_an_ensemble_of_checkpoints(messy_folder, tiny_checkpoint, tmp_path):
    """Repeated --weights fuse the checkpoints' proposals (section 27); other methods refuse."""
    ok = messy_folder / "ok.jpg"
    r = run("predict", ok, "--weights", tiny_checkpoint, "--weights", tiny_checkpoint, "--out", "-", "--workers", 0)
    assert r.exit_code == 0, r.output
    rows = r.stdout.splitlines()
    assert rows[0] == "image,rank,x,y,score" and len(rows) >= 2
    single = run("predict", ok, "--weights", tiny_checkpoint, "--out", "-", "--workers", 0).stdout.splitlines()
    assert [row.split(",")[1] for row in rows] == [row.split(",")[1] for row in single]  # same ranks found
    r = run("predict", ok, "--weights", tiny_checkpoint, "--weights", tiny_checkpoint, "--method", "cam",
            "--out", "-", "--workers", 0)
    assert r.exit_code == 1 and "lmpnet method only" in r.output and "Traceback" not in r.output


def test_train_resume_and_evaluate_on_tiny_data(tiny_cub, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")  # a narrow pipe/log: the table must still show whole numbers
    run_dir = tmp_path / "run"
    common = ["train", tiny_cub, "--out", run_dir, "--image-size", 64, "--batch-size", 2, "--workers", 0,
              "--no-pretrained", "--thr", 1, "--gate", 0.3, "-q"]
    r = run(*common, "--epochs", 1)
    assert r.exit_code == 0, r.output
    assert (run_dir / "model.pt").is_file() and len(pd.read_csv(run_dir / "metrics.csv")) == 1
    r = run(*common, "--epochs", 1)
    assert r.exit_code == 2 and "--resume" in r.output
    r = run(*common, "--epochs", 2, "--resume")
    assert r.exit_code == 0, r.output
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1, 2]
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    assert ckpt["class_names"] == ["Bird_3", "Bird_7"] and ckpt["meta"]["epochs"] == 2
    assert not ckpt["meta"]["bn_recalibrated"]  # off by default
    r = run(*common, "--epochs", 2, "--resume", "--bn-images", 3)  # finished run: the statistics step alone
    assert r.exit_code == 0 and "re-estimated on 3 images" in r.output, r.output
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    assert ckpt["meta"]["bn_recalibrated"] == 3 and len(ckpt["meta"]["history"]) == 2
    assert ckpt["config"]["keypoints"]["gate"] == 0.3 and ckpt["config"]["keypoints"]["thr"] == 1  # stored settings
    report = tmp_path / "eval.json"
    r = run("evaluate", "--data", tiny_cub, "--weights", run_dir / "model.pt", "--k", 2, "--workers", 0,
            "--out", report, "--gate", 0.5, "--flip", "--output-stride", 16, "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(report.read_text())["config"]["gate"] == 0.5
    assert json.loads(report.read_text())["config"]["flip"] is True
    config = json.loads(report.read_text())["config"]
    assert (config["output_stride"], config["feature_map"], config["thr"]) == (16, 4, 2)  # 64 px; thr 1 -> 2 cells
    lmp_row = next(line for line in r.stdout.splitlines() if line.strip().startswith("lmpnet"))
    avg = json.loads(report.read_text())["results"][0]["avg"]
    assert "…" not in r.stdout and f"{avg:.1f}" in lmp_row.split()  # piped table: whole numbers, not truncated
    landing = [row for row in json.loads(report.read_text())["landing"] if row["method"] == "lmpnet"]
    assert [row["rank"] for row in landing] == [1, 2]
    kp2 = next(line.split() for line in r.stdout.splitlines() if line.split()[:2] == ["lmpnet", "KP2"])
    assert kp2[2:] == [f"{landing[1][c]:.1f}" for c in ("head", "body", "wings", "tail", "legs", "miss")]
    r = run("evaluate", "--data", tiny_cub, "--weights", run_dir / "model.pt", "--k", 2, "--workers", 0,
            "--out", report, "--overwrite", "--image-size", 96, "--baselines", "-q")
    assert r.exit_code == 0, r.output
    config = json.loads(report.read_text())["config"]
    assert (config["image_size"], config["feature_map"], config["thr"]) == (96, 3, 1.5)  # trained at 64: thr 1 -> 1.5 cells
    r = run("evaluate", "--data", tiny_cub, "--weights", run_dir / "model.pt", "--gate", 2, "-q")
    assert r.exit_code == 2 and "Traceback" not in r.output
    rows = {row["method"]: row for row in json.loads(report.read_text())["results"]}
    assert set(rows) == {"lmpnet", "centre", "channel-mean", "mean-landmark"}
    assert 0 <= rows["lmpnet"]["KP1"] <= 100 and 0 <= rows["lmpnet"]["acc"] <= 100
    assert math.isnan(rows["centre"]["acc"]) and math.isnan(rows["centre"]["images_per_s"])  # runs no network


def test_help_has_examples():
    r = run("predict", "--help")
    assert r.exit_code == 0 and "lmp predict examples/" in r.output


def test_other_methods_heatmaps_and_filter_grid(messy_folder, tiny_checkpoint, tmp_path):
    heat = tmp_path / "heat"
    r = run("predict", messy_folder / "ok.jpg", "--weights", tiny_checkpoint, "--method", "occlusion-gbp",
            "--occlusion-input-size", 32, "--heatmaps", heat, "--out", tmp_path / "o.csv", "--workers", 0)
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "o.csv")) >= 1 and len(list(heat.glob("*.jpg"))) == 1
    r = run("predict", messy_folder / "ok.jpg", "--weights", tiny_checkpoint, "--heatmaps", heat, "--workers", 0)
    assert r.exit_code == 2 and "occlusion-gbp" in r.output
    r = run("predict", messy_folder / "ok.jpg", "--weights", tiny_checkpoint, "--method", "cam", "--out", "-",
            "--workers", 0)
    assert r.exit_code == 0 and r.stdout.count("ok.jpg") >= 1
    grid = tmp_path / "grid.png"
    r = run("visualize-filters", messy_folder, "--weights", tiny_checkpoint, "--out", grid, "--n-filters", 3,
            "--n-rows", 2, "--tile", 48, "--workers", 0, "-q")
    assert r.exit_code == 3, r.output  # finished; the corrupt files were skipped
    assert Image.open(grid).size[0] > 3 * 48
    r = run("visualize-filters", messy_folder, "--weights", tiny_checkpoint, "--out", grid, "--workers", 0, "-q")
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_evaluate_entropy_and_methods(tiny_cub, tiny_checkpoint):
    r = run("evaluate", "--data", tiny_cub, "--weights", tiny_checkpoint, "--method", "lmpnet,cam", "--entropy",
            "--workers", 0, "-q")
    assert r.exit_code == 0, r.output
    assert "feature-map entropy" in r.output and "cam" in r.output and "channel-mean" in r.output


def test_train_flag_defaults_match_fit_and_config():
    """`lmp train` is a thin call into `fit()`: every flag's default must be fit()'s keyword default,
    and fit()'s model keywords must default to LMPNetConfig's fields (e.g. --mask-size 0.15)."""
    import dataclasses
    import inspect

    from lmpcli.cli.train import train
    from lmpcli.model import LMPNetConfig
    from lmpcli.train import fit

    fit_defaults = {n: p.default for n, p in inspect.signature(fit).parameters.items()
                    if p.default is not inspect.Parameter.empty}
    cli_defaults = {n: getattr(p.default, "default", p.default)
                    for n, p in inspect.signature(train).parameters.items()}
    shared = cli_defaults.keys() & fit_defaults.keys()
    assert {"mask_size", "freeze", "crop_scale", "cutmix", "epochs"} <= shared
    assert {n: cli_defaults[n] for n in shared} == {n: fit_defaults[n] for n in shared}
    config_defaults = {f.name: f.default for f in dataclasses.fields(LMPNetConfig)}
    model_keys = config_defaults.keys() & fit_defaults.keys()
    assert {"mask_size", "eps"} <= model_keys
    assert {n: fit_defaults[n] for n in model_keys} == {n: config_defaults[n] for n in model_keys}
    assert fit_defaults["mask_size"] == 0.15  # quality log, section 9


def test_library_errors_map_to_the_documented_exit_statuses():
    """One mapping (lmpcli/cli/_errors.py, docs/robustness.md); None = a bug, which keeps its traceback."""
    import typer

    from lmpcli.checkpoint import CheckpointError
    from lmpcli.cli._errors import exit_status
    from lmpcli.data import InputError
    from lmpcli.outputs import OutputError
    from lmpcli.validate import UsageError

    cases = [(UsageError("x"), 2), (InputError("x"), 1), (OutputError("x"), 1), (CheckpointError("x"), 1),
             (ValueError("x"), 1), (FileNotFoundError("x"), 1), (KeyboardInterrupt(), 130),
             (BrokenPipeError(), 141), (TypeError("x"), None), (RuntimeError("x"), None), (typer.Exit(3), None)]
    assert [exit_status(e) for e, _ in cases] == [code for _, code in cases]


@pytest.mark.parametrize("debug", [False, True])
def test_an_error_is_one_line_unless_lmp_debug_asks_for_the_traceback(debug, messy_folder, tiny_checkpoint,
                                                                       monkeypatch):
    import lmpcli.predict as predict_mod

    def broken(*a, **kw):
        raise ValueError("the disk is [full]")

    monkeypatch.setattr(predict_mod, "run_predict", broken)
    if debug:
        monkeypatch.setenv("LMP_DEBUG", "1")
    r = run("predict", messy_folder / "ok.jpg", "--weights", tiny_checkpoint, "--out", "-")
    assert r.exit_code == 1  # the same status either way
    if debug:
        assert "Traceback" in r.output and "ValueError: the disk is [full]" in r.output
    else:
        assert r.output.strip() == "error: the disk is [full]"  # one line; brackets are not rich markup


def test_a_bug_keeps_its_traceback(messy_folder, tiny_checkpoint, monkeypatch):
    import lmpcli.predict as predict_mod

    def buggy(*a, **kw):
        raise TypeError("unexpected keyword")

    monkeypatch.setattr(predict_mod, "run_predict", buggy)
    r = run("predict", messy_folder / "ok.jpg", "--weights", tiny_checkpoint)
    assert isinstance(r.exception, TypeError) and r.exit_code == 1


def test_choices_are_listed_in_help_and_refused_as_usage_errors(messy_folder, monkeypatch):
    from lmpcli.choices import BACKENDS, METHODS

    monkeypatch.setenv("COLUMNS", "200")  # choices unbroken by line wrapping
    r = run("predict", "--help")
    assert r.exit_code == 0
    assert all(m in r.output for m in METHODS) and all(b in r.output for b in BACKENDS)
    for panel in ("Inputs and outputs", "Keypoint settings", "occlusion-gbp", "cam", "Performance"):
        assert panel in r.output
    r = run("predict", messy_folder, "--method", "sift")
    assert r.exit_code == 2 and "'sift' is not one of" in r.output
    r = run("train", messy_folder, "--pooling", "mean")
    assert r.exit_code == 2 and "'mean' is not one of" in r.output
    r = run("visualize-filters", messy_folder, "--classes", "1-x")
    assert r.exit_code == 2 and "cannot parse '1-x'" in r.output


def test_predict_and_evaluate_share_one_declaration_of_the_keypoint_settings():
    import inspect

    from lmpcli.cli.evaluate import evaluate
    from lmpcli.cli.options import KEYPOINT_SETTINGS, METHOD_OPTIONS
    from lmpcli.cli.predict import predict

    for command in (predict, evaluate):
        params = inspect.signature(command).parameters
        for name, (alias, default) in {**KEYPOINT_SETTINGS.options, **METHOD_OPTIONS.options}.items():
            assert params[name].annotation is alias and params[name].default == default


def test_the_library_never_imports_typer_or_rich():
    import ast
    from pathlib import Path

    root = Path(__file__).parent.parent / "lmpcli"
    offenders = []
    for path in root.rglob("*.py"):
        if root / "cli" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("typer", "rich", "click")]
    assert offenders == []
