"""Training seeds x recipes for the parts (quality log section 43, item 1): one row per network from
``lmp evaluate --method lmpnet,parts`` reports, and each recipe's mean and spread.

    python benchmarks/recipe_seeds_table.py                 # sections 43 and 45: nine networks
    python benchmarks/recipe_seeds_table.py --out table.md

Each network's parts are the part model ``lmp train`` fitted (k-means seed = training seed; the
file shipped until section 44 has k-means seed 0). Since section 44 crop scale 0.25 is the default
and its seed-0 network the shipped file. Section 45 adds crop scale 0.08 (torchvision's
default), three training seeds. Columns: the ranked keypoints' (``lmpnet``) greedy PCK and part
recall, accuracy, and the parts' Kp, NMI_map, ARI_map, greedy PCK and part recall.
"""

from __future__ import annotations

import argparse
import statistics

from _markdown import emit_table
from compare_reports import load_rows

S41, S42, S43, S45 = ("docs/experiments/s41-pose-parts", "docs/experiments/s42-species-parts",
                      "docs/experiments/s43-recipe-seeds", "docs/experiments/s45-crop008")
NETWORKS = [  # (recipe, training seed, report)
    ("crop scale 0.6 (default until §44)", 0, f"{S41}/eval-test-shipped.json"),
    ("crop scale 0.6 (default until §44)", 1, f"{S43}/eval-test-wd1-seed1.json"),
    ("crop scale 0.6 (default until §44)", 2, f"{S43}/eval-test-wd1-seed2.json"),
    ("crop scale 0.25 (default since §44)", 0, f"{S42}/eval-test-crop025.json"),
    ("crop scale 0.25 (default since §44)", 1, f"{S42}/eval-test-crop025-seed1.json"),
    ("crop scale 0.25 (default since §44)", 2, f"{S43}/eval-test-crop025-seed2.json"),
    ("crop scale 0.08 (§45)", 0, f"{S45}/eval-test-crop008.json"),
    ("crop scale 0.08 (§45)", 1, f"{S45}/eval-test-crop008-seed1.json"),
    ("crop scale 0.08 (§45)", 2, f"{S45}/eval-test-crop008-seed2.json"),
]
COLUMNS = [("lmpnet", "avg"), ("lmpnet", "recall"), ("lmpnet", "acc"), ("parts", "Kp"), ("parts", "NMI_map"),
           ("parts", "ARI_map"), ("parts", "avg"), ("parts", "recall")]


def values(report: str) -> list[float]:
    """The COLUMNS of one ``lmp evaluate`` JSON report (rows read by ``compare_reports.load_rows``)."""
    rows = {m: load_rows(report, m)[0] for m in {m for m, _ in COLUMNS}}
    return [float(rows[m][c]) for m, c in COLUMNS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    rows, by_recipe = [], {}
    for recipe, seed, report in NETWORKS:
        v = values(report)
        by_recipe.setdefault(recipe, []).append(v)
        rows.append([recipe, str(seed), *(f"{x:.2f}" for x in v)])
    for recipe, vs in by_recipe.items():
        cols = list(zip(*vs))
        rows.append([f"**{recipe}, mean +- sd**", f"{len(vs)} seeds",
                     *(f"{statistics.mean(c):.2f} +- {statistics.stdev(c):.2f}" for c in cols)])
    emit_table("training seeds x recipes, all 1,389 cub50 test images (lmp evaluate --method lmpnet,parts)",
               ["recipe", "seed", "ranked greedy PCK", "ranked part recall", "accuracy", "parts Kp", "NMI_map",
                "ARI_map", "parts greedy PCK", "parts part recall"], rows, args.out)


if __name__ == "__main__":
    main()
