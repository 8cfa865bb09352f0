"""``lmp evaluate``'s rows for part checkpoints, from the named-landmarks cache (quality log 35, item 1).

    python benchmarks/named_landmarks.py cache --data ../shared/data/cub50 --cache runs/named_landmarks
    lmp fit-parts weights/lmpnet-lite0-cub50.pt --data ../shared/data/cub50 --k 4 --out runs/parts4.pt
    python benchmarks/part_rows.py --data ../shared/data/cub50 --cache runs/named_landmarks --parts runs/parts4.pt

Each ``--parts`` checkpoint's part model (fitted to the network the cache was made with) is
applied to the cached final-conv maps of every test and train image, so no network runs; the
row is the one ``lmp evaluate --method parts --fit-images N`` prints: greedy PCK and part recall
at alpha 0.1 (:mod:`lmpcli.metrics`), and Kp / NMI / ARI with regressors fit on every cached
train image (:func:`lmpcli.part_metrics.part_metric_rows`). The cached rows (the cache's own
part model ``parts`` and the ranks ``lmpnet``) come first, as a check against ``lmp evaluate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.checkpoint import load_model, read_checkpoint
from lmpcli.metrics import greedy_pck, part_recall
from lmpcli.part_metrics import part_metric_rows
from lmpcli.parts import part_model_from_checkpoint

from _markdown import emit_table
from named_landmarks import load_split
from parts_held_out import part_xy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", default="runs/named_landmarks")
    ap.add_argument("--weights", default=None, help="the checkpoint the cache was made with")
    ap.add_argument("--parts", nargs="*", default=[], help="checkpoints whose part model to score (same network)")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_model(args.weights)
    train, test = load_split(args.cache, "train", features=True), load_split(args.cache, "test", features=True)
    rows = {name: name for name in test["xy"]}  # row label -> key of xy
    for path in args.parts:
        pm = part_model_from_checkpoint(read_checkpoint(path))
        if pm is None:
            raise SystemExit(f"{path} has no part model")
        label = f"parts K = {pm.k} ({Path(path).name})"
        train["xy"][label] = part_xy(model, pm, train["features"], train["size"])
        test["xy"][label] = part_xy(model, pm, test["features"], test["size"])
        rows[label] = label
    metrics = part_metric_rows(train, test, list(rows.values()))
    cells = []
    for label, key in [*rows.items(), ("mean-landmark", None)]:
        if key is None:
            cells.append([label, "–", "–", f"{metrics[label]['Kp']:.2f}", "–", "–", "–"])
            continue
        xy = test["xy"][key]
        pck = 100 * greedy_pck(xy, test["keypoints"], test["visible"], test["size"]).float().mean().item()
        hit = part_recall(xy, test["keypoints"], test["visible"], test["size"])
        recall = 100 * hit.sum().item() / test["visible"].sum().item()
        absent = 100 * xy[..., 0].isnan().float().mean().item()
        cells.append([label, f"{pck:.1f}", f"{recall:.1f}", *(f"{metrics[key][c]:.2f}" for c in ("Kp", "NMI", "ARI")),
                      f"{absent:.1f}"])
    emit_table(f"{len(test['indices'])} test images, regressors fit on {len(train['indices'])} train images "
               f"(cache {args.cache}, network {args.weights or 'shipped'}); greedy PCK and part recall at alpha 0.1",
               ["row", "greedy PCK", "part recall", "Kp", "NMI", "ARI", "absent (%)"], cells, args.out)


if __name__ == "__main__":
    main()
