"""Class-held-out parts, the part-model half (docs/quality-log.md section 35, item 3).

    python benchmarks/named_landmarks.py cache --data ../shared/data/cub50 --cache runs/named_landmarks
    python benchmarks/parts_held_out.py --data ../shared/data/cub50 --cache runs/named_landmarks

From the cache of ``benchmarks/named_landmarks.py`` (the checkpoint's final-conv maps of every
image; no network runs here): a part model (``kmeans-centred``, K = 8, as ``lmp fit-parts``) is
fit on the train images of the seen classes only (default CUB ids 1-40; no labels read), the Kp
regressors on the same train images, and Kp / NMI / ARI are scored on the test images of the
unseen classes (41-50) and of the seen ones. Control rows: the checkpoint's own part model (fit
on the train images of every class) and the ranks, with the same regressors' images.

The network is the checkpoint's: for the shipped weights it was trained on all 50 classes, so
this measures the part model and the regressors on unseen classes, not the network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.checkpoint import load_model
from lmpcli.parts import DEFAULT_PART_METHOD, DEFAULT_PARTS, fit_part_model, part_keypoints
from lmpcli.part_metrics import part_metric_rows

from _markdown import emit_table
from named_landmarks import class_range, load_split, take


def part_xy(model, part_model, features: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """(N, K, 2) part keypoints in original-image pixels from cached (N, C, h, w) maps, as
    ``lmp predict --method parts`` places them (NaN = absent)."""
    s = model.config.image_size
    xy = torch.cat([part_keypoints(part_model, features[i:i + 64].float(), (s, s), model.cell_centre())[0]
                    for i in range(0, len(features), 64)])
    return xy * (sizes.float() / s)[:, None, :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", default="runs/named_landmarks")
    ap.add_argument("--weights", default=None, help="the checkpoint the cache was made with")
    ap.add_argument("--seen", default="1-40", help="CUB class ids the part model and the regressors are fit on")
    ap.add_argument("--unseen", default="41-50")
    ap.add_argument("--k", type=int, default=8, help="parts (8: the K of quality log sections 35-36, the library's "
                                                      f"default then; today's: {DEFAULT_PARTS})")
    ap.add_argument("--method", default=DEFAULT_PART_METHOD)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_model(args.weights)
    train, test = load_split(args.cache, "train", features=True), load_split(args.cache, "test", features=True)
    seen, unseen = class_range(args.seen), class_range(args.unseen)

    def rows_of(d, ids):
        return torch.tensor([c in ids for c in d["class_id"].tolist()]).nonzero().flatten()

    fit = take(train, rows_of(train, seen))
    held_out = fit_part_model(fit["features"], args.k, args.method, seed=args.seed)
    shipped = getattr(model, "part_model", None)
    if shipped is not None and "parts" in test["xy"]:
        check = (part_xy(model, shipped, test["features"], test["size"]) - test["xy"]["parts"]).abs().amax(-1)
        moved = 100 * (check.nan_to_num(0) > 1).float().mean().item()
        print(f"check: the checkpoint's part model on the cached float16 maps against the parts cached from the network: "
              f"{moved:.2f} % of the test parts moved by more than 1 px (max {check.nan_to_num(0).max():.1f} px), "
              f"absent alike: {bool((check.isnan() == test['xy']['parts'][..., 0].isnan()).all())}")
    subsets = {f"unseen {args.unseen}": take(test, rows_of(test, unseen)), f"seen {args.seen}": take(test, rows_of(test, seen))}
    cells = []
    models = [(f"fit on train classes {args.seen} only", held_out)]
    if shipped is not None:
        models.append(("the checkpoint's own", shipped))
    if "lmpnet" in fit["xy"]:
        models.append(("none: the ranks (lmpnet)", None))
    for label, pm in models:
        name = "lmpnet" if pm is None else "parts"
        f = dict(fit, xy={name: fit["xy"][name] if pm is None else part_xy(model, pm, fit["features"], fit["size"])})
        for sub_label, sub in subsets.items():
            t = dict(sub, xy={name: sub["xy"][name] if pm is None else part_xy(model, pm, sub["features"], sub["size"])})
            r = part_metric_rows(f, t, [name])
            absent = 100 * t["xy"][name][..., 0].isnan().float().mean().item()
            cells.append([label, sub_label, str(len(sub["indices"])), *(f"{r[name][c]:.2f}" for c in ("Kp", "NMI", "ARI")),
                          f"{r['mean-landmark']['Kp']:.2f}", f"{absent:.1f}"])
    emit_table(f"class-held-out part model: {len(fit['indices'])} train images of classes {args.seen} fit the part model "
               f"(K = {args.k}, {args.method}) and the Kp regressors; the network is the checkpoint's ("
               + ("shipped, which saw every class)" if args.weights is None else f"{args.weights})"),
               ["part model", "test classes", "test images", "Kp", "NMI", "ARI", "mean-landmark Kp", "absent (%)"],
               cells, args.out)


if __name__ == "__main__":
    main()
