"""Sharded and resumable prediction: shards merge to the single-process output row for row, and a
killed run resumed with --resume gives the same file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lmpcli.cli import app
from lmpcli.outputs import OutputError
from lmpcli.predict import run_predict
from lmpcli.shards import merge_shards, parse_shard, shard_bounds, shard_inputs, shard_path

pytestmark = pytest.mark.usefixtures("one_thread")


def test_parse_shard_and_names():
    assert parse_shard("3/8") == (3, 8) and parse_shard((0, 1)) == (0, 1)
    for bad in ("8/8", "-1/3", "1", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert shard_path("out/kps.csv", 3, 8).as_posix() == "out/kps.shard-00003-of-00008.csv"


@pytest.mark.parametrize("n", [0, 1, 5, 7, 100])
@pytest.mark.parametrize("count", [1, 3, 8])
def test_shards_cover_every_input_once_in_sorted_order(n, count):
    paths = [f"img{(i * 37) % 101:03d}.jpg" for i in range(n)]  # unsorted, distinct
    joined = [p for i in range(count) for p in shard_inputs(paths, i, count)]
    assert joined == sorted(paths)  # no image twice, none lost (no padding), sorted order
    sizes = [shard_bounds(n, i, count)[1] - shard_bounds(n, i, count)[0] for i in range(count)]
    assert max(sizes) - min(sizes) <= 1


def _predict(images, out, **kw):
    return run_predict([str(images)], out=str(out), workers=0, device="cpu", batch_size=2, **kw)


@pytest.fixture(scope="module")
def images(tiny_cub):
    return tiny_cub / "images"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_three_shards_merge_to_the_single_process_output(images, tiny_checkpoint, tmp_path, suffix):
    single = tmp_path / f"single{suffix}"
    _predict(images, single, weights=tiny_checkpoint)
    out = tmp_path / f"kps{suffix}"
    counts = [_predict(images, out, weights=tiny_checkpoint, shard=f"{i}/3")["images"] for i in range(3)]
    assert counts == [2, 2, 2]
    assert not out.exists() and shard_path(out, 2, 3).is_file()
    summary = merge_shards(out)
    assert summary["shards"] == 3 and summary["images"] == 6
    assert out.read_text() == single.read_text()  # row for row
    if suffix == ".jsonl":
        assert len(single.read_text().splitlines()) == 6 and json.loads(single.read_text().splitlines()[0])["image"]


class _KillAfter:
    """Progress sink that raises KeyboardInterrupt (Ctrl-C, a kill) after ``n`` images."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def start(self, description, total):
        pass

    def advance(self, n=1, **metrics):
        self.seen += n
        if self.seen >= self.n:
            raise KeyboardInterrupt

    def finish(self):
        pass

    def log(self, message):
        pass


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_killed_sharded_predict_resumed_gives_the_same_file(images, tiny_checkpoint, tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    _predict(images, whole, weights=tiny_checkpoint, shard="0/1")
    out = tmp_path / f"kps{suffix}"
    with pytest.raises(KeyboardInterrupt):
        _predict(images, out, weights=tiny_checkpoint, shard="0/1", progress=_KillAfter(4))
    target = shard_path(out, 0, 1)
    part = target.with_name(target.name + ".part")
    assert not target.exists() and part.is_file()  # the output is never half written
    with part.open("a") as f:
        f.write(f"{images}/cut-short.jpg,1,3" if suffix == ".csv" else '{"image": "cut')  # a write the kill cut
    with pytest.raises(OutputError, match="--resume"):
        _predict(images, out, weights=tiny_checkpoint, shard="0/1")
    summary = _predict(images, out, weights=tiny_checkpoint, shard="0/1", resume=True)
    assert summary["resumed"] >= 2 and summary["images"] + summary["resumed"] == 6
    assert target.read_text() == shard_path(whole, 0, 1).read_text() and not part.exists()
    again = _predict(images, out, weights=tiny_checkpoint, shard="0/1", resume=True)  # finished: left alone
    assert again["images"] == 0 and target.read_text() == shard_path(whole, 0, 1).read_text()


def test_merge_refuses_missing_or_unfinished_shards(images, tiny_checkpoint, tmp_path):
    out = tmp_path / "kps.csv"
    _predict(images, out, weights=tiny_checkpoint, shard="0/3")
    with pytest.raises(OutputError, match="missing shards 1, 2"):
        merge_shards(out)
    with pytest.raises(KeyboardInterrupt):
        _predict(images, out, weights=tiny_checkpoint, shard="1/3", progress=_KillAfter(1))
    with pytest.raises(OutputError, match=r"unfinished shards 1 \(rerun them with --resume\); missing shards 2"):
        merge_shards(out)
    assert not out.exists()


def test_cli_shard_jsonl_and_merge(images, tiny_checkpoint, tmp_path):
    runner = CliRunner()
    out = tmp_path / "kps.jsonl"
    for i in range(2):
        r = runner.invoke(app, ["predict", str(images), "--weights", str(tiny_checkpoint), "--device", "cpu",
                                "--workers", "0", "--shard", f"{i}/2", "--out", str(out)])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["merge-shards", str(out)])
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 6
    r = runner.invoke(app, ["merge-shards", str(out)])
    assert r.exit_code == 2 and "exists" in r.output and "Traceback" not in r.output  # refused before any work
    r = runner.invoke(app, ["predict", str(images), "--weights", str(tiny_checkpoint), "--shard", "0/2"])
    assert r.exit_code == 2 and "--shard needs --out" in r.output  # refused before torch (exit 2)
    r = runner.invoke(app, ["predict", str(images), "--weights", str(tiny_checkpoint), "--resume"])
    assert r.exit_code == 2 and "--resume needs --out" in r.output
    r = runner.invoke(app, ["predict", str(images), "--weights", str(tiny_checkpoint), "--shard", "2/2", "--out",
                            str(out)])
    assert r.exit_code == 2 and "0 to 1" in r.output


def test_a_shard_never_replaces_an_existing_annotated_image(images, tiny_checkpoint, tmp_path):
    """--shard without --resume or --overwrite refuses before any work when one of its own images'
    annotated copies exists (issue 23: nothing the user has is overwritten without --overwrite)."""
    vis = tmp_path / "vis"
    _predict(images, tmp_path / "first.csv", weights=tiny_checkpoint, vis_dir=vis)
    drawn = sorted(vis.iterdir())
    before = {p.name: p.read_bytes() for p in drawn}
    drawn[0].write_bytes(b"the user's own file")
    before[drawn[0].name] = b"the user's own file"
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        _predict(images, tmp_path / "kps.csv", weights=tiny_checkpoint, vis_dir=vis, shard="0/1")
    assert {p.name: p.read_bytes() for p in vis.iterdir()} == before
    assert not list(tmp_path.glob("kps*"))
    _predict(images, tmp_path / "kps.csv", weights=tiny_checkpoint, vis_dir=vis, shard="0/1", overwrite=True)
    assert drawn[0].read_bytes() != b"the user's own file"
