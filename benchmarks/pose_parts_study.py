"""Parts in the bird's own frame: k-means on descriptors plus a cell's position relative to the
object (quality log section 41).

Section 39's part model (``kmeans-centred`` on the final map and block 10 at 28 x 28, the library's
``final+mid-fine``) clusters appearance alone. At K = 16 on the test split only about eight of its
parts ever win at a landmark; one part takes belly, wings, legs and tail alike (their feathers look
alike), and the crown, forehead and nape share three parts. What tells those landmarks apart is
where they sit on the bird. This study appends to each cell's descriptor its position in an object
frame built from the network's own evidence (no box, no keypoint label):

* foreground: the cells whose final-map energy (channel sum) reaches ``--tau`` x the image's
  maximum; its energy-weighted centroid (cx, cy) and per-axis standard deviation (sx, sy);
* facing: the sign of (mean x of the image's 64 strongest cells) - cx; the bird's head is where the
  energy gathers, so the head side of every bird becomes +x;
* a cell at (x, y) gets ``(facing * (x - cx) / sx, (y - cy) / sy)``, weighted by ``--alpha``, after
  its unit-norm descriptor.

k-means (K, 3 starts) runs on the ``--cells`` strongest cells of each fit image. A part's map is
``clamp(cos(descriptor, centre) - alpha^2 / 2 * |position - centre position|^2, 0)`` times the
energy ratio: the argmax over parts at a cell is its nearest centre in the joint space, as in
k-means. Visibility, score scale, the 3 x 3 peak centroid and the map assignment are the library's.
``alpha = 0`` with 64 cells is the shipped part model's fit (row E of section 40).

``--locate`` (section 41, item 3) places the parts by :attr:`lmpcli.parts.PartModel.location`:
``peak``, the 3 x 3 centroid around the map's peak (the library's until then), or ``segment``,
the response-weighted centroid of the cells the part wins (:func:`lmpcli.parts.segment_centroids`).
Study variants (items 6-7): ``component``, the same on the 8-connected piece of the segment that
holds the peak; ``segment-all``, every cell the part wins with a positive response;
``segment-flat``, the shipped segment's cells weighted equally.

    python benchmarks/pose_parts_study.py --cache runs/nl-cm --alphas 0,0.25,0.5,1 --cells 64,128 --out table.md

Protocol ``halves`` fits on the even train images and scores the odd ones; ``test`` fits on all
train images and scores the test split. Columns as ``mid_level_parts.py study``, plus ``facing``:
the share of images whose estimated facing agrees with the landmarks' (head landmarks' mean x
against all visible landmarks' mean x, where they differ by more than one cell).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.landmarks import assignment_scores
from lmpcli.part_metrics import part_metric_rows
from lmpcli.parts import VISIBLE_FRACTION, PartModel, segment_centroids, segment_masks

from _markdown import emit_table
from mid_level_parts import NATIVE, add_native_study_args, descriptors, grid, native_study_setup, scored

VARIANT = "final+block10" + NATIVE
#: CUB landmarks on the head (beak, crown, forehead, left eye, nape, right eye, throat), 0-based.
HEAD = (1, 4, 5, 6, 9, 10, 14)
CHUNK = 64


def object_frame(energy: torch.Tensor, hw: tuple[int, int], tau: float, top: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Each cell's position in the object frame.

    Args:
        energy: (n, h * w) the final map's channel sums on the part grid.
        hw: (h, w). tau: foreground at this fraction of the image's maximum energy.
        top: the strongest cells whose mean x gives the facing.

    Returns:
        (pos (n, h * w, 2) float32: (facing * (x - cx) / sx, (y - cy) / sy), cells as units;
        facing (n,) +1 / -1).
    """
    h, w = hw
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                            indexing="ij")
    xs, ys = xs.flatten(), ys.flatten()
    en = energy / energy.amax(-1, keepdim=True).clamp_min(1e-12)
    m = en * (en >= tau)
    tot = m.sum(-1, keepdim=True).clamp_min(1e-12)
    cx, cy = (m * xs).sum(-1, keepdim=True) / tot, (m * ys).sum(-1, keepdim=True) / tot
    sx = ((m * (xs - cx) ** 2).sum(-1, keepdim=True) / tot).sqrt().clamp_min(1.0)
    sy = ((m * (ys - cy) ** 2).sum(-1, keepdim=True) / tot).sqrt().clamp_min(1.0)
    tx = xs[en.topk(min(top, en.shape[-1]), -1).indices].mean(-1, keepdim=True)
    facing = torch.where(tx >= cx, 1.0, -1.0)
    return torch.stack([facing * (xs - cx) / sx, (ys - cy) / sy], -1), facing[:, 0]


def joint(d: dict, rows: slice, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(desc (n, hw, D) unit, pos (n, hw, 2), energy (n, hw)) of the images ``rows``."""
    desc, energy = descriptors(d, VARIANT, rows)
    pos, _ = object_frame(energy, grid(d, VARIANT), tau)
    return desc, pos, energy


def responses(d: dict, centres: torch.Tensor, places: torch.Tensor, alpha: float, tau: float) -> torch.Tensor:
    """(N, K, h, w) part maps: clamp(cos - alpha^2 / 2 |pos - place|^2, 0) x the energy ratio."""
    n, (h, w) = len(d["features"]), grid(d, VARIANT)
    out = []
    for i in range(0, n, CHUNK):
        desc, pos, energy = joint(d, slice(i, i + CHUNK), tau)
        r = desc @ centres.T - 0.5 * alpha ** 2 * torch.cdist(pos, places[None].expand(len(pos), -1, -1)) ** 2
        r = r.clamp_min(0) * (energy / energy.amax(-1, keepdim=True).clamp_min(1e-12))[..., None]
        out.append(r.transpose(1, 2).reshape(len(desc), -1, h, w))
    return torch.cat(out)


def fit(d: dict, k: int, seed: int, alpha: float, tau: float, cells: int) -> tuple[PartModel, torch.Tensor]:
    """k-means in the joint space on each fit image's ``cells`` strongest cells; the library's calibration."""
    from sklearn.cluster import KMeans

    x = []
    for i in range(0, len(d["features"]), CHUNK):
        desc, pos, energy = joint(d, slice(i, i + CHUNK), tau)
        top = energy.topk(cells, -1).indices[..., None]
        x.append(torch.cat([desc.gather(1, top.expand(-1, -1, desc.shape[-1])),
                            alpha * pos.gather(1, top.expand(-1, -1, 2))], -1).reshape(-1, desc.shape[-1] + 2))
    x = torch.cat(x).numpy()
    c = torch.as_tensor(KMeans(k, n_init=3, random_state=seed).fit(x).cluster_centers_, dtype=torch.float32)
    centres = F.normalize(c[:, :-2], dim=1)
    places = c[:, -2:] / alpha if alpha else torch.zeros(k, 2)
    peaks = responses(d, centres, places, alpha, tau).flatten(2).amax(-1)
    pm = PartModel("kmeans-centred", centres, VISIBLE_FRACTION * peaks.median(0).values,
                   torch.quantile(peaks, 0.95, dim=0).clamp_min(1e-6))
    return pm, places


def facing_agreement(d: dict, tau: float) -> float:
    """Share of images (clear facing only) whose estimated facing matches the landmarks'."""
    h, w = grid(d, VARIANT)
    facing = torch.cat([object_frame(descriptors(d, VARIANT, slice(i, i + CHUNK))[1], (h, w), tau)[1]
                        for i in range(0, len(d["features"]), CHUNK)])
    kp, vis = d["keypoints"] / d["size"][:, None, :].float() * w, d["visible"].bool()

    def mean_x(idx):
        v = vis[:, list(idx)].float()
        return (kp[:, list(idx), 0] * v).sum(1) / v.sum(1).clamp_min(1), v.sum(1) > 0

    hx, hok = mean_x(HEAD)
    ax, aok = mean_x(range(vis.shape[1]))
    clear = hok & aok & ((hx - ax).abs() > 1.0)
    return 100 * (facing[clear] == torch.sign(hx - ax)[clear]).float().mean().item()


def component_masks(maps: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The 8-connected piece of each part's segment (:func:`lmpcli.parts.segment_masks`) that holds
    its peak (section 41, item 6), grown from the peak cell by 3 x 3 max-pool steps until nothing
    changes: (B, K, h, w), (K,) -> (B, K, h, w) float 0 / 1."""
    segment = segment_masks(maps, threshold).float()
    flat = maps.flatten(2)
    piece = torch.zeros_like(flat).scatter_(2, flat.argmax(2, keepdim=True), 1.0).view_as(maps) * segment
    while True:
        grown = F.max_pool2d(piece, 3, 1, 1) * segment
        if torch.equal(grown, piece):
            return piece
        piece = grown


#: Study-only ways to place a part (section 41, items 6-7): the segment's piece holding the peak; every
#: cell the part wins with a positive response; the shipped segment's cells weighted equally.
VARIANTS = ("component", "segment-all", "segment-flat")


def variant_xy(pm: PartModel, r: torch.Tensor, d: dict, image_size: int, cell_centre: float, variant: str):
    """``scored`` with each visible part placed by one of :data:`VARIANTS` (original pixels)."""
    from lmpcli.head import cells_to_pixels

    pm.location = "peak"
    xy_peak, ids = scored(pm, r, d, image_size, cell_centre)
    peak_cells, _, visible, _ = pm.locate(None)
    fallback = peak_cells.nan_to_num()
    if variant == "component":  # a part's maps outside its piece zeroed: its segment is then the piece
        cells = segment_centroids(r * component_masks(r, pm.threshold), pm.threshold, fallback)
    elif variant == "segment-all":
        cells = segment_centroids(r, torch.full_like(pm.threshold, 1e-12), fallback)
    else:  # segment-flat: the shipped segment's cells, each weighted 1
        cells = segment_centroids(segment_masks(r, pm.threshold).float(), torch.full_like(pm.threshold, 0.5), fallback)
    xy = cells_to_pixels(cells, r.shape[-2:], (image_size, image_size), cell_centre) * (d["size"].float() / image_size)[:, None]
    return torch.where(visible[..., None], xy, xy_peak), ids


def rows(fit_d: dict, test_d: dict, k: int, seed: int, alpha: float, tau: float, cells: int,
         image_size: int, cell_centre: float, locates: list[str]) -> list[list[str]]:
    """One table row per way of locating the parts, from one fit."""
    t0 = time.perf_counter()
    pm, places = fit(fit_d, k, seed, alpha, tau, cells)
    fit_s = time.perf_counter() - t0
    r_fit = responses(fit_d, pm.projection, places, alpha, tau)
    r_test = responses(test_d, pm.projection, places, alpha, tau)
    vis = test_d["visible"].bool()
    lm = torch.arange(vis.shape[1]).expand_as(vis)
    out = []
    for locate in locates:
        if locate in VARIANTS:
            xy_fit, _ = variant_xy(pm, r_fit, fit_d, image_size, cell_centre, locate)
            xy_test, ids = variant_xy(pm, r_test, test_d, image_size, cell_centre, locate)
        else:
            pm.location = locate  # PartModel.locate: the library's segment centroid or the peak's 3 x 3 centroid
            xy_fit, _ = scored(pm, r_fit, fit_d, image_size, cell_centre)
            xy_test, ids = scored(pm, r_test, test_d, image_size, cell_centre)
        r = part_metric_rows(dict(fit_d, xy={"p": xy_fit}), dict(test_d, xy={"p": xy_test}), ["p"])["p"]
        nmi_map, ari_map = assignment_scores(lm[vis].numpy(), ids[vis].numpy())
        used = len(set(ids[vis].tolist()) - {pm.k})
        out.append([locate, f"{alpha:g}", f"{cells}", f"{seed}", *(f"{r[c]:.2f}" for c in ("Kp", "NMI", "ARI")),
                    f"{nmi_map:.2f}", f"{ari_map:.2f}", f"{100 * (ids[vis] == pm.k).float().mean().item():.1f}",
                    f"{used}", f"{fit_s:.0f}"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_native_study_args(ap)
    ap.add_argument("--alphas", default="0,0.25,0.5,1", help="position weights to try")
    ap.add_argument("--cells", default="64", help="foreground cells per fit image to try (the library's: 64)")
    ap.add_argument("--seeds", default="0", help="k-means seeds")
    ap.add_argument("--tau", type=float, default=0.2, help="foreground at this fraction of the maximum energy")
    ap.add_argument("--locate", default="peak", help="PartModel.location (peak, segment) or a study variant "
                    "(component, segment-all, segment-flat), comma-separated")
    args = ap.parse_args()
    s, cc, fit_d, test_d = native_study_setup(args)
    print(f"facing agrees with the landmarks on {facing_agreement(test_d, args.tau):.1f} % of the scored images", flush=True)
    cells = []
    for c in (int(v) for v in args.cells.split(",")):
        for alpha in (float(v) for v in args.alphas.split(",")):
            for seed in (int(v) for v in args.seeds.split(",")):
                for r in rows(fit_d, test_d, args.k, seed, alpha, args.tau, c, s, cc, args.locate.split(",")):
                    cells.append(r)
                    print(r, flush=True)
    emit_table(f"parts in the object frame, K = {args.k}, tau {args.tau}, protocol {args.protocol}: fit on "
               f"{len(fit_d['indices'])} images, scored on {len(test_d['indices'])}",
               ["locate", "alpha", "cells", "seed", "Kp", "NMI", "ARI", "NMI_map", "ARI_map", "background (%)", "parts at landmarks",
                "fit (s)"], cells, args.out)


if __name__ == "__main__":
    main()
