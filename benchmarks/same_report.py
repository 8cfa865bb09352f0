"""Are two ``lmp evaluate --out X.json`` reports the same, number for number? Prints the differences.

Compares the ``config``, ``results`` and ``landing`` of two reports field by field, exactly (no
tolerance: floats are compared as JSON stores them, i.e. bit for bit), except the fields named in
``--ignore`` (default: ``images_per_s``, a wall-clock speed). Exit status 0 when nothing else
differs, 1 otherwise. Used to check that a refactoring of the evaluation leaves every number
unchanged (docs/quality-log.md section 34)::

    python benchmarks/same_report.py before.json after.json
"""

from __future__ import annotations

import argparse
import json
import sys


def differences(a, b, path: str, ignore: set[str]) -> list[tuple[str, object, object]]:
    """(path, a's value, b's value) of every leaf that differs, recursively over dicts and lists."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in dict.fromkeys([*a, *b]) if key not in ignore
                for d in differences(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}", ignore)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]", ignore)]
    same = a == b or (a != a and b != b)  # NaN equals NaN here
    return [] if same else [(path, a, b)]


def count_leaves(doc) -> int:
    """Number of numbers, strings, ... in a JSON document."""
    if isinstance(doc, dict):
        return sum(count_leaves(v) for v in doc.values())
    if isinstance(doc, list):
        return sum(count_leaves(v) for v in doc)
    return 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--ignore", default="images_per_s", help="comma-separated field names left out")
    args = ap.parse_args()
    docs = [json.load(open(p)) for p in (args.first, args.second)]
    diff = differences(docs[0], docs[1], "", set(filter(None, args.ignore.split(","))))
    print(f"{len(diff)} of {count_leaves(docs[0])} fields differ ({args.first} -> {args.second}; ignored: {args.ignore or 'none'})")
    for path, a, b in diff:
        print(f"  {path}: {a!r} -> {b!r}")
    sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
