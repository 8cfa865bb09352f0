"""A learned part head on the frozen main network's maps, PDiscoNet's losses (quality log section 36).

PDiscoNet (van der Klis et al., ICCV 2023; robertdvdk/part_detection, ``nets.py`` /
``cub/main.py``) learns K + 1 part attention maps (K parts and a background) with the network:
a softmax over the negative squared distances of each cell's descriptor to K + 1 prototypes; each
part's attention-weighted mean descriptor, modulated per part and with whole parts dropped out
(p = 0.3), is classified by one shared linear layer and the K foreground scores are averaged; the
losses are classification, concentration (x 1000), presence, orthogonality and equivariance
under a random rigid transform (each x 1). Here the network stays frozen (a CPU budget): only
the head learns, on the cached final-conv maps of :mod:`named_landmarks` (no network runs in the
``study`` step) and on the maps of one randomly transformed copy of each train image
(the ``augment`` step; flip, rotation, scale, translation, applied to the normalised image with
``affine_grid``). Labels used: the CUB class of each train image, as the network itself used.

    python benchmarks/named_landmarks.py cache --data ../shared/data/cub50 --cache runs/nl-shipped --methods parts
    python benchmarks/parts_head_study.py augment --data ../shared/data/cub50 --cache runs/nl-shipped
    python benchmarks/parts_head_study.py study --cache runs/nl-shipped --protocol halves   # the choice
    python benchmarks/parts_head_study.py study --cache runs/nl-shipped --protocol test     # the test split

``halves``: head, k-means and Kp regressors fit on the even train images, scored on the odd ones
(section 30's protocol for choosing). ``test``: fit on all train images, scored on all test images.
Rows: the head (soft centroid of each part map, visible where its maximum attention exceeds 0.5:
PDiscoNet's ``evaluate_cub.py``), the head with the peak's 3 x 3 centroid instead, and
``kmeans-centred`` fit on the same images (:func:`lmpcli.parts.fit_part_model`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.checkpoint import atomic_torch_save, load_model
from lmpcli.head import cells_to_pixels
from lmpcli.landmarks import assignment_scores
from lmpcli.layers.selection import _centroid3x3
from lmpcli.parts import fit_part_model
from lmpcli.part_metrics import part_metric_rows

from _markdown import emit_table
from named_landmarks import CHUNK, load_split, take
from parts_held_out import part_xy


def random_thetas(n: int, seed: int) -> torch.Tensor:
    """(n, 2, 3) ``affine_grid`` matrices (output -> input, normalised coordinates): a flip with
    probability 0.5, rotation in [-45, 45] degrees, scale in [0.8, 1.2], translation in [-0.2, 0.2]."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 5, generator=g)
    angle = (u[:, 0] * 90 - 45) * math.pi / 180
    scale = 0.8 + 0.4 * u[:, 1]
    flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
    tx, ty = u[:, 3] * 0.4 - 0.2, u[:, 4] * 0.4 - 0.2
    c, s = torch.cos(angle) * scale, torch.sin(angle) * scale
    return torch.stack([torch.stack([c * flip, -s, tx], -1), torch.stack([s * flip, c, ty], -1)], 1)


def invert(theta: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) -> (n, 2, 3) inverse affine maps."""
    full = torch.cat([theta, theta.new_tensor([0.0, 0.0, 1.0]).expand(len(theta), 1, 3)], 1)
    return torch.linalg.inv(full)[:, :2]


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` of (B, C, H, W) through (B, 2, 3) ``theta`` (zeros outside)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(args) -> None:
    """Maps of one transformed copy of each cached train image: ``aug-train-NNN.pt`` (features, theta)."""
    from lmpcli.data import CUBDataset, eval_transform
    from lmpcli.evaluate import _collate
    from lmpcli.inference import load_for_inference, make_loader

    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    (model, *_), _ = load_for_inference(args.weights, dev, backend=args.backend)
    cfg = model.config
    ds = CUBDataset(args.data, "train", eval_transform(cfg.image_size, cfg.mean, cfg.std))
    thetas = random_thetas(len(ds), args.seed)
    out = Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    idx_all = list(range(len(ds) if args.limit is None else min(args.limit, len(ds))))
    for start in range(0, len(idx_all), CHUNK):
        path = out / f"aug-train-{start // CHUNK:03d}.pt"
        if path.exists():
            continue
        t0 = time.perf_counter()
        idx = idx_all[start:start + CHUNK]
        loader = make_loader(torch.utils.data.Subset(ds, idx), 8, 1, _collate, dev)
        feats, pos = [], 0
        with torch.inference_mode():
            for batch in loader:
                images = batch["image"]
                th = thetas[torch.tensor(idx[pos:pos + len(images)])]
                pos += len(images)
                feats.append(model.main(warp(images.float(), th))[1].float().cpu().half())
        atomic_torch_save({"indices": torch.tensor(idx), "features": torch.cat(feats), "theta": thetas[torch.tensor(idx)]},
                          path)
        print(f"{path.name}: {len(idx)} images, {time.perf_counter() - t0:.0f} s", flush=True)


def load_augmented(cache: str) -> dict:
    chunks = sorted(Path(cache).glob("aug-train-*.pt"))
    if not chunks:
        raise SystemExit(f"no augmented train maps in {cache}; run the augment step first")
    ds = [torch.load(c, weights_only=True) for c in chunks]
    return {key: torch.cat([d[key] for d in ds]) for key in ("indices", "features", "theta")}


class PartHead(torch.nn.Module):
    """PDiscoNet's part head over frozen (B, C, h, w) maps: K + 1 attention maps (last = background)."""

    def __init__(self, prototypes: torch.Tensor, rms: float, classes: int, beta: float, dropout: float = 0.3,
                 weighted_mean: bool = False) -> None:
        super().__init__()
        self.weighted_mean = weighted_mean
        k1, c = prototypes.shape
        self.rms = rms
        self.prototypes = torch.nn.Parameter(prototypes.clone())
        self.log_beta = torch.nn.Parameter(torch.tensor(math.log(beta)))
        self.modulation = torch.nn.Parameter(torch.ones(1, c, k1))
        self.classifier = torch.nn.Linear(c, classes, bias=False)
        self.drop = torch.nn.Dropout1d(dropout)

    def maps(self, f: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, K + 1, h, w) softmax attention over the parts and the background."""
        x = f.float() / self.rms
        d2 = (x.pow(2).sum(1, keepdim=True) - 2 * torch.einsum("bchw,kc->bkhw", x, self.prototypes)
              + self.prototypes.pow(2).sum(1)[None, :, None, None])
        return torch.softmax(-self.log_beta.exp() * d2, 1)

    def forward(self, f: torch.Tensor):
        a = self.maps(f)
        x = f.float() / self.rms
        parts = torch.einsum("bkhw,bchw->bck", a, x)  # (B, C, K + 1)
        if self.weighted_mean:  # section 36's one change: attention-weighted means, O(1) descriptors
            parts = parts / a.sum((-2, -1))[:, None, :].clamp_min(1e-6)
        else:  # PDiscoNet's mean over all cells
            parts = parts / (a.shape[-1] * a.shape[-2])
        mod = self.drop((parts * self.modulation).permute(0, 2, 1))  # (B, K + 1, C), whole parts dropped
        scores = self.classifier(mod)  # (B, K + 1, classes)
        return a, parts, scores[:, :-1].mean(1)


def centroids(a: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) maps -> (B, K, 2) soft centroids (x, y) in cells."""
    h, w = a.shape[-2:]
    gy, gx = torch.meshgrid(torch.arange(h, dtype=a.dtype), torch.arange(w, dtype=a.dtype), indexing="ij")
    s = a.sum((-2, -1)).clamp_min(1e-12)
    return torch.stack([(a * gx).sum((-2, -1)) / s, (a * gy).sum((-2, -1)) / s], -1)


def losses(head: PartHead, f: torch.Tensor, f_aug: torch.Tensor, theta: torch.Tensor, labels: torch.Tensor) -> dict:
    a, parts, logits = head(f)
    k = a.shape[1] - 1
    h, w = a.shape[-2:]
    loc = centroids(a)  # (B, K + 1, 2)
    gy, gx = torch.meshgrid(torch.arange(h, dtype=a.dtype), torch.arange(w, dtype=a.dtype), indexing="ij")
    var = ((loc[..., 0, None, None] - gx) / w) ** 2 + ((loc[..., 1, None, None] - gy) / h) ** 2
    conc = (var * a)[:, :k].mean()
    pres = 1 - F.avg_pool2d(a[:, :, 2:-2, 2:-2], 3, stride=1).amax((-2, -1)).amax(0).mean()
    normed = F.normalize(parts, dim=1)
    orth = (normed.transpose(1, 2) @ normed - torch.eye(k + 1)).square().mean()
    back = warp(head.maps(f_aug), invert(theta))  # the transformed image's maps, brought back
    equiv = 1 - F.cosine_similarity(a[:, :k].flatten(2), back[:, :k].flatten(2), dim=-1).mean()
    cls = F.cross_entropy(logits, labels)
    return {"class": cls, "conc": 1000 * conc, "pres": pres, "orth": orth, "equiv": equiv,
            "acc": (logits.argmax(-1) == labels).float().mean()}


def fit_head(features, aug, theta, labels, k: int, epochs: int, seed: int, batch: int = 32,
             variant: str = "pdisconet") -> PartHead:
    """Train :class:`PartHead` on (N, C, h, w) maps, their transformed copies' maps and (N,) labels."""
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(seed)
    n, c = features.shape[:2]
    rms = float(features[:200].float().pow(2).sum(1).mean().sqrt())
    cells = features[torch.randperm(n, generator=g)[:400]].float().flatten(2).transpose(1, 2).reshape(-1, c) / rms
    km = KMeans(k + 1, n_init=1, random_state=seed).fit(cells.numpy())
    protos = torch.as_tensor(km.cluster_centers_, dtype=torch.float32)
    # the background prototype: the cluster of the weakest cells goes last
    order = torch.argsort(protos.norm(dim=1), descending=True)
    protos = protos[order]
    d2 = torch.cdist(cells[:5000], protos).pow(2)
    beta = 3.0 / float(d2.std())
    changed = variant == "weighted"
    head = PartHead(protos, rms, int(labels.max()) + 1, beta, weighted_mean=changed)
    lr = 1e-2 if changed else 1e-3  # the change also raises the head's learning rates ten-fold
    opt = torch.optim.Adam([{"params": [head.prototypes, head.log_beta], "lr": lr},
                            {"params": head.classifier.parameters(), "lr": lr},
                            {"params": [head.modulation], "lr": 10 * lr}])
    steps = epochs * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g)
        tot = {}
        head.train()
        for i in range(0, n, batch):
            b = perm[i:i + batch]
            ls = losses(head, features[b], aug[b], theta[b], labels[b])
            loss = ls["class"] + ls["conc"] + ls["pres"] + ls["orth"] + ls["equiv"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            for key, v in ls.items():
                tot[key] = tot.get(key, 0.0) + float(v.detach()) * len(b) / n
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"epoch {epoch + 1}/{epochs} ({time.perf_counter() - t0:.0f} s): "
                  + ", ".join(f"{key} {v:.3f}" for key, v in tot.items()), flush=True)
    return head.eval()


@torch.no_grad()
def head_xy(head: PartHead, features: torch.Tensor, sizes: torch.Tensor, image_size: int, cell_centre: float,
            where: str = "centroid") -> torch.Tensor:
    """(N, K, 2) part keypoints in original-image pixels (NaN where the part's maximum attention <= 0.5)."""
    out = []
    for i in range(0, len(features), 64):
        a = head.maps(features[i:i + 64])[:, :-1]
        peak, idx = a.flatten(2).max(-1)
        if where == "centroid":
            xy = centroids(a)
        else:
            w = a.shape[-1]
            xy = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).float()
            xy = _centroid3x3(a, torch.arange(a.shape[1]).expand(a.shape[0], -1), xy)
        xy = torch.where((peak > 0.5)[..., None], xy, float("nan"))
        out.append(cells_to_pixels(xy, a.shape[-2:], (image_size, image_size), cell_centre))
    return torch.cat(out) * (sizes.float() / image_size)[:, None, :]


def study(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, _ = load_model(args.weights)
    model.set_output_stride(args.output_stride)
    s, cc = model.config.image_size, model.cell_centre()
    if args.foreground_cells is not None:  # section 36 item 5: the k-means' foreground cells per image
        import lmpcli.parts
        lmpcli.parts.FOREGROUND_CELLS = args.foreground_cells  # read at call time by the fit and the responses
    train = load_split(args.cache, "train", features=True)
    with_head = "head" in args.part_models.split(",")
    if with_head:
        aug = load_augmented(args.cache)
        if not torch.equal(aug["indices"], train["indices"]):
            raise SystemExit("the augmented maps do not match the cached train images")
        train["aug"], train["theta"] = aug["features"], aug["theta"]
    classes = sorted(set(train["class_id"].tolist()))
    train["label"] = torch.tensor([classes.index(c) for c in train["class_id"].tolist()])
    if args.protocol == "halves":
        fit, test = take(train, torch.arange(0, len(train["indices"]), 2)), take(train, torch.arange(1, len(train["indices"]), 2))
    else:
        fit, test = train, load_split(args.cache, "test", features=True)
    t0 = time.perf_counter()
    head = fit_head(fit["features"], fit["aug"], fit["theta"], fit["label"], args.k, args.epochs, args.seed,
                    variant=args.variant) if with_head else None
    head_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    km = fit_part_model(fit["features"], args.k, "kmeans-centred", seed=args.seed)
    km_s = time.perf_counter() - t0
    rows = {"kmeans-centred": lambda d: part_xy(model, km, d["features"], d["size"])}
    maps = {"kmeans-centred": lambda d: km.assign(d["features"], d["keypoints"] / d["size"][:, None, :].float(), cc)}
    if with_head:
        rows = {"head, soft centroid": lambda d: head_xy(head, d["features"], d["size"], s, cc, "centroid"),
                "head, peak 3x3": lambda d: head_xy(head, d["features"], d["size"], s, cc, "peak"), **rows}
    cells = []
    for name, fn in rows.items():
        f, t = dict(fit, xy={"p": fn(fit)}), dict(test, xy={"p": fn(test)})
        r = part_metric_rows(f, t, ["p"])
        absent = 100 * t["xy"]["p"][..., 0].isnan().float().mean().item()
        if name in maps:  # NMI / ARI on the part maps (lmpcli.meters.PartAssignmentMeter's protocol)
            vis = t["visible"].bool()
            ids = torch.arange(vis.shape[1]).expand_as(vis)
            on_map = [f"{v:.2f}" for v in assignment_scores(ids[vis].numpy(), maps[name](t)[vis].numpy())]
        else:
            on_map = ["–", "–"]
        cells.append([name, *(f"{r['p'][c]:.2f}" for c in ("Kp", "NMI", "ARI")), *on_map, f"{absent:.1f}",
                      f"{r['mean-landmark']['Kp']:.2f}"])
    emit_table(f"part head ({args.variant if with_head else 'not run'}) vs kmeans-centred, K = {args.k}, stride "
               f"{args.output_stride or 32}, {args.foreground_cells or 16} foreground cells, protocol {args.protocol}: fit on {len(fit['indices'])} "
               f"images, scored on {len(test['indices'])}; head {args.epochs} epochs ({head_s:.0f} s), k-means {km_s:.0f} s",
               ["part model", "Kp", "NMI", "ARI", "NMI_map", "ARI_map", "absent (%)", "mean-landmark Kp"], cells, args.out)
    if args.save and with_head:
        torch.save(head.state_dict() | {"rms": torch.tensor(head.rms)}, args.save)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["augment", "study"])
    ap.add_argument("--data", default=None)
    ap.add_argument("--cache", default="runs/nl-shipped")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--protocol", choices=["halves", "test"], default="halves")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part-models", default="head,kmeans", help="study: head,kmeans or kmeans alone")
    ap.add_argument("--output-stride", type=int, default=None, help="study: the stride the cache was made at")
    ap.add_argument("--foreground-cells", type=int, default=None, help="study: k-means foreground cells per image")
    ap.add_argument("--variant", choices=["pdisconet", "weighted"], default="pdisconet",
                    help="weighted: section 36's one allowed change (attention-weighted part means, lr x 10)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="augment only the first N train images (smoke tests)")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--save", default=None, help="also save the head's state dict here")
    args = ap.parse_args()
    if args.step == "augment":
        if args.data is None:
            ap.error("augment needs --data")
        augment(args)
    else:
        study(args)


if __name__ == "__main__":
    main()
