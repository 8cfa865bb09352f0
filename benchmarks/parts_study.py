"""Issue 25 part-model study (docs/quality-log.md section 30): which part model, which K.

    python benchmarks/parts_study.py cache --data ../shared/data/cub50 --split train
    python benchmarks/parts_study.py cache --data ../shared/data/cub50 --split test
    python benchmarks/parts_study.py score --data ../shared/data/cub50                  # the choice (train halves)
    python benchmarks/parts_study.py score --data ../shared/data/cub50 --methods nmf --test   # the test split
    python benchmarks/parts_study.py ship --data ../shared/data/cub50 --method nmf --k 8 --out NEW.pt

``cache`` writes ``CACHE/SPLIT/chunk_NNN.pt`` holding the main network's final-conv maps
``features`` (n, C, h, w) float16 and ``index`` (n,) dataset indices; an existing chunk is
skipped, so a killed run continues where it stopped.

``score`` fits every method at K = 4, 8, 16 on all train maps (no labels) and prints Kp / NMI /
ARI (lmpcli.landmarks, Huang & Li's protocol; NMI / ARI adapted to points). Without ``--test``
the regressors are fit on the even-numbered train images and scored on the odd-numbered ones
(the choice never sees the test split); with ``--test`` they are fit on all train images and
scored on all test images. Results are kept in ``--results`` (JSON) so a rerun skips done rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.checkpoint import atomic_torch_save, load_model
from lmpcli.data import CUBDataset, eval_transform, spread_subset
from lmpcli.parts import extract_features

CHUNK = 100


def cache(args) -> None:
    model, _ = load_model(args.weights)
    cfg = model.config
    ds = CUBDataset(args.data, args.split, eval_transform(cfg.image_size, cfg.mean, cfg.std))
    out = Path(args.cache) / args.split
    out.mkdir(parents=True, exist_ok=True)
    order = spread_subset(len(ds), args.limit)
    start = time.perf_counter()
    for c in range(0, len(order), CHUNK):
        path = out / f"chunk_{c // CHUNK:03d}.pt"
        if path.exists():
            continue
        idx = order[c: c + CHUNK]
        loader = DataLoader(Subset(ds, idx), batch_size=args.batch_size, num_workers=1,
                            collate_fn=lambda items: {"image": torch.stack([i["image"] for i in items])})
        feats = torch.cat([f.half() for _, f in extract_features(model, loader)])
        atomic_torch_save({"features": feats, "index": torch.tensor(idx)}, path)
        print(f"{args.split} {c + len(idx)}/{len(order)} {time.perf_counter() - start:.0f} s", flush=True)


def load_cache(cache_dir, split: str) -> tuple[torch.Tensor, list[int]]:
    """((N, C, h, w) float16 maps, their N dataset indices) of a cached split."""
    chunks = sorted((Path(cache_dir) / split).glob("chunk_*.pt"))
    if not chunks:
        raise SystemExit(f"no cache for {split}; run the cache step first")
    parts = [torch.load(c, weights_only=True) for c in chunks]
    return torch.cat([p["features"] for p in parts]), torch.cat([p["index"] for p in parts]).tolist()


def ground_truth(data, split: str, index: list[int]):
    """(landmarks (N, 15, 2) pixels, visible (N, 15), boxes (N, 4) bx, by, bw, bh, sizes (N, 2) W, H) of ``index``."""
    from PIL import Image

    ds = CUBDataset(data, split)
    boxes = torch.tensor(ds.table[["bx", "by", "bw", "bh"]].to_numpy()[index], dtype=torch.float64)
    sizes = torch.tensor([Image.open(ds.path(i)).size for i in index], dtype=torch.float64)
    return ds.keypoints[index].double(), ds.visible[index], boxes, sizes


def score(args) -> None:
    import json

    from lmpcli.landmarks import normalise_to_box, part_discovery_metrics
    from lmpcli.parts import fit_part_model, part_keypoints

    model, _ = load_model(args.weights)
    size = model.config.image_size
    train, index = load_cache(args.cache, "train")
    gt_train = ground_truth(args.data, "train", index)
    if args.test:
        test, index = load_cache(args.cache, "test")
        gt_test = ground_truth(args.data, "test", index)
    print(f"{len(train)} train images" + (f", {len(test)} test images" if args.test else ""), flush=True)
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    setting = "test" if args.test else "train-halves"

    def located(pm, feats, gt):
        xy = torch.cat([part_keypoints(pm, feats[i: i + 64].float(), (size, size))[0]
                        for i in range(0, len(feats), 64)]).double()
        pix = xy * (gt[3] / size)[:, None, :]  # original-image pixels
        return pix, normalise_to_box(pix, gt[2]), normalise_to_box(gt[0], gt[2])

    for method in args.methods:
        for k in args.k:
            key = f"{setting}/{method}/{k}"
            if key in results:
                continue
            start = time.perf_counter()
            pm = fit_part_model(train, k, method, seed=args.seed)
            fit_s = time.perf_counter() - start
            pix, kp, lm = located(pm, train, gt_train)
            vis = gt_train[1]
            if args.test:
                tpix, tkp, tlm = located(pm, test, gt_test)
                tr, te = (kp, lm, vis), (tkp, tlm, gt_test[1])
                te_pix, absent = (tpix, gt_test[0], gt_test[1]), torch.isnan(tpix[..., 0]).double().mean()
            else:
                a, b = slice(0, None, 2), slice(1, None, 2)
                tr, te = (kp[a], lm[a], vis[a]), (kp[b], lm[b], vis[b])
                te_pix, absent = (pix[b], gt_train[0][b], vis[b]), torch.isnan(pix[b][..., 0]).double().mean()
            m = part_discovery_metrics(tr, te, te_pix)
            results[key] = {**m, "absent": 100 * float(absent), "fit_s": fit_s}
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=1))
            print(f"{key}: Kp {m['Kp']:.2f} NMI {m['NMI']:.1f} ARI {m['ARI']:.1f} "
                  f"absent {100 * float(absent):.1f} % fit {fit_s:.0f} s", flush=True)
    print("\n| setting | method | K | Kp | NMI | ARI | parts absent (%) | fit (s) |\n|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        st, method, k = key.split("/")
        print(f"| {st} | {method} | {k} | {r['Kp']:.2f} | {r['NMI']:.1f} | {r['ARI']:.1f} | {r['absent']:.1f} | {r['fit_s']:.0f} |")


def ship(args) -> None:
    """Fit the chosen part model on the cached train maps and write a new checkpoint (as lmp fit-parts does)."""
    from lmpcli.checkpoint import DEFAULT_WEIGHTS, read_checkpoint
    from lmpcli.outputs import check_writable
    from lmpcli.parts import fit_part_model, write_part_checkpoint

    source = Path(args.weights or DEFAULT_WEIGHTS)
    if Path(args.out).resolve() == source.resolve():
        raise SystemExit("--out must not be the input checkpoint")
    check_writable(args.out, False)
    train, index = load_cache(args.cache, "train")
    start = time.perf_counter()
    pm = fit_part_model(train, args.k, args.method, seed=args.seed)
    pm.meta.update({"data": str(args.data), "split": "train", "fit_seconds": round(time.perf_counter() - start, 1),
                    "command": " ".join(["python", *sys.argv])})
    write_part_checkpoint(read_checkpoint(source), pm, args.out)
    print(f"{len(index)} train images, K = {args.k} ({args.method}), fit {pm.meta['fit_seconds']:.0f} s -> {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("--data", required=True)
    c.add_argument("--split", default="train")
    c.add_argument("--cache", default="runs/parts-cache")
    c.add_argument("--weights", default=None)
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--limit", type=int, default=None, help="N images spread evenly over the split (every class)")
    s = sub.add_parser("score")
    s.add_argument("--data", required=True)
    s.add_argument("--cache", default="runs/parts-cache")
    s.add_argument("--weights", default=None)
    s.add_argument("--methods", nargs="+", default=["filters", "kmeans", "nmf"])
    s.add_argument("--k", nargs="+", type=int, default=[4, 8, 16])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--test", action="store_true", help="fit regressors on all train images, score the test split")
    s.add_argument("--results", default="runs/parts-study.json")
    h = sub.add_parser("ship", help="fit on the cached train maps and write WEIGHTS + parts to --out")
    h.add_argument("--data", required=True)
    h.add_argument("--cache", default="runs/parts-cache")
    h.add_argument("--weights", default=None)
    h.add_argument("--out", required=True)
    h.add_argument("--method", required=True)
    h.add_argument("--k", type=int, required=True)
    h.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    {"cache": cache, "score": score, "ship": ship}[args.cmd](args)


if __name__ == "__main__":
    main()
