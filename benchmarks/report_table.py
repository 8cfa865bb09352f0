"""Print an ``lmp evaluate --out X.json`` report as markdown tables (for the README and docs).

    python benchmarks/report_table.py docs/experiments/s23-weight-decay/eval-test.json [--groups]
"""

from __future__ import annotations

import argparse
import json
import math


def fmt(v, digits: int = 1) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    ap.add_argument("--groups", action="store_true", help="also print part recall per part group")
    args = ap.parse_args()
    rep = json.load(open(args.report))
    rows = rep["results"]
    ranks = [c for c in rows[0] if c.startswith("KP")]
    head = ["method", *ranks, "avg", "part recall", "accuracy", "images/s"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        # no accuracy = no network run (centre); reports written before evaluate() said so carry a bogus speed
        speed = fmt(float("nan") if math.isnan(r["acc"]) else r["images_per_s"], 2)
        print("| " + " | ".join([r["method"], *[fmt(r[c]) for c in ranks], fmt(r["avg"]), fmt(r["recall"]),
                                 fmt(r["acc"]), speed]) + " |")
    if args.groups:
        groups = [c for c in rows[0] if c.startswith("recall_")]
        print("\n| part recall (%) | " + " | ".join(g.removeprefix("recall_") for g in groups) + " |")
        print("|" + "---|" * (len(groups) + 1))
        for r in rows:
            print("| " + " | ".join([r["method"], *[fmt(r[g]) for g in groups]]) + " |")


if __name__ == "__main__":
    main()
