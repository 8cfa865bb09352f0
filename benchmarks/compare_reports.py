"""Several ``lmp evaluate --out X.json`` reports side by side, and paired rule checks between them.

Prints the LMPNet row of every report in one markdown table: greedy PCK@0.1 per rank, the average,
part recall@0.1 overall and per part group, accuracy, and the channel-mean baseline's average and
part recall from the same report. This is the layout of the quality log's tables (section 26).

``--compare NAME RULE NEW OLD`` then checks a decision rule on paired reports. NEW and OLD are
comma-separated lists of reports of the same length, paired by position, e.g. by seed. It prints
the per-pair and mean differences (NEW − OLD) of the average, part recall and accuracy, then the
verdict. Differences are taken before rounding, so one can differ by 0.1 from the
difference of the rounded table values. Two rules are built in:

* ``no-harm`` (section 26, rule A): on the mean over pairs, the average and part recall fall by at
  most 0.5 and accuracy by at most 1.
* ``gain`` (section 23's rule, section 26 rule B): on the mean over pairs, one measure (average or
  part recall) rises by at least 2 while the other falls by at most 0.5; and, pair by pair, that
  measure rises in every pair and the other falls by at most 2 in any pair.

Only reads reports, so it runs in a second. Section 26, from the committed reports (it replaces
the session script ``runs/table26.py``, which is not in the repository)::

    E=docs/experiments
    python benchmarks/compare_reports.py \\
      $E/s23-weight-decay/eval-test-wd1-seed0.json $E/s23-weight-decay/eval-test-wd1-seed1.json \\
      $E/s26-batch-norm/eval-test-wd1-bn-seed0.json $E/s26-batch-norm/eval-test-wd1-bn-seed1.json \\
      $E/s25-weight-decay-3/eval-test-wd3-seed0.json $E/s25-weight-decay-3/eval-test-wd3-seed1.json \\
      $E/s26-batch-norm/eval-test-wd3-bn-seed0.json $E/s26-batch-norm/eval-test-wd3-bn-seed1.json \\
      --compare "rule A" no-harm \\
        $E/s26-batch-norm/eval-test-wd1-bn-seed0.json,$E/s26-batch-norm/eval-test-wd1-bn-seed1.json \\
        $E/s23-weight-decay/eval-test-wd1-seed0.json,$E/s23-weight-decay/eval-test-wd1-seed1.json \\
      --compare "rule B" gain \\
        $E/s26-batch-norm/eval-test-wd3-bn-seed0.json,$E/s26-batch-norm/eval-test-wd3-bn-seed1.json \\
        $E/s26-batch-norm/eval-test-wd1-bn-seed0.json,$E/s26-batch-norm/eval-test-wd1-bn-seed1.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _markdown import emit_table

RANKS = ("KP1", "KP2", "KP3", "KP4", "KP5")
GROUPS = ("head", "body", "wings", "tail", "legs")
PAIRED = ("avg", "recall", "acc")


def load_rows(path: str, method: str = "lmpnet") -> tuple[dict, dict | None, str]:
    """(``method`` row, channel-mean row or None, label: the checkpoint path) of one report.

    Raises:
        SystemExit: the file is not a report with a ``method`` row.
    """
    report = json.loads(Path(path).read_text())
    rows = {r["method"]: r for r in report.get("results", [])}
    if method not in rows:
        raise SystemExit(f"{path}: no '{method}' row (rows: {', '.join(rows) or 'none'})")
    weights = report.get("config", {}).get("weights", path)
    label = " + ".join(weights) if isinstance(weights, list) else str(weights)
    return rows[method], rows.get("channel-mean"), label


def check_rule(rule: str, diffs: list[dict]) -> tuple[bool, str]:
    """Verdict of ``rule`` (``no-harm`` or ``gain``) on per-pair differences ``{avg, recall, acc}``."""
    mean = {m: statistics.mean(d[m] for d in diffs) for m in PAIRED}
    if rule == "no-harm":
        ok = mean["avg"] >= -0.5 and mean["recall"] >= -0.5 and mean["acc"] >= -1
        return ok, "mean average and part recall down by at most 0.5, accuracy by at most 1"
    for up, other in (("avg", "recall"), ("recall", "avg")):
        if (mean[up] >= 2 and mean[other] >= -0.5
                and all(d[up] > 0 for d in diffs) and all(d[other] >= -2 for d in diffs)):
            return True, f"{up} +2 on the mean and up in every pair; {other} within the limits"
    return False, "neither measure rises by 2 on the mean (with the other down by at most 0.5) and in every pair"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="*", help="reports whose LMPNet rows form the table")
    ap.add_argument("--labels", nargs="+", default=None, help="one row label per report (default: its checkpoint)")
    ap.add_argument("--compare", nargs=4, action="append", default=[], metavar=("NAME", "RULE", "NEW", "OLD"),
                    help="check RULE (no-harm or gain) on comma-separated NEW against OLD reports, paired by position")
    ap.add_argument("--out", default=None, help="also write the markdown tables here")
    args = ap.parse_args()
    if args.labels and len(args.labels) != len(args.reports):
        ap.error(f"--labels needs one label per report ({len(args.reports)}), got {len(args.labels)}")
    for name, rule, new, old in args.compare:
        if rule not in ("no-harm", "gain"):
            ap.error(f"--compare {name}: rule must be no-harm or gain, not {rule!r}")
        if len(new.split(",")) != len(old.split(",")):
            ap.error(f"--compare {name}: NEW and OLD need the same number of reports")

    text = []
    if args.reports:
        rows = []
        for i, path in enumerate(args.reports):
            r, cm, label = load_rows(path)
            baseline = f"{cm['avg']:.1f} / {cm['recall']:.1f}" if cm else ""
            rows.append([args.labels[i] if args.labels else label]
                        + [f"{r[c]:.1f}" for c in (*RANKS, "avg", "recall")]
                        + [f"{r['recall_' + g]:.1f}" for g in GROUPS] + [f"{r['acc']:.1f}", baseline])
        text.append(emit_table("LMPNet rows; greedy PCK@0.1 per rank and average, part recall@0.1, accuracy (%)",
                               ["model", *RANKS, "avg", "recall", *GROUPS, "acc", "channel-mean avg / recall"], rows))
    for name, rule, new, old in args.compare:
        pairs = list(zip(new.split(","), old.split(",")))
        diffs, rows = [], []
        for a, b in pairs:
            (ra, _, la), (rb, _, lb) = load_rows(a), load_rows(b)
            diffs.append({m: ra[m] - rb[m] for m in PAIRED})
            rows.append([f"{la} − {lb}"] + [f"{diffs[-1][m]:+.1f}" for m in PAIRED])
        rows.append(["mean"] + [f"{statistics.mean(d[m] for d in diffs):+.1f}" for m in PAIRED])
        ok, why = check_rule(rule, diffs)
        print()
        text.append(emit_table(f"{name} ({rule}): {'passes' if ok else 'fails'}: {why}",
                               ["pair (new − old)", "Δ avg", "Δ recall", "Δ acc"], rows))
    if args.out:
        Path(args.out).write_text("\n\n".join(text) + "\n")


if __name__ == "__main__":
    main()
