"""Parts from mid-level maps: does an earlier layer give parts clearer identities? (quality log section 38, item 5)

``kmeans-centred`` (lmpcli.parts) clusters the descriptors of each image's 16 strongest cells of
the main network's final-conv map (1,280 channels, the layer trained to name the species). This
study keeps everything of it (the cells chosen and the energy weighting by the final map, the
centring, k-means, the 0.3 x median-peak visibility threshold, the 3 x 3 sub-cell peak) and
changes only the descriptor of a cell:

* ``final``: the final-conv map (today's part model; reproduces ``parts_head_study.py``'s row);
* ``block15``: the last MBConv block's output before the head conv (320 channels, 14 x 14);
* ``block10``: the last stride-16 block's output (112 channels, 28 x 28, 2 x 2 average-pooled);
* ``final+block10``: both, each centred and L2-normalised, concatenated.
* ``final+block10@28``: the same on the 28 x 28 grid (quality log section 39): block 10 at its own
  resolution, the final map bilinearly upsampled x 2, 64 foreground cells per image (the share 16
  of 196 has), parts located and assigned on 16-px cells. Needs ``cache --native``.
* ``final+block10*2@28``: a map's name followed by ``*w`` scales its centred, normalised piece by
  sqrt(w), so it holds w times the share of the squared norm (section 39, item 6).
* ``final+block10+block4@28``: also the last stride-8 block (block 4, 40 channels, 56 x 56)
  average-pooled 2 x 2 onto the 28 x 28 grid (section 39, item 5). Needs ``cache --stride8``.

    python benchmarks/named_landmarks.py cache --data ../shared/data/cub50 --methods channel-mean --splits train,test --cache runs/nl-cm
    python benchmarks/mid_level_parts.py cache --data ../shared/data/cub50 --cache runs/nl-cm --splits train
    python benchmarks/mid_level_parts.py cache --data ../shared/data/cub50 --cache runs/nl-cm --splits train --native
    python benchmarks/mid_level_parts.py study --cache runs/nl-cm --k 8 [--protocol test]
    python benchmarks/mid_level_parts.py score --cache runs/nl-cm --weights runs/parts16-fine.pt

``cache`` runs the torch main network over the same images as the ``named_landmarks`` cache
(same split, same order), with forward hooks on blocks 10 and 15, and writes
``mid-SPLIT-NNN.pt`` (float16; with ``--native`` block 10 unpooled, 28 x 28, in
``native-SPLIT-NNN.pt``). ``study`` prints Kp / NMI / ARI (nearest keypoint) and NMI_map /
ARI_map (the part maps read at each landmark, PDiscoNet's protocol) per descriptor: protocol
``halves`` fits on the even train images and scores the odd ones, ``test`` fits on all train
images and scores the test split. ``score`` scores the part model stored in ``--weights`` (fit by
``lmp fit-parts``) the same way on the test split, its thresholds as stored (the numbers ``lmp
evaluate`` gives; quality log section 39).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.checkpoint import atomic_torch_save, load_model
from lmpcli.data import CUBDataset, eval_transform
from lmpcli.head import cells_to_pixels
from lmpcli.landmarks import assignment_scores
from lmpcli.parts import VISIBLE_FRACTION, PartModel, centred_cells
from lmpcli.parts import foreground_cells as grid_cells
from lmpcli.part_metrics import part_metric_rows

from _markdown import emit_table
from named_landmarks import CHUNK, load_split, take

BLOCKS = {"block10": 10, "block15": 15, "block4": 4}
VARIANTS = ("final", "block15", "block10", "final+block10")
#: Suffix of a variant on the stride-16 grid (64 foreground cells per image: lmpcli.parts.foreground_cells).
NATIVE = "@28"


def cache(args) -> None:
    """Blocks 10 and 15 of the torch main network for every image of each split, in chunks of 100
    (``--native``: block 10 unpooled; ``--stride8``: block 4, the last stride-8 block, pooled 2 x 2
    onto the 28 x 28 grid)."""
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.weights)
    model.eval()
    net = model.main.to(memory_format=torch.channels_last)
    cfg = model.config
    got: dict[str, torch.Tensor] = {}
    hooks = [net.backbone.blocks[i].register_forward_hook(lambda m, a, out, name=name: got.__setitem__(name, out))
             for name, i in BLOCKS.items()]
    prefix = "s8" if args.stride8 else "native" if args.native else "mid"
    try:
        for split in args.splits.split(","):
            ds = CUBDataset(args.data, split, eval_transform(cfg.image_size, cfg.mean, cfg.std))
            for start in range(0, len(ds), CHUNK):
                path = Path(args.cache) / f"{prefix}-{split}-{start // CHUNK:03d}.pt"
                if path.exists():
                    continue
                t0 = time.perf_counter()
                idx = list(range(start, min(start + CHUNK, len(ds))))
                out = {name: [] for name in BLOCKS}
                for i in range(0, len(idx), 8):
                    images = torch.stack([ds[j]["image"] for j in idx[i:i + 8]]).contiguous(memory_format=torch.channels_last)
                    with torch.inference_mode():
                        net(images)
                    if args.stride8:
                        out["block4"].append(F.avg_pool2d(got["block4"].float(), 2).half())
                    elif args.native:
                        out["block10"].append(got["block10"].float().half())
                    else:
                        out["block10"].append(F.avg_pool2d(got["block10"].float(), 2).half())
                        out["block15"].append(got["block15"].float().half())
                out = {(k + NATIVE if args.native or args.stride8 else k): v for k, v in out.items() if v}
                atomic_torch_save({"indices": torch.tensor(idx), **{k: torch.cat(v).contiguous() for k, v in out.items()}},
                                  path)
                print(f"{path.name}: {len(idx)} images, {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        for h in hooks:
            h.remove()


def load_mid(cache_dir: str, split: str, prefix: str = "mid") -> dict:
    chunks = sorted(Path(cache_dir).glob(f"{prefix}-{split}-*.pt"))
    if not chunks:
        raise SystemExit(f"no mid-level maps of {split} in {cache_dir}; run the cache step first")
    parts = [torch.load(c, weights_only=True) for c in chunks]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def native_protocol(cache_dir: str, protocol: str, limit: int = 0) -> tuple[dict, dict]:
    """(fit, scored) dicts of the cached final maps and block 10 at 28 x 28: protocol ``halves``, the
    even and odd train images (the first ``limit`` only, when given); ``test``, all train images and
    the test split (sections 39-41)."""
    def maps(split: str) -> dict:
        return load_split(cache_dir, split, features=True) | load_mid(cache_dir, split, "native")

    train = maps("train")
    if limit:
        train = take(train, torch.arange(min(limit, len(train["indices"]))))
    if protocol == "halves":
        n = len(train["indices"])
        return take(train, torch.arange(0, n, 2)), take(train, torch.arange(1, n, 2))
    return train, maps("test")


def add_native_study_args(ap) -> None:
    """The options every study on :func:`native_protocol` shares (sections 40-42): the cache, the
    checkpoint it was made with, the protocol, K, threads and the markdown output."""
    ap.add_argument("--cache", default="runs/nl-cm")
    ap.add_argument("--weights", default="weights/lmpnet-lite0-cub50.pt",
                    help="the checkpoint the cache was made with (image size, cell centre)")
    ap.add_argument("--protocol", choices=["halves", "test"], default="halves")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the markdown table here")


def native_study_setup(args, limit: int = 0) -> tuple[int, float, dict, dict]:
    """(image size, cell centre, fit dict, scored dict) for a study parsed with
    :func:`add_native_study_args`; sets torch's threads."""
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.weights)
    fit_d, test_d = native_protocol(args.cache, args.protocol, limit)
    return model.config.image_size, model.cell_centre(), fit_d, test_d


def grid(d: dict, variant: str) -> tuple[int, int]:
    """(h, w) of ``variant``'s part maps: the final map's, doubled on the stride-16 grid."""
    h, w = d["features"].shape[-2:]
    return (2 * h, 2 * w) if variant.endswith(NATIVE) else (h, w)


def foreground_cells(variant: str) -> int:
    return grid_cells("mid" if variant.endswith(NATIVE) else "final")


def descriptors(d: dict, variant: str, rows: slice | torch.Tensor) -> torch.Tensor:
    """(n, hw, D) float32 cell descriptors of ``variant`` for the images ``rows`` (centred on each
    image's foreground mean and L2-normalised: lmpcli.parts.centred_cells), and the final map's
    (n, hw) channel sums that choose the foreground and weight the responses. A ``@28`` variant
    reads the final map bilinearly upsampled x 2 and the unpooled block 10."""
    native = variant.endswith(NATIVE)
    final = d["features"][rows].float()
    if native:
        final = F.interpolate(final, scale_factor=2, mode="bilinear", align_corners=False)
    final = final.flatten(2).transpose(1, 2)
    energy = final.sum(-1)
    pieces = []
    for piece in variant.removesuffix(NATIVE).split("+"):
        name, _, weight = piece.partition("*")  # "block10*2": that map's share of the squared norm doubled
        key = name + NATIVE if native and name != "final" else name
        f = final if name == "final" else d[key][rows].float().flatten(2).transpose(1, 2)
        pieces.append(centred_cells(f, energy, foreground_cells(variant)) * float(weight or 1) ** 0.5)
    return F.normalize(torch.cat(pieces, -1), dim=-1), energy


def responses(d: dict, variant: str, centroids: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """(N, K, h, w) part maps: cosine to each centroid (clamped at 0) x the final map's energy ratio."""
    n, (h, w) = len(d["features"]), grid(d, variant)
    out = []
    for i in range(0, n, chunk):
        x, energy = descriptors(d, variant, slice(i, i + chunk))
        r = (x @ centroids.T).clamp_min(0) * (energy / energy.amax(-1, keepdim=True).clamp_min(1e-12))[..., None]
        out.append(r.transpose(1, 2).reshape(len(x), -1, h, w))
    return torch.cat(out)


def fit_cells(d: dict, variant: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x (n * cells, D) float32 unit-norm descriptors of each image's FOREGROUND_CELLS strongest
    cells, the cells k-means clusters; their images' classes (n * cells,) int64, None where ``d``
    holds no ``class_id``)."""
    x, cls = [], []
    cells = foreground_cells(variant)
    for i in range(0, len(d["features"]), 64):
        desc, energy = descriptors(d, variant, slice(i, i + 64))
        top = energy.topk(cells, -1).indices
        x.append(desc.gather(1, top[..., None].expand(-1, -1, desc.shape[-1])).reshape(-1, desc.shape[-1]))
        if "class_id" in d:
            cls.append(d["class_id"][i:i + 64].repeat_interleave(cells))
    return F.normalize(torch.cat(x), dim=1), torch.cat(cls).long() if cls else None


def calibrated(d: dict, variant: str, centroids: torch.Tensor, location: str = "peak") -> PartModel:
    """A ``kmeans-centred`` part model of ``centroids`` (K, D) calibrated on ``d`` as
    lmpcli.parts.calibrate does (threshold 0.3 x median peak, scale the 95th percentile)."""
    peaks = responses(d, variant, centroids).flatten(2).amax(-1)
    return PartModel("kmeans-centred", centroids, VISIBLE_FRACTION * peaks.median(0).values,
                     torch.quantile(peaks, 0.95, dim=0).clamp_min(1e-6), location=location)


def fit(d: dict, variant: str, k: int, seed: int, n_init: int = 3, pca: int = 0, location: str = "peak") -> PartModel:
    """k-means on the centred descriptors of each image's FOREGROUND_CELLS strongest cells
    (:func:`fit_cells`), :func:`calibrated`. With ``pca`` the k-means runs on the descriptors'
    first ``pca`` principal components and its centres are mapped back (quality log section 39,
    item 4); ``n_init`` k-means starts, the one of least inertia kept; ``location``:
    :attr:`lmpcli.parts.PartModel.location`."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    x = fit_cells(d, variant)[0].numpy()
    if pca:
        reduce = PCA(pca, random_state=seed).fit(x)
        centres = reduce.inverse_transform(KMeans(k, n_init=n_init, random_state=seed).fit(reduce.transform(x)).cluster_centers_)
    else:
        centres = KMeans(k, n_init=n_init, random_state=seed).fit(x).cluster_centers_
    return calibrated(d, variant, F.normalize(torch.as_tensor(centres, dtype=torch.float32), dim=1), location)


def scored(pm: PartModel, r: torch.Tensor, d: dict, image_size: int, cell_centre: float,
           radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(xy (N, K, 2) original pixels, NaN absent; map part id (N, L) per landmark) from maps ``r``;
    the peak's centroid window is (2 radius + 1) cells square."""
    pm.responses = lambda _features: r  # locate / assign read these maps
    xy, _, _, _ = pm.locate(None, radius)
    xy = cells_to_pixels(xy, r.shape[-2:], (image_size, image_size), cell_centre) * (d["size"].float() / image_size)[:, None]
    ids = pm.assign(None, d["keypoints"] / d["size"][:, None, :].float(), cell_centre)
    return xy, ids


def scores(pm: PartModel, fit_d: dict, test_d: dict, variant: str, image_size: int, cell_centre: float,
           radius: int = 1) -> dict:
    """Kp / NMI / ARI (regressors fit on ``fit_d``), NMI_map / ARI_map, absent and background (%) of
    ``pm`` on ``test_d``, and the map part ``ids`` (N, L) of each test landmark."""
    xy_fit, _ = scored(pm, responses(fit_d, variant, pm.projection), fit_d, image_size, cell_centre, radius)
    xy_test, ids = scored(pm, responses(test_d, variant, pm.projection), test_d, image_size, cell_centre, radius)
    r = part_metric_rows(dict(fit_d, xy={"p": xy_fit}), dict(test_d, xy={"p": xy_test}), ["p"])["p"]
    vis = test_d["visible"].bool()
    lm = torch.arange(vis.shape[1]).expand_as(vis)
    nmi_map, ari_map = assignment_scores(lm[vis].numpy(), ids[vis].numpy())
    return {"Kp": r["Kp"], "NMI": r["NMI"], "ARI": r["ARI"], "NMI_map": nmi_map, "ARI_map": ari_map,
            "absent": 100 * xy_test[..., 0].isnan().float().mean().item(),
            "background": 100 * (ids[vis] == pm.k).float().mean().item(), "ids": ids}


def variant_row(fit_d: dict, test_d: dict, variant: str, k: int, seed: int, image_size: int, cell_centre: float,
                n_init: int = 3, pca: int = 0, radius: int = 1, location: str = "peak") -> list[str]:
    """One table row of ``variant``: fit on ``fit_d``, score on ``test_d``: variant, Kp, NMI, ARI,
    NMI_map, ARI_map, absent (%), background (%: visible landmarks no part claims), fit seconds."""
    t0 = time.perf_counter()
    pm = fit(fit_d, variant, k, seed, n_init, pca, location)
    fit_s = time.perf_counter() - t0
    r = scores(pm, fit_d, test_d, variant, image_size, cell_centre, radius)
    return [variant, *(f"{r[c]:.2f}" for c in ("Kp", "NMI", "ARI", "NMI_map", "ARI_map")),
            f"{r['absent']:.1f}", f"{r['background']:.1f}", f"{fit_s:.0f}"]


def study(args) -> None:
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.weights)
    s, cc = model.config.image_size, model.cell_centre()
    native = any(v.endswith(NATIVE) for v in args.variants.split(","))

    stride8 = any("block4" in v for v in args.variants.split(","))

    def maps(split: str) -> dict:
        return (load_split(args.cache, split, features=True) | load_mid(args.cache, split)
                | (load_mid(args.cache, split, "native") if native else {})
                | (load_mid(args.cache, split, "s8") if stride8 else {}))

    train = maps("train")
    if args.protocol == "halves":
        fit_d, test_d = take(train, torch.arange(0, len(train["indices"]), 2)), take(train, torch.arange(1, len(train["indices"]), 2))
    else:
        fit_d, test_d = train, maps("test")
    cells = []
    for variant in args.variants.split(","):
        cells.append(variant_row(fit_d, test_d, variant, args.k, args.seed, s, cc, args.n_init, args.pca, args.radius))
        print(cells[-1], flush=True)
    emit_table(f"kmeans-centred parts by descriptor, K = {args.k}, protocol {args.protocol}: fit on "
               f"{len(fit_d['indices'])} images, scored on {len(test_d['indices'])}",
               ["descriptor", "Kp", "NMI", "ARI", "NMI_map", "ARI_map", "absent (%)", "background (%)", "fit (s)"], cells, args.out)


def score(args) -> None:
    """Kp / NMI / ARI / NMI_map / ARI_map of a checkpoint's part model on the cached maps (regressors
    fit on the train split, scored on the test split)."""
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.weights)
    pm, s, cc = model.part_model, model.config.image_size, model.cell_centre()
    if pm is None or pm.method != "kmeans-centred":
        raise SystemExit(f"{args.weights} holds no kmeans-centred part model")
    variant = {"final": "final", "final+mid": "final+block10", "final+mid-fine": "final+block10" + NATIVE}[pm.maps]
    native = variant.endswith(NATIVE)
    splits = {}
    for split in ("train", "test"):
        splits[split] = (load_split(args.cache, split, features=True) | load_mid(args.cache, split)
                         | (load_mid(args.cache, split, "native") if native else {}))
    threshold, scale = pm.threshold, pm.scale
    xy = {}
    for split, d in splits.items():
        probe = PartModel("kmeans-centred", pm.projection, threshold, scale)
        xy[split], ids = scored(probe, responses(d, variant, pm.projection), d, s, cc, args.radius)
    test = splits["test"]
    r = part_metric_rows(dict(splits["train"], xy={"p": xy["train"]}), dict(test, xy={"p": xy["test"]}), ["p"])["p"]
    vis = test["visible"].bool()
    lm = torch.arange(vis.shape[1]).expand_as(vis)
    nmi_map, ari_map = assignment_scores(lm[vis].numpy(), ids[vis].numpy())
    cells = [[str(args.weights), pm.maps, str(pm.meta.get("seed", "")), *(f"{r[c]:.2f}" for c in ("Kp", "NMI", "ARI")),
              f"{nmi_map:.2f}", f"{ari_map:.2f}"]]
    emit_table(f"the part model of {args.weights} on the {len(test['indices'])} cached test images",
               ["checkpoint", "maps", "seed", "Kp", "NMI", "ARI", "NMI_map", "ARI_map"], cells, args.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["cache", "study", "score"])
    ap.add_argument("--data", default=None)
    ap.add_argument("--cache", default="runs/nl-cm")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--splits", default="train")
    ap.add_argument("--protocol", choices=["halves", "test"], default="halves")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-init", type=int, default=3, help="study: k-means starts (the library's: 3)")
    ap.add_argument("--radius", type=int, default=1, help="study, score: peak centroid window (2r + 1) cells square (the library's: 1)")
    ap.add_argument("--pca", type=int, default=0, help="study: k-means on this many principal components (0: none)")
    ap.add_argument("--native", action="store_true", help="cache: store block 10 unpooled (28 x 28) for the @28 variants")
    ap.add_argument("--stride8", action="store_true", help="cache: store block 4 pooled onto 28 x 28 for block4 variants")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    if args.step == "cache":
        if not args.data:
            ap.error("cache needs --data")
        cache(args)
    elif args.step == "score":
        if not args.weights:
            ap.error("score needs --weights")
        score(args)
    else:
        study(args)


if __name__ == "__main__":
    main()
