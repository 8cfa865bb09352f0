"""The ONNX Runtime backend against the torch networks it replaces, its cache, and ``lmp export``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lmpcli.backends import apply_backend, resolve_backend
from lmpcli.backends.onnx import (
    OnnxNetwork,
    cached_session,
    install_onnxruntime,
    network_key,
    torch_network,
)
from lmpcli.checkpoint import load_model
from lmpcli.cli import app
from lmpcli.settings import KeypointSettings
from lmpcli.methods import create_method

from .conftest import EXAMPLES, REPO, needs_weights

runner = CliRunner()
CPU = torch.device("cpu")


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def test_resolve_backend():
    assert resolve_backend("auto", CPU) == "onnxruntime"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("torch", CPU) == "torch"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("tensorrt", CPU)
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("onnxruntime", torch.device("cuda"))


@torch.inference_mode()
def test_onnx_networks_and_methods_match_torch(tiny_checkpoint):
    ref, _ = load_model(tiny_checkpoint)
    pair, _ = load_model(tiny_checkpoint)
    assert apply_backend(pair, "onnxruntime", CPU) == "onnxruntime"  # cache: $LMP_CACHE_DIR (conftest)
    assert isinstance(pair.main, OnnxNetwork) and isinstance(pair.replica, OnnxNetwork)
    assert torch_network(pair.main) is not pair.main and torch_network(ref.main) is ref.main
    x = _images(5, 64)
    for net, ref_net in ((pair.main, ref.main), (pair.replica, ref.replica)):
        logits, maps = net(x.contiguous(memory_format=torch.channels_last))
        ref_logits, ref_maps = ref_net(x)
        assert maps.shape == ref_maps.shape == (5, 1280, 2, 2)
        torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(maps, ref_maps, atol=1e-4, rtol=1e-4)
    for name in ("lmpnet", "cam", "channel-mean"):
        got, want = create_method(name, pair, KeypointSettings(k=3))(x), create_method(name, ref, KeypointSettings(k=3))(x)
        assert torch.equal(torch.isnan(got.xy), torch.isnan(want.xy))
        assert float((got.xy - want.xy).nan_to_num().abs().max()) < 0.5, name
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        pair.main(_images(1, 64)[..., :32])


def test_occlusion_gbp_uses_torch_for_gradients(tiny_checkpoint):
    ref, _ = load_model(tiny_checkpoint)
    pair, _ = load_model(tiny_checkpoint)
    install_onnxruntime(pair)
    x = _images(2, 64, seed=1)
    opts = {"occluder_size": 16, "occluder_stride": 8, "input_size": 32, "nms_radius": 4}  # a 32-px graph too
    with torch.inference_mode():
        got = create_method("occlusion-gbp", pair, KeypointSettings(k=2), **opts)(x)
        want = create_method("occlusion-gbp", ref, KeypointSettings(k=2), **opts)(x)
    for a, b in zip(got.heatmaps, want.heatmaps, strict=True):  # coarse (ORT forwards) and fine (torch backward) maps
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    assert float((got.xy - want.xy).nan_to_num().abs().max()) < 0.5


def test_export_leaves_the_network_in_eval_mode(tiny_checkpoint, tmp_path):
    """A graph exported in the middle of a method's call (another input size) must not switch the
    torch network behind it to train mode (guided backprop runs through it next)."""
    pair, _ = load_model(tiny_checkpoint)
    net = pair.main.eval()
    cached_session(net, 32, tmp_path)
    assert not any(m.training for m in net.modules())


def test_cache_is_keyed_by_weights_and_size_and_survives_corruption(tiny_checkpoint, tmp_path):
    pair, _ = load_model(tiny_checkpoint)
    net = pair.main
    key = network_key(net, 64)
    assert network_key(net, 96) != key and network_key(pair.replica, 64) != key
    _, path = cached_session(net, 64, tmp_path)
    assert path.parent == tmp_path and path.stat().st_size > 1000
    mtime = path.stat().st_mtime_ns
    _, again = cached_session(net, 64, tmp_path)
    assert again == path and path.stat().st_mtime_ns == mtime  # reused, not exported again
    path.write_bytes(b"not an onnx graph")  # e.g. a disk that filled up under an older version
    with pytest.warns(UserWarning, match="exporting it again"):
        session, again = cached_session(net, 64, tmp_path)
    assert again == path and path.stat().st_size > 1000
    assert session.run(None, {"images": _images(1, 64).numpy()})[1].shape == (1, 1280, 2, 2)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_concurrent_processes_share_one_cache(tiny_checkpoint, tmp_path):
    code = ("import sys, torch; from lmpcli.checkpoint import load_model; from lmpcli.backends.onnx import cached_session;"
            "p, _ = load_model(sys.argv[1]); s, _ = cached_session(p.main, 64, sys.argv[2]);"
            "print(float(s.run(None, {'images': torch.ones(1, 3, 64, 64).numpy()})[0].sum()))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tiny_checkpoint), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({round(float(o), 4) for o, _ in outs}) == 1
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith("-64px-os32.onnx")  # one graph, no temporaries left


def test_predict_backends_agree_through_the_cli(tiny_checkpoint, tmp_path):
    outs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.csv"
        r = runner.invoke(app, ["predict", str(EXAMPLES), "--weights", str(tiny_checkpoint), "--k", "3",
                                "--backend", backend, "--workers", "0", "--out", str(out), "-q"])
        assert r.exit_code == 0, r.output
        outs[backend] = pd.read_csv(out)
    a, b = outs["torch"], outs["onnxruntime"]
    assert len(a) == len(b) > 0 and (a["image"] == b["image"]).all() and (a["rank"] == b["rank"]).all()
    assert float(np.abs(a[["x", "y"]].to_numpy() - b[["x", "y"]].to_numpy()).max()) < 0.5
    r = runner.invoke(app, ["predict", str(EXAMPLES), "--weights", str(tiny_checkpoint), "--backend", "tvm"])
    assert r.exit_code == 2 and "'tvm' is not one of" in r.output and "Traceback" not in r.output  # a usage error


def test_export_command_writes_a_standalone_graph(tiny_checkpoint, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "main.onnx"
    args = ["export", "--weights", str(tiny_checkpoint), "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--overwrite" in r.output  # refused before any work (docs/robustness.md)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == ["a", "b", "c"] and meta["image_size"] == "64"
    ref, _ = load_model(tiny_checkpoint)
    x = _images(3, 64, seed=2)
    assert [o.name for o in session.get_outputs()] == ["logits", "features", "mid"]
    logits, maps, mid = session.run(None, {"images": x.numpy()})
    with torch.inference_mode():
        want = ref.main(x, with_mid=True)
    np.testing.assert_allclose(logits, want[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(maps, want[1].numpy(), atol=1e-4)
    np.testing.assert_allclose(mid, want[2].numpy(), atol=1e-4)
    assert mid.shape[-2:] == (2 * maps.shape[-2], 2 * maps.shape[-1])  # the mid-level map at stride 16
    r = runner.invoke(app, ["export", "--weights", str(tiny_checkpoint), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "'tflite' is not one of" in r.output  # a usage error


@needs_weights
@torch.inference_mode()
def test_shipped_weights_keypoints_agree_on_examples():
    """The full check on 1,389 test images is benchmarks/backend_agreement.py (docs/speed.md)."""
    from lmpcli.data import eval_transform, load_rgb

    ref, _ = load_model(None)
    pair, _ = load_model(None)
    install_onnxruntime(pair)
    c = ref.config
    tf = eval_transform(c.image_size, c.mean, c.std)
    x = torch.stack([tf(load_rgb(p)) for p in sorted(EXAMPLES.glob("*.jpg"))[:4]])
    got, want = create_method("lmpnet", pair)(x), create_method("lmpnet", ref)(x)
    assert float((got.xy - want.xy).abs().max()) < 0.5
    assert torch.equal(got.logits.argmax(-1), want.logits.argmax(-1))
