"""Does fusing the proposals of several checkpoints beat its members? One table (quality log, section 27).

Each checkpoint is scored alone, then the ensembles of the first 2, 3, ... N checkpoints
(:func:`lmpcli.evaluate.evaluate` with several ``weights``: every checkpoint runs both its
networks on the same input, its maps get their own filter selection, all proposals go into one
clustering and the logits are averaged). Every row is scored on the same images with the
checkpoints' own test-time defaults; the ensemble rows also give the change against the mean of
their members. Greedy PCK@0.1 per rank, average, part recall@0.1 and accuracy, in %.
Cost: 2 N forwards of both networks per image (N alone, N for the ensembles, which share them).

    python benchmarks/seed_ensemble.py --data ../shared/data/cub50 --weights runs/seed0/model.pt runs/seed1/model.pt [--limit 400] [--out table.md]
"""

from __future__ import annotations

import statistics
import time

from _cub import cub_parser
from _markdown import emit_table
from lmpcli.evaluate import evaluate
from lmpcli.settings import KeypointSettings

MEASURES = ("KP1", "KP2", "KP3", "KP4", "KP5", "avg", "recall", "acc")


def main() -> None:
    ap = cub_parser(__doc__, several_weights="two or more checkpoints of one recipe, e.g. one per seed")
    args = ap.parse_args()
    if len(args.weights) < 2:
        ap.error("an ensemble needs at least two checkpoints")

    start = time.time()
    common = dict(split=args.split, settings=KeypointSettings(k=5), limit=args.limit, workers=args.workers, batch_size=args.batch_size,
                  baselines=False)
    alone = [evaluate(args.data, weights=w, **common)["table"].set_index("method").loc["lmpnet"] for w in args.weights]
    n = len(args.weights)
    variants = {f"first{m}": {"members": m} for m in range(2, n)}
    fused = evaluate(args.data, weights=args.weights, variants=variants, **common)["table"].set_index("method")

    rows = [[w] + [f"{r[c]:.1f}" for c in MEASURES] + [""] for w, r in zip(args.weights, alone)]
    for m in range(2, n + 1):
        r = fused.loc["lmpnet" if m == n else f"first{m}"]
        delta = {c: r[c] - statistics.mean(a[c] for a in alone[:m]) for c in ("avg", "recall", "acc")}
        rows.append([f"ensemble of the first {m}"] + [f"{r[c]:.1f}" for c in MEASURES]
                    + [" / ".join(f"{delta[c]:+.1f}" for c in ("avg", "recall", "acc"))])
    emit_table(f"{args.data} {args.split}, {args.limit or 'all'} images, k = 5, {time.time() - start:.0f} s; "
               "greedy PCK@0.1 per rank, part recall@0.1, accuracy (%)",
               ["checkpoints", *MEASURES, "Δ avg / recall / acc against the members' mean"], rows, args.out)


if __name__ == "__main__":
    main()
