"""A part branch trained with PDiscoNet's losses on the CPU, from the cached stride-16 block
(quality log section 40).

The shipped recipe freezes the stem and blocks 0-10 of EfficientNet-Lite0 (``--freeze 12``), so
the block-10 map (112 x 28 x 28 at 448 px) is the ImageNet network's and ``mid_level_parts.py
cache --native`` holds it for every image. This study trains what PDiscoNet trains and section 36's
frozen head could not: the *top* of the network (the ImageNet blocks 11-15 and head conv, stride
32) with section 36's :class:`PartHead` and PDiscoNet's losses (class + 1000 x concentration +
presence + orthogonality + equivariance), all from the cache, no image forward:

* equivariance under a fresh random rigid transform per step (``random_thetas``: flip, +-45 deg,
  scale 0.8-1.2, shift +-0.2) applied to the block-10 map, the transformed copy's part maps
  brought back by the inverse transform;
* augmentation: the block-10 map flipped left-right with p 0.5;
* Adam with PDiscoNet's learning-rate ladder (branch 1e-4, prototypes and classifier 1e-3,
  modulation 1e-2), batch 16, cosine schedule; afterwards the branch's batch-norm statistics are
  re-estimated in one pass over the fit images (quality log section 26).

Labels used: the CUB class of each fit image, as the network itself used; no keypoint label.

    python benchmarks/named_landmarks.py cache --data ../shared/data/cub50 --methods channel-mean --splits train,test --cache runs/nl-cm
    python benchmarks/mid_level_parts.py cache --data ../shared/data/cub50 --cache runs/nl-cm --splits train,test --native
    python benchmarks/part_branch_study.py --cache runs/nl-cm --save runs/branch40-halves.pt --out table.md

Protocol ``halves`` (the choice): branch, head, k-means and the Kp regressors fit on the even train
images, scored on the odd ones; ``test``: fit on all train images, scored on the test split. Rows:
A, the head's soft centroids (visible where a part's maximum attention exceeds 0.5, PDiscoNet's
``evaluate_cub.py``), NMI_map / ARI_map from the K + 1 attention maps read bilinearly at each
landmark (argmax, the last map the background: PDiscoNet's ``eval_nmi_ari``); B, the peak's 3 x 3
centroid; C, ``kmeans-centred`` on the *branch's* final map and block 10 at 28 x 28 (the library's
``final+mid-fine``); E, the same on the shipped network's cached final map (section 39's row).
``--visible calibrated``: section 40's one allowed change if A collapses (a part visible where its
peak attention reaches 0.3 x its median peak on the fit images).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.backbones import EfficientNetLiteFeatures
from lmpcli.head import cells_to_pixels
from lmpcli.landmarks import assignment_scores
from lmpcli.layers.selection import _centroid3x3
from lmpcli.part_metrics import part_metric_rows
from lmpcli.parts import VISIBLE_FRACTION, sample_maps

from _markdown import emit_table
from mid_level_parts import NATIVE, add_native_study_args, native_study_setup, variant_row
from parts_head_study import PartHead, centroids, losses, random_thetas, warp


class Branch(nn.Module):
    """The top of EfficientNet-Lite (blocks after the last stride-16 one, and the head conv) with
    ImageNet weights: (B, C', H/16, W/16) block-10 maps -> (B, 1280, H/32, W/32) final-conv maps."""

    def __init__(self, name: str = "efficientnet-lite0") -> None:
        super().__init__()
        bb = EfficientNetLiteFeatures(name)
        self.first = bb._last_stride2
        self.total = len(bb.blocks)
        self.blocks = nn.ModuleList(list(bb.blocks)[self.first:])
        self.head = bb.head
        self.drop_connect_rate = bb.drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks, self.first):  # the backbone's own drop-connect schedule
            x = block(x, drop_connect_rate=self.drop_connect_rate * i / self.total)
        return self.head(x)


@torch.no_grad()
def branch_maps(branch: Branch, b10: torch.Tensor, chunk: int = 50) -> torch.Tensor:
    """(N, 1280, h, w) float16 final-conv maps of the branch (eval mode) for cached block-10 maps."""
    branch.eval()
    return torch.cat([branch(b10[i:i + chunk].float()).half() for i in range(0, len(b10), chunk)])


def train_branch(b10: torch.Tensor, labels: torch.Tensor, k: int, epochs: int, seed: int,
                 batch: int = 16, objective: str = "pdisconet") -> tuple[Branch, PartHead]:
    """Train :class:`Branch` and a :class:`PartHead` (K + 1 maps) on (N, C', 28, 28) block-10 maps
    and (N,) class labels 0..classes-1 with PDiscoNet's losses (module docstring). ``objective
    "class"``: section 40 item 2's control, the branch trained with the class loss alone through
    global average pooling and a linear classifier (same schedule, augmentation and learning
    rates; the head is then only its untrained initialisation)."""
    from sklearn.cluster import KMeans

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n = len(b10)
    branch = Branch()
    f0 = branch_maps(branch, b10[torch.randperm(n, generator=g)[:400]]).float()
    c = f0.shape[1]
    rms = float(f0.pow(2).sum(1).mean().sqrt())
    cells = f0.flatten(2).transpose(1, 2).reshape(-1, c) / rms
    km = KMeans(k + 1, n_init=1, random_state=seed).fit(cells.numpy())
    protos = torch.as_tensor(km.cluster_centers_, dtype=torch.float32)
    protos = protos[torch.argsort(protos.norm(dim=1), descending=True)]  # the weakest cells' cluster last
    beta = 3.0 / float(torch.cdist(cells[:5000], protos).pow(2).std())
    head = PartHead(protos, rms, int(labels.max()) + 1, beta, weighted_mean=True)
    # built in both modes: its initialisation draws from the global random stream that the head's
    # dropout then reads, as in the runs of section 40 items 2-5
    classifier = nn.Linear(c, int(labels.max()) + 1)
    if objective == "class":
        groups = [{"params": classifier.parameters(), "lr": 1e-3}]
    else:
        groups = [{"params": [head.prototypes, head.log_beta], "lr": 1e-3},
                  {"params": head.classifier.parameters(), "lr": 1e-3},
                  {"params": [head.modulation], "lr": 1e-2}]
    opt = torch.optim.Adam([{"params": branch.parameters(), "lr": 1e-4}, *groups])
    steps = epochs * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0, step = time.perf_counter(), 0
    for epoch in range(epochs):
        branch.train()
        head.train()
        perm = torch.randperm(n, generator=g)
        tot: dict[str, float] = {}
        for i in range(0, n, batch):
            b = perm[i:i + batch]
            x = b10[b].float()
            flip = torch.rand(len(b), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            if objective == "class":
                logits = classifier(branch(x).mean((-2, -1)))
                ls = {"class": F.cross_entropy(logits, labels[b]), "acc": (logits.argmax(-1) == labels[b]).float().mean()}
                loss = ls["class"]
            else:
                theta = random_thetas(len(b), seed * 1_000_003 + step)
                ls = losses(head, branch(x), branch(warp(x, theta)), theta, labels[b])
                loss = ls["class"] + ls["conc"] + ls["pres"] + ls["orth"] + ls["equiv"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            for key, v in ls.items():
                tot[key] = tot.get(key, 0.0) + float(v.detach()) * len(b) / n
        print(f"epoch {epoch + 1}/{epochs} ({time.perf_counter() - t0:.0f} s): "
              + ", ".join(f"{key} {v:.3f}" for key, v in tot.items()), flush=True)
    # batch-norm statistics of the trained branch, re-estimated (cumulative mean over the fit images)
    for m in branch.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    branch.train()
    with torch.no_grad():
        for i in range(0, n, 32):
            branch(b10[i:i + 32].float())
    return branch.eval(), head.eval()


@torch.no_grad()
def head_outputs(head: PartHead, features: torch.Tensor, points: torch.Tensor, cell_centre: float,
                 chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From (N, C, h, w) maps: soft centroids (N, K, 2) and 3 x 3 peak centroids (N, K, 2) in cells,
    peak attention (N, K), and the map part id (N, L) at (N, L, 2) landmark fractions of (W, H)
    (NaN = unknown -> -1; K = background): the K + 1 maps read bilinearly, argmax."""
    soft, peak3, peaks, ids = [], [], [], []
    for i in range(0, len(features), chunk):
        a = head.maps(features[i:i + chunk])  # (n, K + 1, h, w)
        w = a.shape[-1]
        fg = a[:, :-1]
        peak, idx = fg.flatten(2).max(-1)
        xy = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).float()
        peak3.append(_centroid3x3(fg, torch.arange(fg.shape[1]).expand(fg.shape[0], -1), xy))
        soft.append(centroids(fg))
        peaks.append(peak)
        pts = points[i:i + chunk].float()
        ids.append(torch.where(~pts.isnan().any(-1), sample_maps(a, pts, cell_centre).argmax(1), -1))
    return torch.cat(soft), torch.cat(peak3), torch.cat(peaks), torch.cat(ids)


def head_rows(head: PartHead, fit_d: dict, test_d: dict, image_size: int, cell_centre: float, visible: str) -> list[list[str]]:
    """Rows A (soft centroid) and B (peak 3 x 3) of the head, scored as ``variant_row`` scores k-means."""
    out = {}
    for name, d in (("fit", fit_d), ("test", test_d)):
        out[name] = head_outputs(head, d["features"], d["keypoints"] / d["size"][:, None, :].float(), cell_centre)
    fit_peaks = out["fit"][2]
    threshold = (VISIBLE_FRACTION * fit_peaks.median(0).values) if visible == "calibrated" else torch.full((head.prototypes.shape[0] - 1,), 0.5)
    rows = []
    for label, j in (("A: head, soft centroid", 0), ("B: head, peak 3x3", 1)):
        xy = {}
        for name, d in (("fit", fit_d), ("test", test_d)):
            cells, peaks = out[name][j], out[name][2]
            cells = torch.where((peaks > threshold)[..., None], cells, float("nan"))
            xy[name] = cells_to_pixels(cells, d["features"].shape[-2:], (image_size, image_size), cell_centre) \
                * (d["size"].float() / image_size)[:, None, :]
        r = part_metric_rows(dict(fit_d, xy={"p": xy["fit"]}), dict(test_d, xy={"p": xy["test"]}), ["p"])
        ids = out["test"][3]
        vis = test_d["visible"].bool()
        lm = torch.arange(vis.shape[1]).expand_as(vis)
        nmi_map, ari_map = assignment_scores(lm[vis].numpy(), ids[vis].numpy())
        absent = 100 * xy["test"][..., 0].isnan().float().mean().item()
        background = 100 * (ids[vis] == head.prototypes.shape[0] - 1).float().mean().item()
        rows.append([f"{label} (visible: {visible})", *(f"{r['p'][c]:.2f}" for c in ("Kp", "NMI", "ARI")),
                     f"{nmi_map:.2f}", f"{ari_map:.2f}", f"{absent:.1f}", f"{background:.1f}", "–"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_native_study_args(ap)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kmeans-seed", type=int, default=None, help="the k-means seed of rows C and E (default: --seed)")
    ap.add_argument("--objective", choices=["pdisconet", "class"], default="pdisconet",
                    help="class: section 40 item 2's control (the class loss alone, rows C and E)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N train images (smoke tests)")
    ap.add_argument("--visible", choices=["0.5", "calibrated"], default="0.5",
                    help="the head's visibility: maximum attention above 0.5 (PDiscoNet) or section 40's change")
    ap.add_argument("--save", default=None, help="save the trained branch and head here")
    ap.add_argument("--load", default=None, help="score a saved branch and head instead of training one")
    ap.add_argument("--rows", default="A,B,C,E", help="which rows to print")
    ap.add_argument("--locate", choices=["peak", "segment"], default="peak",
                    help="rows C and E: PartModel.location (section 42 item 4: segment)")
    args = ap.parse_args()
    s, cc, fit_d, test_d = native_study_setup(args, args.limit)
    classes = sorted(set(fit_d["class_id"].tolist()))
    labels = torch.tensor([classes.index(c) for c in fit_d["class_id"].tolist()])
    key = "block10" + NATIVE
    t0 = time.perf_counter()
    if args.load:
        state = torch.load(args.load, weights_only=True)
        branch = Branch()
        branch.load_state_dict(state["branch"])
        head = PartHead(state["head"]["prototypes"], float(state["rms"]), len(classes), 1.0, weighted_mean=True)
        head.load_state_dict(state["head"])
        branch.eval()
        head.eval()
    else:
        branch, head = train_branch(fit_d[key], labels, args.k, args.epochs, args.seed, objective=args.objective)
        if args.save:
            torch.save({"branch": branch.state_dict(), "head": head.state_dict(), "rms": torch.tensor(head.rms)}, args.save)
    train_s = time.perf_counter() - t0
    rows_wanted = set(args.rows.split(","))
    cells = []
    fit_b = dict(fit_d, features=branch_maps(branch, fit_d[key]))
    test_b = dict(test_d, features=branch_maps(branch, test_d[key]))
    if rows_wanted & {"A", "B"}:
        cells += [r for r in head_rows(head, fit_b, test_b, s, cc, args.visible) if r[0][0] in rows_wanted]
    variant = "final+block10" + NATIVE
    km_seed = args.seed if args.kmeans_seed is None else args.kmeans_seed
    if "C" in rows_wanted:
        cells.append(["C: kmeans-centred on the branch's maps", *variant_row(fit_b, test_b, variant, args.k, km_seed, s, cc, location=args.locate)[1:]])
    if "E" in rows_wanted:
        cells.append(["E: kmeans-centred on the shipped maps", *variant_row(fit_d, test_d, variant, args.k, km_seed, s, cc, location=args.locate)[1:]])
    for row in cells:
        print(row, flush=True)
    emit_table(f"part branch (section 40), K = {args.k}, protocol {args.protocol}: fit on {len(fit_d['indices'])} images, "
               f"scored on {len(test_d['indices'])}; branch {args.epochs} epochs ({args.objective}), {train_s:.0f} s; "
               f"k-means seed {km_seed}; location {args.locate}",
               ["part model", "Kp", "NMI", "ARI", "NMI_map", "ARI_map", "absent (%)", "background (%)", "k-means fit (s)"],
               cells, args.out)


if __name__ == "__main__":
    main()
