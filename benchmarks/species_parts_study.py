"""Species-invariant part descriptors: the class labels remove what varies between species within a
part (quality log section 42).

K-means on the shipped part model's descriptors (``kmeans-centred``, ``final+mid-fine``: the final
map upsampled x 2 and block 10 at 28 x 28, each centred on the image's foreground and normalised)
finds the directions of largest variance; within one part the largest is often the species'
plumage. The one label the method has, the class, names that nuisance. Two-stage fit (a nuisance
attribute projection, per part):

1. k-means (K, 3 starts) on each fit image's 64 strongest cells, as the library does;
2. for each part p and class c with at least ``--min-cells`` fit cells, the mean descriptor
   mu_cp; the within-part between-class scatter S = sum_p sum_c n_cp (mu_cp - mu_p)(mu_cp - mu_p)^T;
3. its top ``m`` eigenvectors U (D x m) are projected out of every fit descriptor (x - U U^T x,
   renormalised) and k-means runs again (``--rounds`` times in all).

The new centres lie in the complement of U, so the nearest centre of a descriptor and of its
projection are the same: scoring uses the library's responses (cosine to the centres x the final
map's energy ratio), calibration (0.3 x median peak) and segment centroids unchanged. ``m = 0`` is
the shipped fit (section 41's segment rows).

    python benchmarks/species_parts_study.py --cache runs/nl-cm --m 0,8,32,128 --seeds 0 --out table.md
    python benchmarks/species_parts_study.py --protocol test --objective A.pt,B.pt   # item 7
    python benchmarks/species_parts_study.py --consensus --seeds 0,1,2,3,4,5,6,7    # section 43

``--consensus`` (quality log section 43, item 2) is a label-free choice among k-means optima: each
seed's k-means labels a fixed random sample of the fit cells, each seed is scored by its mean
pairwise ARI against the other seeds, and the one the others agree with most (the medoid
partition) is chosen; the consensus fit matches every seed's centres to the medoid's (Hungarian on
the cosine), averages them and refines once with k-means from there. Item 3's column: the entropy
of each seed's part sizes on the fit cells, and a row for the most balanced seed.

Protocol ``halves`` fits on the even train images and scores the odd ones; ``test`` fits on all
train images and scores the test split. Columns as ``pose_parts_study.py``, plus ``removed (%)``:
the share of the fit descriptors' squared norm the projection removes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.checkpoint import load_model
from lmpcli.parts import PartModel

from _markdown import emit_table
from mid_level_parts import NATIVE, add_native_study_args, calibrated, fit_cells, native_study_setup, scores

VARIANT = "final+block10" + NATIVE
CHUNK = 64


def nuisance_basis(x: torch.Tensor, part: torch.Tensor, cls: torch.Tensor, k: int, m: int, min_cells: int) -> torch.Tensor:
    """(D, m) top eigenvectors of the within-part between-class scatter of ``x`` (n, D) under the
    assignment ``part`` (n,) in 0..k-1 and classes ``cls`` (n,); only (part, class) pairs with at
    least ``min_cells`` cells count."""
    classes = int(cls.max()) + 1
    key = part * classes + cls
    n = torch.bincount(key, minlength=k * classes).float()  # (k * classes,)
    sums = torch.zeros(k * classes, x.shape[1]).index_add_(0, key, x)
    keep = n >= min_cells
    mu = sums[keep] / n[keep, None]
    p_of = (torch.arange(k * classes) // classes)[keep]
    # mu_p over the kept pairs (weighted by cells), so the pairs' deviations are centred per part
    n_p = torch.zeros(k).index_add_(0, p_of, n[keep])
    mu_p = torch.zeros(k, x.shape[1]).index_add_(0, p_of, sums[keep]) / n_p.clamp_min(1)[:, None]
    dev = (mu - mu_p[p_of]) * n[keep, None].sqrt()
    scatter = (dev.T @ dev).double()
    _, vecs = torch.linalg.eigh(scatter)  # ascending
    return vecs[:, -m:].float().flip(-1)


def fit(d: dict, k: int, seed: int, m: int, rounds: int, min_cells: int) -> tuple[PartModel, float]:
    """The two-stage fit; returns the part model (location segment, calibrated as the library does)
    and the share (%) of the fit descriptors' squared norm the last projection removed."""
    from sklearn.cluster import KMeans

    x, cls = fit_cells(d, VARIANT)
    km = KMeans(k, n_init=3, random_state=seed).fit(x.numpy())
    removed = 0.0
    y = x
    for _ in range(rounds if m else 0):
        u = nuisance_basis(y, torch.as_tensor(km.labels_).long(), cls, k, m, min_cells)
        z = x - (x @ u) @ u.T
        removed = 100 * (1 - z.pow(2).sum().item() / x.pow(2).sum().item())
        y = F.normalize(z, dim=1)
        km = KMeans(k, n_init=3, random_state=seed).fit(y.numpy())
    pm = calibrated(d, VARIANT, F.normalize(torch.as_tensor(km.cluster_centers_, dtype=torch.float32), dim=1), "segment")
    return pm, removed


def row(fit_d: dict, test_d: dict, k: int, seed: int, m: int, rounds: int, min_cells: int,
        image_size: int, cell_centre: float) -> list[str]:
    t0 = time.perf_counter()
    pm, removed = fit(fit_d, k, seed, m, rounds, min_cells)
    fit_s = time.perf_counter() - t0
    r = scores(pm, fit_d, test_d, VARIANT, image_size, cell_centre)
    ids, vis = r["ids"], test_d["visible"].bool()
    lm = torch.arange(vis.shape[1]).expand_as(vis)
    share = torch.bincount(lm[vis] * (k + 1) + ids[vis], minlength=vis.shape[1] * (k + 1)).reshape(vis.shape[1], k + 1).float()
    share = share / share.sum(1, keepdim=True).clamp_min(1)
    used = int((share[:, :k] >= 0.05).any(0).sum())  # parts that take >= 5 % of some landmark
    return [f"{m}", f"{rounds if m else 0}", f"{seed}", *(f"{r[c]:.2f}" for c in ("Kp", "NMI", "ARI", "NMI_map", "ARI_map")),
            f"{r['background']:.1f}", f"{used}",
            f"{removed:.1f}", f"{fit_s:.0f}"]


def objective(fit_d: dict, checkpoints: list[str]) -> list[list[str]]:
    """Section 42 item 7: the spherical k-means objective (mean of 1 - the largest cosine to a part's
    centre over the fit cells) of each checkpoint's stored part model."""
    x, _ = fit_cells(fit_d, VARIANT)
    rows = []
    for path in checkpoints:
        pm = load_model(path)[0].part_model
        rows.append([path, str(pm.meta.get("seed", "")), f"{spherical_objective(x, pm.projection):.5f}"])
    return rows


def spherical_objective(x: torch.Tensor, centres: torch.Tensor) -> float:
    """Mean of 1 - the largest cosine of each unit row of ``x`` (n, D) to the ``centres`` (K, D)."""
    return (1 - (x @ F.normalize(centres, dim=1).T).amax(1)).mean().item()


def agreement(labels: torch.Tensor) -> torch.Tensor:
    """(S,) mean adjusted Rand index of each of S labellings ``labels`` (S, n) of the same cells
    against the other S - 1 (sklearn's ``adjusted_rand_score``); S >= 2."""
    from sklearn.metrics import adjusted_rand_score

    s = len(labels)
    a = torch.eye(s, dtype=torch.float64)
    for i in range(s):
        for j in range(i + 1, s):
            a[i, j] = a[j, i] = adjusted_rand_score(labels[i].numpy(), labels[j].numpy())
    return (a.sum(1) - 1) / (s - 1)


def matched_mean(centres: list[torch.Tensor], ref: int) -> torch.Tensor:
    """(K, D) unit-norm mean of the S centre sets ``centres`` (each (K, D), unit rows) after each is
    matched to set ``ref`` by the assignment of greatest total cosine (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    aligned = []
    for c in centres:
        rows, cols = linear_sum_assignment(-(centres[ref] @ c.T).numpy())
        aligned.append(c[torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]])
    return F.normalize(torch.stack(aligned).mean(0), dim=1)


def consensus(fit_d: dict, test_d: dict, k: int, seeds: list[int], sample: int, image_size: int,
              cell_centre: float) -> list[list[str]]:
    """Section 43 items 2-3: one row per k-means seed (its agreement, part-size entropy, objective and
    scores), their mean, the medoid seed's row again, the consensus fit's row, the most balanced
    seed's row again, and each criterion's Spearman correlation with NMI_map + ARI_map."""
    from scipy.stats import spearmanr
    from sklearn.cluster import KMeans

    x, _ = fit_cells(fit_d, VARIANT)
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:sample]
    centres, labels, balance = [], [], []
    for seed in seeds:
        km = KMeans(k, n_init=3, random_state=seed).fit(x.numpy())
        centres.append(F.normalize(torch.as_tensor(km.cluster_centers_, dtype=torch.float32), dim=1))
        labels.append(torch.as_tensor(km.labels_)[pick])
        balance.append(size_entropy(torch.as_tensor(km.labels_).long(), k))
    agree = agreement(torch.stack(labels))
    medoid = int(agree.argmax())
    balanced = max(range(len(seeds)), key=lambda i: balance[i])

    def cells(c: torch.Tensor) -> list[float]:
        r = scores(calibrated(fit_d, VARIANT, c, "segment"), fit_d, test_d, VARIANT, image_size, cell_centre)
        return [spherical_objective(x, c), *(r[m] for m in ("Kp", "NMI", "ARI", "NMI_map", "ARI_map"))]

    per_seed = []
    for seed, c, a, b in zip(seeds, centres, agree.tolist(), balance):
        per_seed.append([a, b, *cells(c)])
        print(seed, per_seed[-1], flush=True)
    km = KMeans(k, init=matched_mean(centres, medoid).numpy(), n_init=1).fit(x.numpy())
    fused = cells(F.normalize(torch.as_tensor(km.cluster_centers_, dtype=torch.float32), dim=1))
    quality = [r[6] + r[7] for r in per_seed]  # NMI_map + ARI_map
    rho = {name: spearmanr([sign * r[i] for r in per_seed], quality).statistic
           for name, i, sign in (("agreement", 0, 1), ("size entropy", 1, 1), ("-objective", 2, -1))}

    def fmt(label: str, v: list[float]) -> list[str]:
        return [label, f"{v[0]:.4f}" if v[0] == v[0] else "", f"{v[1]:.4f}" if v[1] == v[1] else "",
                f"{v[2]:.5f}", *(f"{u:.2f}" for u in v[3:])]

    mean = torch.tensor(per_seed).mean(0).tolist()
    return ([fmt(f"seed {s}", v) for s, v in zip(seeds, per_seed)]
            + [fmt(f"mean of {len(seeds)} seeds", mean), fmt(f"medoid (seed {seeds[medoid]})", per_seed[medoid]),
               fmt("consensus fit", [float("nan"), float("nan"), *fused]),
               fmt(f"most balanced (seed {seeds[balanced]})", per_seed[balanced]),
               ["Spearman with NMI_map + ARI_map: " + ", ".join(f"{n} {v:.2f}" for n, v in rho.items()),
                *[""] * 8]])


def size_entropy(labels: torch.Tensor, k: int) -> float:
    """Entropy (nats) of the part sizes of ``labels`` (n,) int64 in 0..k-1: the share of the cells in
    each part; log k when all parts are equal, 0 when one part takes every cell."""
    share = torch.bincount(labels, minlength=k).double() / len(labels)
    share = share[share > 0]
    return float(-(share * share.log()).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_native_study_args(ap)
    ap.add_argument("--m", default="0,8,32,128", help="nuisance directions to project out (0: the shipped fit)")
    ap.add_argument("--rounds", type=int, default=1, help="projection rounds (each re-fits k-means)")
    ap.add_argument("--min-cells", type=int, default=20, help="fit cells a (part, class) pair needs to count")
    ap.add_argument("--seeds", default="0", help="k-means seeds")
    ap.add_argument("--limit", type=int, default=0, help="only the first N train images (smoke tests)")
    ap.add_argument("--objective", default=None, metavar="CKPT[,CKPT...]",
                    help="instead: the k-means objective of these checkpoints' part models on the fit cells (item 7)")
    ap.add_argument("--consensus", action="store_true",
                    help="instead: the medoid and consensus choice among the --seeds' k-means optima (section 43)")
    ap.add_argument("--sample", type=int, default=20000, help="fit cells the seeds' agreement is measured on")
    args = ap.parse_args()
    s, cc, fit_d, test_d = native_study_setup(args, args.limit)
    if args.consensus:
        seeds = [int(v) for v in args.seeds.split(",")]
        emit_table(f"label-free choice among {len(seeds)} k-means optima, K = {args.k}, protocol {args.protocol}: fit on "
                   f"{len(fit_d['indices'])} images, scored on {len(test_d['indices'])}; agreement: mean ARI against the "
                   f"other seeds on {args.sample} fit cells; location segment",
                   ["fit", "agreement", "size entropy", "objective", "Kp", "NMI", "ARI", "NMI_map", "ARI_map"],
                   consensus(fit_d, test_d, args.k, seeds, args.sample, s, cc), args.out)
        return
    if args.objective:
        emit_table(f"k-means objective of stored part models on the fit cells of {len(fit_d['indices'])} images",
                   ["checkpoint", "seed", "mean 1 - max cos"], objective(fit_d, args.objective.split(",")), args.out)
        return
    cells = []
    for m in (int(v) for v in args.m.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            cells.append(row(fit_d, test_d, args.k, seed, m, args.rounds, args.min_cells, s, cc))
            print(cells[-1], flush=True)
    emit_table(f"species-invariant parts, K = {args.k}, protocol {args.protocol}: fit on {len(fit_d['indices'])} "
               f"images, scored on {len(test_d['indices'])}; location segment",
               ["m", "rounds", "seed", "Kp", "NMI", "ARI", "NMI_map", "ARI_map", "background (%)",
                "parts at landmarks (>= 5 %)", "removed (%)", "fit (s)"], cells, args.out)


if __name__ == "__main__":
    main()
