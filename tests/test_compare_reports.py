"""benchmarks/compare_reports.py: the rule checks of quality-log section 26 on its committed reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from compare_reports import check_rule, load_rows  # noqa: E402

E = ROOT / "docs" / "experiments"
WD1 = [E / f"s23-weight-decay/eval-test-wd1-seed{s}.json" for s in (0, 1)]
WD1_BN = [E / f"s26-batch-norm/eval-test-wd1-bn-seed{s}.json" for s in (0, 1)]
WD3_BN = [E / f"s26-batch-norm/eval-test-wd3-bn-seed{s}.json" for s in (0, 1)]


def diffs(new, old):
    return [{m: load_rows(a)[0][m] - load_rows(b)[0][m] for m in ("avg", "recall", "acc")} for a, b in zip(new, old)]


def test_section_26_rows_and_rules():
    row, channel_mean, label = load_rows(WD1[0])
    assert label == "runs/wd1-seed0/model.pt"
    assert (round(row["avg"], 1), round(row["recall"], 1), round(row["acc"], 1)) == (81.2, 66.4, 67.9)
    assert (round(channel_mean["avg"], 1), round(channel_mean["recall"], 1)) == (73.0, 39.6)
    a = diffs(WD1_BN, WD1)  # rule A: recalibration costs 3.7 and 2.7 average points
    assert [round(d["avg"], 1) for d in a] == [-3.7, -2.7]
    assert check_rule("no-harm", a)[0] is False
    b = diffs(WD3_BN, WD1_BN)  # rule B's arithmetic: average +3.4 and +1.6, mean +2.5
    assert [round(d["avg"], 1) for d in b] == [3.4, 1.6]
    assert check_rule("gain", b)[0] is True


@pytest.mark.parametrize("pairs, expected", [
    ([{"avg": 2.5, "recall": -0.2, "acc": 0}, {"avg": 2.5, "recall": -0.2, "acc": 0}], True),
    ([{"avg": 4.5, "recall": 0.0, "acc": 0}, {"avg": -0.1, "recall": 0.0, "acc": 0}], False),  # not up in every pair
    ([{"avg": 3.0, "recall": -2.5, "acc": 0}, {"avg": 3.0, "recall": 1.5, "acc": 0}], False),  # one pair's recall -2.5
    ([{"avg": 0.0, "recall": 2.0, "acc": 0}, {"avg": -0.5, "recall": 2.0, "acc": 0}], True),   # the recall branch
])
def test_gain_rule(pairs, expected):
    assert check_rule("gain", pairs)[0] is expected


def test_no_harm_rule_limits():
    assert check_rule("no-harm", [{"avg": -0.5, "recall": -0.5, "acc": -1.0}])[0] is True
    assert check_rule("no-harm", [{"avg": -0.6, "recall": 0.0, "acc": 0.0}])[0] is False
    assert check_rule("no-harm", [{"avg": 0.0, "recall": 0.0, "acc": -1.1}])[0] is False


def test_script_prints_the_verdicts(tmp_path):
    out = tmp_path / "t.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare_reports.py"), *map(str, WD1),
         "--compare", "rule A", "no-harm", ",".join(map(str, WD1_BN)), ",".join(map(str, WD1)), "--out", str(out)],
        capture_output=True, text=True, check=True)
    assert "| runs/wd1-seed0/model.pt | 89.4 | 84.4 | 81.6 | 77.1 | 73.7 | 81.2 | 66.4 |" in run.stdout
    assert "rule A (no-harm): fails" in run.stdout
    assert "| mean | -3.2 | -1.6 | +0.6 |" in out.read_text()
