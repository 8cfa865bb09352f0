"""How much does the training seed move the scores? Several checkpoints of one recipe, one table.

Each checkpoint (e.g. ``lmp train ... --seed N`` for N = 0..3) is scored on the same images by
:func:`lmpcli.evaluate.evaluate` with its own test-time defaults, and with two variants that
re-cluster the same forward passes: thr 2 with cell peaks (the defaults before quality-log
section 17) and thr 1.2 with cell peaks (before section 18). The channel-mean baseline runs on
each checkpoint's own feature maps. The last row gives mean ± sample sd over the checkpoints
(quality log, section 20). Greedy PCK@0.1 average / part recall@0.1, in %.

``--image-size S`` runs every checkpoint on S x S inputs (the checkpoint's thr rescaled by
S / training size; quality log, section 21) and adds a column that keeps thr at 1.2 cells; the
variant columns give thr in cells of the maps at that size.

    python benchmarks/seed_spread.py --data ../shared/data/cub50 --weights weights/lmpnet-lite0-cub50.pt runs/seed1/model.pt [--limit 400] [--image-size 512] [--out table.md] [--reports a.json b.json]
"""

from __future__ import annotations

import statistics
import time

from _cub import cub_parser
from _markdown import emit_table
from lmpcli.evaluate import evaluate, write_report
from lmpcli.settings import KeypointSettings

VARIANTS = {"thr2-cell": {"thr": 2.0, "subcell": False}, "thr1.2-cell": {"thr": 1.2, "subcell": False}}
COLUMNS = [("defaults", "lmpnet"), ("thr 2, cell peaks", "thr2-cell"), ("thr 1.2, cell peaks", "thr1.2-cell"),
           ("channel-mean baseline", "channel-mean")]


def main() -> None:
    ap = cub_parser(__doc__, several_weights="checkpoints of one recipe, e.g. one per seed")
    ap.add_argument("--image-size", type=int, default=None, help="test-time input side, pixels (default: as trained)")
    ap.add_argument("--reports", nargs="+", default=None,
                    help="one JSON path per checkpoint: its full evaluation report (ranks, part groups, variants)")
    args = ap.parse_args()
    if args.reports and len(args.reports) != len(args.weights):
        ap.error(f"--reports needs one path per checkpoint ({len(args.weights)}), got {len(args.reports)}")

    variants, columns = dict(VARIANTS), list(COLUMNS)
    if args.image_size:
        variants["thr1.2-cells"] = {"thr": 1.2}
        columns.insert(1, ("thr 1.2 cells (not rescaled)", "thr1.2-cells"))
    start = time.time()
    tables = []
    for i, w in enumerate(args.weights):
        report = evaluate(args.data, split=args.split, weights=w, methods=["lmpnet"], baselines=True,
                          settings=KeypointSettings(k=5, image_size=args.image_size), limit=args.limit,
                          workers=args.workers, batch_size=args.batch_size,
                          variants=variants)
        if args.reports:
            write_report(report, args.reports[i], overwrite=True)
        tables.append(report["table"].set_index("method"))

    def cell(values: list[float]) -> str:
        """One value, or mean ± sample sd over the checkpoints."""
        if len(values) == 1:
            return f"{values[0]:.1f}"
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    def row(label: str, group: list) -> list[str]:
        return ([label] + [f"{cell([t.loc[key, 'avg'] for t in group])} / {cell([t.loc[key, 'recall'] for t in group])}"
                           for _, key in columns] + [cell([t.loc["lmpnet", "acc"] for t in group])])

    rows = [row(w, [t]) for w, t in zip(args.weights, tables)]
    if len(tables) > 1:
        rows.append(row("mean ± sd", tables))
    size = f", {args.image_size} px" if args.image_size else ""
    emit_table(f"{args.data} {args.split}, {args.limit or 'all'} images{size}, k = 5, {time.time() - start:.0f} s; "
               "greedy PCK avg / part recall (%)",
               ["checkpoint"] + [name for name, _ in columns] + ["accuracy"], rows, args.out)


if __name__ == "__main__":
    main()
