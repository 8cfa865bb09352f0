"""Speed of ``lmp predict --method parts`` against the ranked output (``lmpnet``), issue 25.

    python benchmarks/parts_speed.py --images examples/ --repeats 5 [--flip]

Both methods run on the same decoded batches, alternately (ranked, parts, ranked, ...), each
with its own forward passes (nothing shared), so load on a shared machine hits both alike.
Prints images/s per method (model forward + keypoints; decoding excluded) and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpcli.checkpoint import load_model
from lmpcli.data import ImagePathDataset, collate_skip_errors, eval_transform, expand_inputs
from lmpcli.methods import create_method
from lmpcli.settings import KeypointSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=["examples/"])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--flip", action="store_true", help="also time `--method parts --flip` (quality log section 44)")
    args = ap.parse_args()
    model, _ = load_model(args.weights)
    cfg = model.config
    ds = ImagePathDataset(expand_inputs(args.images), eval_transform(cfg.image_size, cfg.mean, cfg.std))
    batches = [collate_skip_errors([ds[i] for i in range(s, min(s + args.batch_size, len(ds)))])["image"]
               for s in range(0, len(ds), args.batch_size)]
    methods = {"lmpnet (ranked)": create_method("lmpnet", model, KeypointSettings(k=5)), "parts": create_method("parts", model)}
    if args.flip:
        methods["parts --flip"] = create_method("parts", model, KeypointSettings(flip=True))
    seconds = dict.fromkeys(methods, 0.0)
    n = sum(len(b) for b in batches)
    with torch.inference_mode():
        for name, m in methods.items():  # warm-up
            m(batches[0][:1], {})
        for _ in range(args.repeats):
            for name, m in methods.items():
                for b in batches:
                    start = time.perf_counter()
                    m(b, {})
                    seconds[name] += time.perf_counter() - start
    print(f"{n} images x {args.repeats} repeats, batch {args.batch_size}, {torch.get_num_threads()} threads\n")
    print("| method | images/s | relative to ranked |\n|---|---|---|")
    ranked = n * args.repeats / seconds["lmpnet (ranked)"]
    for name, s in seconds.items():
        rate = n * args.repeats / s
        print(f"| {name} | {rate:.2f} | {rate / ranked:.2f}x |")


if __name__ == "__main__":
    main()
