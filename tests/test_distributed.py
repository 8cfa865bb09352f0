"""Exact resume and torchrun training: a killed-and-resumed run equals an uninterrupted one, bit for
bit on the CPU, in one process (with and without loader workers) and in two (gloo on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lmpcli.train import fit

# cutmix draws from torch's RNG; 16 frozen stages of 18 keep a step cheap
TINY = dict(image_size=64, batch_size=2, pretrained=False, seed=0, cutmix=0.5, freeze=16)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory) -> Path:
    """Two class folders of 4 random 72x64 images each (8 images: 4 steps of 2 per epoch)."""
    root = tmp_path_factory.mktemp("folders")
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (64, 72, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


class _Killed(Exception):
    pass


class KillAtEpoch:
    """A progress sink that 'kills' the run when epoch ``n`` starts (after epoch n-1's checkpoint)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def start(self, description: str, total) -> None:
        if description.startswith(f"epoch {self.n}/"):
            raise _Killed(description)

    def advance(self, n: int = 1, **metrics) -> None:
        pass

    def finish(self) -> None:
        pass

    def log(self, message: str) -> None:
        pass


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["state_dict"]


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} of {len(wa)} tensors differ, e.g. {differ[:3]}"
    oa = torch.load(a / "last.pt", weights_only=True)["training_state"]["optimizer"]["state"]
    ob = torch.load(b / "last.pt", weights_only=True)["training_state"]["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg"], ob[i]["exp_avg"]) for i in oa)


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_and_resumed_run_equals_an_uninterrupted_one(class_folders, tmp_path, workers):
    fit(class_folders, tmp_path / "whole", epochs=2, workers=workers, **TINY)
    with pytest.raises(_Killed):
        fit(class_folders, tmp_path / "cut", epochs=2, workers=workers, progress=KillAtEpoch(2), **TINY)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["training_state"]["epoch"] == 1
    fit(class_folders, tmp_path / "cut", epochs=2, workers=workers, resume=True, **TINY)
    _assert_same_run(tmp_path / "whole", tmp_path / "cut")
    # and the test can fail: another seed changes the weights
    fit(class_folders, tmp_path / "seed1", epochs=2, workers=workers, **{**TINY, "seed": 1})
    assert any(not torch.equal(v, _weights(tmp_path / "seed1")[k]) for k, v in _weights(tmp_path / "whole").items())


def test_resume_replays_the_shuffle_order_of_the_uninterrupted_run(class_folders, tmp_path):
    """The bug of issue 27: the loader's generator was re-seeded on resume, so epoch 2 saw epoch 1's order."""
    from lmpcli.rng import capture_rng_state, restore_rng_state

    gen = torch.Generator().manual_seed(0)
    first = torch.randperm(8, generator=gen)
    saved = capture_rng_state(gen)
    second = torch.randperm(8, generator=gen)
    torch.manual_seed(123)
    gen2 = torch.Generator().manual_seed(0)
    restore_rng_state(saved, gen2)
    assert torch.equal(torch.randperm(8, generator=gen2), second) and not torch.equal(first, second)
    path = tmp_path / "state.pt"
    torch.save(saved, path)
    assert torch.equal(torch.load(path, weights_only=True)["loader"], saved["loader"])  # plain types only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, tmp: str) -> None:
    """One torchrun-like process: uninterrupted 2-epoch run, then a run killed after epoch 1 and resumed."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")  # held across the three runs (fit joins it, leaves it open)
    hashes: list[str] = []

    def record(optimizer, args, kwargs):  # a digest of every trained weight after each optimizer step
        h = hashlib.sha256()
        for group in optimizer.param_groups:
            for p in group["params"]:
                h.update(p.detach().cpu().numpy().tobytes())
        hashes.append(h.hexdigest())

    def kill(optimizer, args, kwargs):  # both ranks stop at the first step of epoch 2 (2 steps an epoch)
        if len(hashes) == 4 + 2:
            raise _Killed("step 3")

    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    hook = register_optimizer_step_post_hook(record)
    try:
        fit(data, Path(tmp) / "whole", epochs=2, workers=0, **TINY)
        killer = register_optimizer_step_pre_hook(kill)
        try:
            fit(data, Path(tmp) / "cut", epochs=2, workers=0, **TINY)
        except _Killed:
            pass
        finally:
            killer.remove()
        fit(data, Path(tmp) / "cut", epochs=2, workers=0, resume=True, **TINY)
    finally:
        hook.remove()
        torch.distributed.destroy_process_group()
    Path(tmp, f"steps-rank{rank}.json").write_text(json.dumps(hashes))


def test_two_process_gloo_training_keeps_ranks_equal_writes_once_and_resumes_exactly(class_folders, tmp_path):
    torch.multiprocessing.start_processes(_worker, args=(2, _free_port(), str(class_folders), str(tmp_path)),
                                          nprocs=2, start_method="fork")  # fork: no second import of torch
    ranks = [json.loads((tmp_path / f"steps-rank{r}.json").read_text()) for r in range(2)]
    # 8 images over 2 ranks, 2 per batch: 2 steps an epoch; 4 + 2 (killed run: epoch 1) + 2 (resumed: epoch 2)
    assert len(ranks[0]) == 8 and ranks[0] == ranks[1]  # both ranks hold the same weights after every step
    assert len(set(ranks[0][:4])) == 4  # every step changed them
    assert ranks[0][6:] == ranks[0][2:4]  # the resumed epoch retraces the uninterrupted one, step by step
    for run in ("whole", "cut"):
        assert sorted(p.name for p in (tmp_path / run).iterdir()) == ["last.pt", "metrics.csv", "model.pt"]
    _assert_same_run(tmp_path / "whole", tmp_path / "cut")
    meta = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["meta"]
    assert meta["world_size"] == 2 and meta["train_images"] == 8
    assert len(torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["training_state"]["rng_states"]) == 2


def _evaluate_worker(rank: int, world: int, port: int, data: str, weights: str, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    from lmpcli.evaluate import evaluate
    report = evaluate(data, split="all", weights=weights, limit=5, batch_size=2, workers=0, device="cpu")
    torch.save({"table": report["table"].to_dict("list"), "landing": report["landing"].to_dict("list"),
                "images": report["config"]["images"]}, Path(tmp, f"eval-rank{rank}.pt"))


def test_two_process_evaluate_counts_every_image_once(tiny_cub, tiny_checkpoint, tmp_path):
    """5 images on 2 ranks: a DistributedSampler would pad to 6 (an image twice); the blocks are 2 + 3."""
    from lmpcli.evaluate import evaluate

    single = evaluate(tiny_cub, split="all", weights=tiny_checkpoint, limit=5, batch_size=2, workers=0, device="cpu",
                      fit_images=0)  # no Kp/NMI/ARI under torchrun (they need every rank's keypoints)
    torch.multiprocessing.start_processes(
        _evaluate_worker, args=(2, _free_port(), str(tiny_cub), str(tiny_checkpoint), str(tmp_path)), nprocs=2,
        start_method="fork")
    for rank in range(2):
        got = torch.load(tmp_path / f"eval-rank{rank}.pt", weights_only=False)
        assert got["images"] == 5
        # every mean over images equal: the same images, each once (padding would count one twice)
        pd.testing.assert_frame_equal(pd.DataFrame(got["table"]).drop(columns="images_per_s"),
                                      single["table"].drop(columns="images_per_s"))
        pd.testing.assert_frame_equal(pd.DataFrame(got["landing"]), single["landing"])
