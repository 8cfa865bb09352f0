"""benchmarks/recipe_seeds_table.py (quality log section 43): the columns read from a report, and
the committed reports it tabulates exist."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import recipe_seeds_table as bench  # noqa: E402


def test_values_reads_the_ranked_and_part_columns_by_method(tmp_path):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"results": [
        {"method": "parts", "avg": 85.0, "recall": 80.0, "acc": 68.0, "Kp": 9.9, "NMI_map": 44.0, "ARI_map": 29.0},
        {"method": "lmpnet", "avg": 80.0, "recall": 67.0, "acc": 68.0, "Kp": 17.0},
    ]}))
    assert bench.values(str(report)) == [80.0, 67.0, 68.0, 9.9, 44.0, 29.0, 85.0, 80.0]


def test_the_tabulated_reports_are_committed():
    missing = [r for _, _, r in bench.NETWORKS if not (ROOT / r).is_file()]
    assert not missing, missing
