"""Part model (issue 25): known answers on planted parts, absent parts, checkpoint storage, fit-parts CLI."""

import pytest
import torch
from typer.testing import CliRunner

from lmpcli.checkpoint import load_model, read_checkpoint
from lmpcli.cli import app
from lmpcli.methods import create_method
from lmpcli.outputs import OutputError
from lmpcli.parts import PART_METHODS, PartModel, PartModelError, fit_part_model, fit_parts, part_keypoints, stack_maps

from .conftest import EXAMPLES, needs_weights

runner = CliRunner()


def planted(n=120, c=48, size=14, seed=0):
    """(n, c, size, size) maps with 3 parts: channels 10p..10p+9 fire at part p's cell (and at half
    strength on its 4 neighbours, so the parts cover about as many cells as the foreground), on weak noise.

    Part 2 is missing (its channels silent) on every fourth image. Returns (features, cells (n, 3, 2) x, y)."""
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(n, c, size, size, generator=g) * 0.05
    cells = torch.randint(0, size, (n, 3, 2), generator=g)
    for p in range(3):
        for i in range(n):
            if p == 2 and i % 4 == 0:
                continue
            x, y = cells[i, p].tolist()
            act = 1 + torch.rand(10, generator=g)
            f[i, 10 * p: 10 * p + 10, y, x] += act
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                if 0 <= x + dx < size and 0 <= y + dy < size:
                    f[i, 10 * p: 10 * p + 10, y + dy, x + dx] += act / 2
    return f, cells


@pytest.mark.parametrize("method", PART_METHODS)
def test_each_method_recovers_planted_parts_with_fixed_identities(method):
    f, cells = planted()
    pm = fit_part_model(f, 3, method)
    xy, score, visible = part_keypoints(pm, f, (448, 448))
    assert xy.shape == (120, 3, 2) and score.shape == (120, 3)
    got = (xy / 32 - 0.5).round()  # back to cells (stride 32, cell centre 0.5)
    present = torch.ones(120, 3, dtype=torch.bool)
    present[::4, 2] = False
    # one fitted part per planted part, the same on every image where it is present
    match = {}
    for j in range(3):
        hits = [((got[:, j] == cells[:, p].float()).all(-1) & present[:, p]).sum() / present[:, p].sum()
                for p in range(3)]
        best = int(torch.stack(hits).argmax())
        assert hits[best] >= 0.75, (method, j, hits)  # chance: 1 in 196 cells
        match[j] = best
    assert sorted(match.values()) == [0, 1, 2]
    if method in ("filters", "kmeans"):  # their maps keep some response off their part here
        return
    # the missing part is reported absent (NaN, score 0), not invented
    j2 = [j for j, p in match.items() if p == 2][0]
    assert (~visible[::4, j2]).float().mean() >= 0.9
    assert torch.isnan(xy[::4, j2][~visible[::4, j2]]).all() and (score[~visible] == 0).all()
    assert visible[1::4].all()


def test_part_model_round_trips_as_plain_tensors(tmp_path):
    f, _ = planted(n=40)
    pm = fit_part_model(f, 2, "kmeans-centred")
    torch.save(pm.to_dict(), tmp_path / "p.pt")
    back = PartModel.from_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    assert torch.equal(back.responses(f), pm.responses(f))
    with pytest.raises(PartModelError):
        fit_part_model(f, 0, "kmeans")
    with pytest.raises(PartModelError):
        fit_part_model(f, 2, "pca")


def test_fit_parts_cli_writes_a_new_checkpoint_and_never_its_input(tiny_checkpoint, tiny_cub, tmp_path):
    out = tmp_path / "with-parts.pt"
    before = tiny_checkpoint.read_bytes()
    r = runner.invoke(app, ["fit-parts", str(tiny_checkpoint), "--data", str(tiny_cub), "--out", str(out),
                            "--k", "2", "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    assert tiny_checkpoint.read_bytes() == before
    old, new = read_checkpoint(tiny_checkpoint), read_checkpoint(out)
    assert "parts" not in old and new["parts"]["projection"].shape[0] == 2
    assert all(torch.equal(old["state_dict"][key], new["state_dict"][key]) for key in old["state_dict"])
    assert new["parts"]["meta"]["images"] == 3  # the train split of tiny_cub
    # the parts method reads it: K points in part order, the main network's logits
    model, _ = load_model(out)
    kp = create_method("parts", model)(torch.randn(2, 3, 64, 64))
    assert kp.xy.shape == (2, 2, 2) and kp.score.shape == (2, 2) and kp.logits.shape == (2, 3)
    # never over the input, even with --overwrite; an existing output needs --overwrite
    r = runner.invoke(app, ["fit-parts", str(out), "--data", str(tiny_cub), "--out", str(out), "--overwrite", "-q"])
    assert r.exit_code == 2 and "is one of the inputs" in r.output  # refused before any work
    r = runner.invoke(app, ["fit-parts", str(tiny_checkpoint), "--data", str(tiny_cub), "--out", str(out), "-q"])
    assert r.exit_code == 2 and "--overwrite" in r.output
    before = out.read_bytes()
    with pytest.raises(OutputError, match="never writes over its input"):  # the library refuses too
        fit_parts(out, str(tiny_cub), out, overwrite=True, workers=0, device="cpu")
    assert out.read_bytes() == before
    # a checkpoint without parts: a clear error for the parts method
    with pytest.raises(ValueError, match="no part model"):
        create_method("parts", load_model(tiny_checkpoint)[0])


@pytest.fixture(scope="module")
def parts_checkpoint(tiny_checkpoint, tmp_path_factory):
    """tiny_checkpoint plus a hand-made 3-part model: part 1 always seen, part 2 never, part 3 on strong cells."""
    from lmpcli.checkpoint import atomic_torch_save

    obj = read_checkpoint(tiny_checkpoint)
    c = obj["state_dict"]["main.classifier.weight"].shape[1]
    proj = torch.zeros(3, c)
    proj[0, 0] = proj[2, :] = 1.0
    obj["parts"] = PartModel("kmeans", proj, torch.tensor([-1.0, float("inf"), -1.0]), torch.ones(3)).to_dict()
    path = tmp_path_factory.mktemp("parts") / "parts.pt"
    atomic_torch_save(obj, path)
    return path


def test_predict_parts_writes_one_entry_per_part_in_part_order(parts_checkpoint, tiny_cub, tmp_path):
    import json

    import pandas as pd

    images = sorted((tiny_cub / "images").rglob("*.jpg"))[:3]
    out = tmp_path / "parts.csv"
    r = runner.invoke(app, ["predict", *map(str, images), "--weights", str(parts_checkpoint), "--method", "parts",
                            "--out", str(out), "--vis-dir", str(tmp_path / "vis"), "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df.columns) == ["image", "part", "x", "y", "score", "visible"]
    assert len(df) == 9 and df.groupby("image")["part"].apply(list).map(lambda p: p == [1, 2, 3]).all()
    absent = df[df.part == 2]
    assert (absent.visible == 0).all() and absent.x.isna().all() and (absent.score == 0).all()
    assert (df[df.part != 2].visible == 1).all() and df[df.part != 2].x.notna().all()
    assert len(list((tmp_path / "vis").glob("*.jpg"))) == 3
    r = runner.invoke(app, ["predict", str(images[0]), "--weights", str(parts_checkpoint), "--method", "parts",
                            "--json", "--out", "-", "--workers", "0", "-q"])
    rec = json.loads(r.output)[0]
    assert rec["parts"] == ["part1", "part2", "part3"] and rec["num_keypoints"] == 2
    assert rec["keypoints"][3:6] == [0, 0, 0] and rec["keypoints"][2] == 2 and rec["keypoints"][8] == 2


def test_visualize_parts_draws_one_row_per_part(parts_checkpoint, tiny_cub, tmp_path):
    import cv2

    out = tmp_path / "grid.png"
    r = runner.invoke(app, ["visualize-parts", str(tiny_cub), "--weights", str(parts_checkpoint), "--split", "all",
                            "--per-part", "4", "--tile", "64", "--out", str(out), "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    grid = cv2.imread(str(out))
    assert grid.shape[:2] == (3 * 64, 112 + 4 * 64)
    # part 2 is never seen: its row of tiles stays blank (white); parts 1 and 3 have crops
    assert (grid[64:128, 112:] == 255).all() and not (grid[:64, 112:] == 255).all()


@needs_weights
def test_shipped_weights_carry_sixteen_parts_and_name_them_on_real_birds():
    from lmpcli.predict import predict_images

    model, _ = load_model(None)
    assert model.part_model.k == 16 and model.part_model.maps == "final+mid-fine"  # quality log 38 item 6, 39
    assert model.part_model.location == "segment"  # quality log 41
    images = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))[:3]
    items = list(predict_images(images, method="parts", workers=0, device="cpu"))
    assert len(items) == 3 and all(it.xy.shape == (16, 2) for it in items)
    seen = torch.tensor([[float(v == v) for v in it.xy[:, 0]] for it in items])
    assert seen.mean() > 0.7  # most parts are seen on these birds
    # each seen part lies inside its image
    for it in items:
        ok = ~torch.isnan(torch.as_tensor(it.xy[:, 0]))
        xy = torch.as_tensor(it.xy)[ok]
        assert ((xy >= 0) & (xy <= torch.tensor([it.width, it.height]))).all()


def test_assign_equals_upsampling_the_maps_and_reading_the_pixel():
    """Reference from the definition (PDiscoNet's ``eval_nmi_ari``): upsample the part maps
    bilinearly to the input, read the pixel under each point, argmax, background where no part
    reaches its threshold; at pixel centres this equals the fast bilinear sampling."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    f = torch.rand(2, 8, 7, 7, generator=g)
    pm = PartModel("kmeans", torch.rand(4, 8, generator=g) - 0.3, torch.tensor([1.0, 1.2, 0.8, 1.5]), torch.ones(4))
    s = 56
    pix = torch.randint(0, s, (2, 30, 2), generator=g)
    points = (pix.float() + 0.5) / s
    up = F.interpolate(pm.responses(f), size=(s, s), mode="bilinear", align_corners=False)  # (B, K, S, S)
    want = torch.empty(2, 30, dtype=torch.int64)
    for b in range(2):
        for i in range(30):
            x, y = pix[b, i].tolist()
            v = up[b, :, y, x]
            want[b, i] = int(v.argmax()) if (v >= pm.threshold).any() else pm.k
    got = pm.assign(f, points)
    assert (want == pm.k).any() and (want < pm.k).any()  # both outcomes exercised
    assert torch.equal(got, want)
    points[0, 0] = float("nan")
    assert pm.assign(f, points)[0, 0] == -1


def test_assign_names_planted_parts_and_background():
    f, cells = planted()
    proj = torch.zeros(3, f.shape[1])
    for p in range(3):
        proj[p, 10 * p: 10 * p + 10] = 1.0
    pm = PartModel("kmeans", proj, torch.full((3,), 5.0), torch.ones(3))
    centres = (cells.float() + 0.5) / 14  # (n, 3, 2) fractions of the image
    got = pm.assign(f, centres)
    present = torch.ones(120, 3, dtype=torch.bool)
    present[::4, 2] = False
    alone = torch.ones(120, 3, dtype=torch.bool)  # parts whose cells another part does not share
    for p in range(3):
        for q in range(3):
            if p != q:
                alone[:, p] &= ~((cells[:, p] - cells[:, q]).abs().sum(-1) <= 1)
    for p in range(3):
        keep = present[:, p] & alone[:, p]
        assert (got[keep, p] == p).all()
    gone = ~present[:, 2] & alone[:, 2]
    assert gone.any() and (got[gone, 2] == 3).all()  # a missing part's place is background (id K)


def test_evaluate_reports_nmi_ari_of_the_part_maps_for_parts_rows_only(tiny_checkpoint, tiny_cub, tmp_path):
    import math

    from lmpcli.checkpoint import atomic_torch_save

    from lmpcli.data import CUBDataset, eval_transform

    # one part per cell of the first test image (its descriptor there, normalised), so the part
    # under a landmark moves over the image; the threshold makes the weakest responses background
    model, _ = load_model(tiny_checkpoint)
    model.eval()
    tf = eval_transform(model.config.image_size, model.config.mean, model.config.std)
    ds = CUBDataset(tiny_cub, "test")
    with torch.inference_mode():
        _, f0 = model.main(tf(ds[0]["image"])[None])
    proj = torch.nn.functional.normalize(f0[0].flatten(1).T.float(), dim=1)  # (h*w, C)
    r0 = (f0[0].flatten(1).T.float() @ proj.T).clamp_min(0)
    obj = read_checkpoint(tiny_checkpoint)
    obj["parts"] = PartModel("kmeans", proj, r0.quantile(0.3, dim=0), torch.ones(len(proj))).to_dict()
    parts_checkpoint = tmp_path / "parts.pt"
    atomic_torch_save(obj, parts_checkpoint)

    from lmpcli.evaluate import evaluate
    from lmpcli.landmarks import assignment_scores
    from lmpcli.settings import KeypointSettings

    kw = {"settings": KeypointSettings(k=3), "workers": 0, "batch_size": 4, "device": "cpu", "fit_images": 0}
    t = evaluate(tiny_cub, split="test", weights=parts_checkpoint, methods=["lmpnet", "parts"], **kw)["table"]
    t = t.set_index("method")
    assert "Kp" not in t.columns  # no regressors fitted, the map columns need none
    assert t.loc[["lmpnet", "centre", "channel-mean"], ["NMI_map", "ARI_map"]].isna().all().all()
    # the evaluate loop's wiring (original pixels -> fractions, visibility, pooling over images)
    # against one image at a time through the model and PartModel.assign
    model, _ = load_model(parts_checkpoint)
    model.eval()
    truth, pred = [], []
    for i in range(len(ds)):
        item = ds[i]
        with torch.inference_mode():
            _, feats = model.main(tf(item["image"])[None])
        pts = item["orig_keypoints"][None].float() / item["size"].float()
        parts = model.part_model.assign(feats, pts)[0]
        vis = item["visible"]
        truth.append(torch.arange(len(vis))[vis])
        pred.append(parts[vis])
    nmi, ari = assignment_scores(torch.cat(truth).numpy(), torch.cat(pred).numpy())
    assert t.loc["parts", "NMI_map"] == pytest.approx(nmi, abs=1e-6) and not math.isnan(nmi)
    assert t.loc["parts", "ARI_map"] == pytest.approx(ari, abs=1e-6)


def _identity_hits(xy, cells, present):
    """Per fitted part: the best share of images where it sits on one planted part's cell."""
    got = (xy / 32 - 0.5).round()
    return [max(float(((got[:, j] == cells[:, p].float()).all(-1) & present[:, p]).sum() / present[:, p].sum())
                for p in range(cells.shape[1])) for j in range(xy.shape[1])]


def test_mid_level_map_tells_apart_parts_the_final_map_cannot():
    """Known answer: the mid-level map holds :func:`planted`'s three parts; the final map only
    marks where the bird is (the same energy profile) with one descriptor per image (its
    species) plus per-cell noise, the same on every part. Only a part model that reads both
    finds the parts."""
    mid, cells = planted(c=30)
    n = len(mid)
    g = torch.Generator().manual_seed(1)
    energy = mid.sum(1, keepdim=True) / 15  # about 1 on a part's cell, 0.5 beside it, 0.05 elsewhere
    species = torch.rand(n, 8, 1, 1, generator=g) + 0.5
    noise = torch.randn(n, 8, 14, 14, generator=g)
    final = energy * species + 0.5 * (noise - noise.mean(1, keepdim=True)) * (energy > 0.2)  # energy unchanged
    present = torch.ones(n, 3, dtype=torch.bool)
    present[::4, 2] = False
    both = stack_maps(final, mid)
    with_mid = fit_part_model(both, 3, "kmeans-centred", mid_channels=30)
    assert with_mid.mid_channels == 30 and with_mid.maps == "final+mid"
    xy, _, _ = part_keypoints(with_mid, both, (448, 448))
    hits = _identity_hits(xy, cells, present)
    assert min(hits) >= 0.75, hits
    final_only = fit_part_model(final, 3, "kmeans-centred")
    xy, _, _ = part_keypoints(final_only, final, (448, 448))
    assert min(_identity_hits(xy, cells, present)) < 0.6, _identity_hits(xy, cells, present)
    with pytest.raises(PartModelError, match="kmeans-centred only"):
        fit_part_model(both, 3, "nmf", mid_channels=30)


def test_centred_descriptors_reference_and_final_only_fit_unchanged():
    from lmpcli.parts import _fit_kmeans_centred, centred_descriptors

    g = torch.Generator().manual_seed(5)
    f = torch.rand(2, 196, 40, generator=g)
    energy = f[..., :30].sum(-1)
    top = energy.topk(16, -1).indices
    want = []
    for piece in (f[..., :30], f[..., 30:]):  # each map centred on its own foreground mean, normalised
        mean = torch.stack([piece[b, top[b]].mean(0) for b in range(2)])
        want.append(torch.nn.functional.normalize(piece - mean[:, None], dim=-1))
    want = torch.nn.functional.normalize(torch.cat(want, -1), dim=-1)
    torch.testing.assert_close(centred_descriptors(f, energy, 10), want)
    # with the final map only, the fit is the one section 30 chose: each image's 16 strongest cells
    # centred on their mean, normalised, k-means (written out here as it was before the mid-level map)
    from sklearn.cluster import KMeans

    feats, _ = planted()
    x = []
    for i in range(len(feats)):
        flat = feats[i].flatten(1).T
        cells = flat[flat.sum(-1).topk(16).indices]
        x.append(cells - cells.mean(0))
    x = torch.nn.functional.normalize(torch.cat(x), dim=1).numpy()
    ref = KMeans(3, n_init=3, random_state=0).fit(x).cluster_centers_
    ref = torch.nn.functional.normalize(torch.as_tensor(ref, dtype=torch.float32), dim=1)
    torch.testing.assert_close(_fit_kmeans_centred(feats, 3, 0), ref, atol=1e-5, rtol=1e-5)


def test_mid_part_model_round_trips_and_is_checked():
    pm = PartModel("kmeans-centred", torch.rand(4, 40), torch.zeros(4), torch.ones(4), mid_channels=10)
    back = PartModel.from_dict(pm.to_dict())
    assert back.mid_channels == 10 and back.maps == "final+mid" and back.grid == "final"
    old = pm.to_dict()
    del old["mid_channels"], old["grid"]  # a part model written before the mid-level map
    assert PartModel.from_dict(old).mid_channels == 0 and PartModel.from_dict(old).grid == "final"
    with pytest.raises(PartModelError):
        PartModel.from_dict({**pm.to_dict(), "method": "nmf"})
    fine = PartModel.from_dict({**pm.to_dict(), "grid": "mid"})
    assert fine.maps == "final+mid-fine" and fine.foreground_cells == 64
    for bad in ({"grid": "mid", "mid_channels": 0}, {"grid": "coarse"}):
        with pytest.raises(PartModelError, match="grid"):
            PartModel.from_dict({**pm.to_dict(), **bad})


def test_stack_maps_pools_or_upsamples_onto_the_chosen_grid():
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    final, mid = torch.rand(2, 5, 3, 4, generator=g), torch.rand(2, 2, 6, 8, generator=g)
    assert torch.equal(stack_maps(final, None, "mid"), final)
    assert torch.equal(stack_maps(final, mid), torch.cat([final, F.avg_pool2d(mid, 2)], 1))
    fine = stack_maps(final, mid, "mid")
    assert fine.shape == (2, 7, 6, 8) and torch.equal(fine[:, 5:], mid)
    # bilinear, align_corners=False: a fine cell inside the grid is 3/4 of its own coarse cell and
    # 1/4 of the next one along each axis (cell centres stay at tile centres)
    want = 0.75 * (0.75 * final[:, :, 1, 1] + 0.25 * final[:, :, 1, 2]) \
        + 0.25 * (0.75 * final[:, :, 2, 1] + 0.25 * final[:, :, 2, 2])
    torch.testing.assert_close(fine[:, :5, 3, 3], want)
    same = torch.rand(2, 2, 3, 4, generator=g)  # output stride 16: the grids match, nothing resampled
    assert torch.equal(stack_maps(final, same, "mid"), torch.cat([final, same], 1))
    with pytest.raises(PartModelError, match="grid"):
        stack_maps(final, mid, "coarse")


def test_fine_grid_part_model_locates_planted_parts_on_16_px_cells():
    """Known answer (quality log 39): three parts planted as 5 x 5 blobs on a 28 x 28 mid-level
    map, the final 14 x 14 map its 2 x 2 average. The fine-grid model (28 x 28 part maps) puts
    each part within one 16-px cell of where it was planted on every image that has it, and
    fitting from :class:`StackedMaps` (each map at its own resolution) equals fitting from the
    stacked tensor."""
    import torch.nn.functional as F

    from lmpcli.parts import StackedMaps

    g = torch.Generator().manual_seed(1)
    n = 80
    mid = torch.rand(n, 30, 28, 28, generator=g) * 0.05
    cells = torch.randint(2, 26, (n, 3, 2), generator=g)  # (x, y) of each blob's centre
    for i in range(n):
        for p in range(3):
            if p == 2 and i % 4 == 0:
                continue  # part 2 missing on every fourth image
            x, y = cells[i, p].tolist()
            act = 1 + torch.rand(10, 1, 1, generator=g)
            mid[i, 10 * p: 10 * p + 10, y - 2: y + 3, x - 2: x + 3] += act / 2
            mid[i, 10 * p: 10 * p + 10, y, x] += act[:, 0, 0] / 2
    final = F.avg_pool2d(mid, 2) * (torch.rand(n, 1, 1, 1, generator=g) + 0.5)
    present = torch.ones(n, 3, dtype=torch.bool)
    present[::4, 2] = False
    lazy = StackedMaps(final, mid, "mid")
    both = stack_maps(final, mid, "mid")
    assert lazy.shape == both.shape == (80, 60, 28, 28) and torch.equal(lazy[3:7], both[3:7])
    fine = fit_part_model(lazy, 3, "kmeans-centred", mid_channels=30, grid="mid")
    assert fine.maps == "final+mid-fine"
    torch.testing.assert_close(fit_part_model(both, 3, "kmeans-centred", mid_channels=30, grid="mid").projection,
                               fine.projection)
    xy, _, visible = part_keypoints(fine, both, (448, 448))
    assert xy.shape == (80, 3, 2)
    dist = ((xy / 16 - 0.5)[:, :, None] - cells[:, None].float()).abs().amax(-1)  # (n, fitted, planted) in 16-px cells
    near = (dist <= 1).float()
    match = [int(near[:, j].sum(0).argmax()) for j in range(3)]
    assert sorted(match) == [0, 1, 2]  # one fitted part per planted part
    for j, p in enumerate(match):
        assert near[present[:, p], j, p].mean() >= 0.95, (j, p)
    with pytest.raises(PartModelError, match="grid"):
        fit_part_model(final, 3, "kmeans-centred", grid="mid")  # the fine grid needs a mid-level map


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("maps", ["final+mid", None])
def test_fit_parts_with_mid_level_maps_through_the_cli(tiny_checkpoint, tiny_cub, tmp_path, backend, maps):
    import pandas as pd

    from lmpcli.evaluate import evaluate
    from lmpcli.settings import KeypointSettings

    out = tmp_path / "mid.pt"
    r = runner.invoke(app, ["fit-parts", str(tiny_checkpoint), "--data", str(tiny_cub), "--k", "2",
                            *(["--maps", maps] if maps else []), "--out", str(out), "--workers", "0"])
    assert r.exit_code == 0, r.output
    maps = maps or "final+mid-fine"  # the default (quality log 39)
    assert f"{maps} maps" in r.output
    model, _ = load_model(out)
    assert model.part_model.mid_channels == model.main.backbone.mid_channels > 0
    assert model.part_model.grid == ("mid" if maps == "final+mid-fine" else "final")
    csv = tmp_path / f"{backend}.csv"
    images = sorted((tiny_cub / "images").rglob("*.jpg"))[:3]
    r = runner.invoke(app, ["predict", *map(str, images), "--weights", str(out), "--method", "parts",
                            "--backend", backend, "--out", str(csv), "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(csv)
    assert len(df) == 6 and set(df["part"]) == {1, 2}
    rep = evaluate(tiny_cub, split="test", weights=out, methods=["parts"], settings=KeypointSettings(k=3), workers=0,
                   batch_size=4, device="cpu", fit_images=0, backend=backend)
    assert rep["config"]["part_models"] == {"parts": {"k": 2, "method": "kmeans-centred", "maps": maps,
                                                      "location": "segment"}}  # the default (quality log 41)
    t = rep["table"].set_index("method")
    assert t.loc["parts", ["NMI_map", "ARI_map"]].notna().all()
    r = runner.invoke(app, ["fit-parts", str(tiny_checkpoint), "--data", str(tiny_cub), "--maps", "final+mid",
                            "--method", "nmf", "--out", str(tmp_path / "bad.pt"), "--workers", "0"])
    assert r.exit_code == 2 and "kmeans-centred only" in r.output and "Traceback" not in r.output  # before any work


def test_ranked_and_mid_level_parts_share_one_main_forward(tiny_checkpoint, tmp_path):
    """With a part model that reads the mid-level map, the main network runs once per batch for
    LMPNet and the parts together (main_forward caches the mid-level map for the parts)."""
    from lmpcli.checkpoint import atomic_torch_save
    from lmpcli.inference import run_methods

    model, _ = load_model(tiny_checkpoint)
    c, m = model.main.backbone.out_channels, model.main.backbone.mid_channels
    obj = read_checkpoint(tiny_checkpoint)
    obj["parts"] = PartModel("kmeans-centred", torch.rand(2, c + m), torch.zeros(2), torch.ones(2),
                             mid_channels=m).to_dict()
    path = tmp_path / "mid.pt"
    atomic_torch_save(obj, path)
    pair, _ = load_model(path)
    pair.eval()
    calls = []
    hook = pair.main.register_forward_hook(lambda mod, args, out: calls.append(len(out)))
    try:
        methods = [create_method(n, pair) for n in ("lmpnet", "parts")]
        images = torch.randn(2, 3, 64, 64)
        out = run_methods(methods, images, torch.tensor([[64, 64], [64, 64]]), torch.device("cpu"), {})
    finally:
        hook.remove()
    assert calls == [3]  # one forward, with the mid-level map
    assert out["parts"]["xy"].shape == (2, 2, 2) and out["lmpnet"]["xy"].shape[0] == 2


def test_sample_maps_reads_the_upsampled_maps_at_pixel_centres():
    """lmpcli.parts.sample_maps equals bilinear upsampling to the image and reading the pixel."""
    from lmpcli.parts import sample_maps

    g = torch.Generator().manual_seed(3)
    maps = torch.rand(2, 3, 5, 7, generator=g)
    size = (40, 56)  # (H, W): 8 px per cell
    px = torch.stack([torch.randint(0, size[1], (2, 9), generator=g), torch.randint(0, size[0], (2, 9), generator=g)], -1)
    points = (px.float() + 0.5) / torch.tensor([size[1], size[0]])
    up = torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    ref = torch.stack([up[b][:, px[b, :, 1], px[b, :, 0]] for b in range(2)])  # (B, K, L)
    torch.testing.assert_close(sample_maps(maps, points), ref)


def _segment_reference(maps, threshold, fallback):
    """segment_centroids from its definition, one part and one image at a time."""
    b, k, h, w = maps.shape
    out = fallback.clone()
    for i in range(b):
        for j in range(k):
            sx = sy = tot = 0.0
            for y in range(h):
                for x in range(w):
                    v = float(maps[i, j, y, x])
                    if int(maps[i, :, y, x].argmax()) == j and v >= float(threshold[j]):
                        sx, sy, tot = sx + v * x, sy + v * y, tot + v
            if tot > 0:
                out[i, j] = torch.tensor([sx / tot, sy / tot])
    return out


def test_segment_centroids_known_answer_and_reference():
    """lmpcli.parts.segment_centroids: the response-weighted centroid of the cells a part wins."""
    from lmpcli.parts import segment_centroids

    r = torch.zeros(1, 3, 4, 4)
    r[0, 0, 1, 1], r[0, 0, 1, 3] = 3.0, 1.0  # part 0 wins cells (x, y) = (1, 1) and (3, 1)
    r[0, 0, 2, 2], r[0, 1, 2, 2] = 0.5, 2.0  # part 1 wins (2, 2), where part 0 responds less
    r[0, 0, 3, 0] = 0.1  # part 0 wins (0, 3) but below its threshold: not in its segment
    fallback = torch.full((1, 3, 2), -7.0)
    got = segment_centroids(r, torch.tensor([0.2, 0.2, 0.2]), fallback)
    # part 0: x = (3 * 1 + 1 * 3) / 4, y = 1; part 1 at (2, 2); part 2 wins nothing: its fallback
    torch.testing.assert_close(got, torch.tensor([[[1.5, 1.0], [2.0, 2.0], [-7.0, -7.0]]]))
    g = torch.Generator().manual_seed(4)
    maps = torch.rand(2, 4, 5, 6, generator=g) ** 3
    threshold = torch.tensor([0.1, 0.3, 0.5, 2.0])  # part 3 never reaches its threshold
    fallback = torch.rand(2, 4, 2, generator=g)
    got = segment_centroids(maps, threshold, fallback)
    torch.testing.assert_close(got, _segment_reference(maps, threshold, fallback))
    assert torch.equal(got[:, 3], fallback[:, 3])


def test_part_location_defaults_round_trip_and_errors():
    """kmeans-centred fits place parts by segment, the other methods by peak; older files read as peak."""
    from lmpcli.parts import segment_centroids

    f, _ = planted(n=40)
    pm = fit_part_model(f, 3, "kmeans-centred")
    assert pm.location == "segment" and fit_part_model(f, 3, "filters").location == "peak"
    assert fit_part_model(f, 3, "kmeans-centred", location="peak").location == "peak"
    with pytest.raises(PartModelError, match="location"):
        fit_part_model(f, 3, "kmeans-centred", location="middle")
    # locate: the segment centroid of the same maps whose peak gives visibility
    xy, _, visible, _ = pm.locate(f)
    peak_model = PartModel.from_dict({**pm.to_dict(), "location": "peak"})
    xy_peak, _, visible_peak, _ = peak_model.locate(f)
    assert torch.equal(visible, visible_peak)
    want = segment_centroids(pm.responses(f), pm.threshold, xy_peak.nan_to_num())
    torch.testing.assert_close(xy[visible], want[visible])
    assert not torch.allclose(xy[visible], xy_peak[visible])
    d = pm.to_dict()
    assert PartModel.from_dict(d).location == "segment"
    del d["location"]  # a part model written before section 41
    assert PartModel.from_dict(d).location == "peak"
    with pytest.raises(PartModelError, match="location"):
        PartModel.from_dict({**pm.to_dict(), "location": "middle"})


def test_fit_parts_cli_location_option(tiny_checkpoint, tiny_cub, tmp_path):
    out = tmp_path / "peak.pt"
    r = runner.invoke(app, ["fit-parts", str(tiny_checkpoint), "--data", str(tiny_cub), "--k", "2",
                            "--location", "peak", "--out", str(out), "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "peak location" in r.output and read_checkpoint(out)["parts"]["location"] == "peak"
    r = runner.invoke(app, ["fit-parts", str(tiny_checkpoint), "--data", str(tiny_cub), "--location", "middle",
                            "--out", str(tmp_path / "bad.pt")])
    assert r.exit_code == 2 and "Traceback" not in r.output and not (tmp_path / "bad.pt").exists()


def test_parts_flip_averages_the_mirrored_maps_and_is_mirror_equivariant(tiny_checkpoint, tmp_path):
    """``--flip`` for the parts (quality log section 44 item 2): the maps the part model reads are
    the mean of the image's and the mirror's maps flipped back, computed here from the networks
    by hand; the result is exactly mirror-equivariant; it costs one more main forward per batch;
    ``create_method`` takes the flag from the settings."""
    from lmpcli.checkpoint import atomic_torch_save
    from lmpcli.methods.parts import PartsMethod
    from lmpcli.parts import stack_maps
    from lmpcli.settings import KeypointSettings

    model, _ = load_model(tiny_checkpoint)
    c, m = model.main.backbone.out_channels, model.main.backbone.mid_channels
    obj = read_checkpoint(tiny_checkpoint)
    obj["parts"] = PartModel("kmeans-centred", torch.rand(3, c + m, generator=torch.Generator().manual_seed(0)),
                             torch.zeros(3), torch.ones(3), mid_channels=m, grid="mid").to_dict()
    path = tmp_path / "mid.pt"
    atomic_torch_save(obj, path)
    pair, _ = load_model(path)
    pair.eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    plain, flip = create_method("parts", pair), create_method("parts", pair, KeypointSettings(flip=True))
    assert isinstance(flip, PartsMethod) and flip.flip and not plain.flip
    calls = []
    hook = pair.main.register_forward_hook(lambda mod, args, out: calls.append(1))
    try:
        with torch.inference_mode():
            logits, maps = flip.part_features(images, {})
            n_forwards = len(calls)
            f, mid = pair.main(images, with_mid=True)[1:]
            ff, fmid = pair.main(images.flip(-1), with_mid=True)[1:]
            _, mirrored = flip.part_features(images.flip(-1), {})
            out_plain, out_flip = plain(images), flip(images)
    finally:
        hook.remove()
    assert n_forwards == 2
    reference = (stack_maps(f, mid, "mid") + stack_maps(ff.flip(-1), fmid.flip(-1), "mid")) / 2
    torch.testing.assert_close(maps, reference)
    torch.testing.assert_close(mirrored, maps.flip(-1))
    torch.testing.assert_close(logits, pair.main(images)[0])
    assert out_flip.xy.shape == out_plain.xy.shape == (2, 3, 2)
    assert not torch.equal(torch.nan_to_num(out_flip.xy), torch.nan_to_num(out_plain.xy))
    # two part models reading different maps on one batch's shared cache each get their own mirror
    final_only = PartsMethod(pair, PartModel("kmeans-centred", torch.rand(3, c), torch.zeros(3), torch.ones(3)), flip=True)
    shared: dict = {}
    with torch.inference_mode():
        mixed = [flip.part_features(images, shared)[1], final_only.part_features(images, shared)[1]]
        alone = [flip.part_features(images, {})[1], final_only.part_features(images, {})[1]]
    for a, b in zip(mixed, alone):
        torch.testing.assert_close(a, b)
