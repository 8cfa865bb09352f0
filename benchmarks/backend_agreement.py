"""Do the ONNX Runtime and torch backends give the same keypoints? One table (docs/speed.md).

Both backends run LMPNet keypoints (the checkpoint's test-time defaults, k = 5) on the same
decoded batches of a CUB-layout split: the torch pair as loaded, and a second copy of it with
its networks replaced by ONNX Runtime (:func:`lmpcli.backends.onnx.install_onnxruntime`).
Reported: the largest keypoint difference in original-image pixels, the images with any
keypoint more than 0.5 px apart (or found by one backend only), greedy PCK@0.1 per rank
under each backend and the images whose hits differ, and the accuracy of each.
Per-batch results go to ``--state`` so a killed run continues where it stopped.

    python benchmarks/backend_agreement.py --data ../shared/data/cub50 [--limit 200] [--out table.md]
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from _cub import cub_parser, load_split
from _markdown import emit_table
from lmpcli.backends.onnx import install_onnxruntime
from lmpcli.checkpoint import atomic_torch_save
from lmpcli.methods import create_method
from lmpcli.meters import KeypointMeter

TOLERANCE = 0.5  # pixels of the original image


def main() -> None:
    ap = cub_parser(__doc__)
    ap.add_argument("--state", default="runs/backend_agreement.pt", help="per-batch results, for resuming")
    ap.add_argument("--report-only", action="store_true", help="summarise the batches in --state without running more")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ref, _, _, loader = load_split(args)
    fast = copy.deepcopy(ref)
    install_onnxruntime(fast)
    methods = {"torch": create_method("lmpnet", ref), "onnxruntime": create_method("lmpnet", fast)}
    state_path = Path(args.state)
    state = torch.load(state_path, weights_only=False) if state_path.is_file() else {"batches": {}, "seconds": {}}
    start = time.time()
    for b, batch in enumerate([] if args.report_only else loader):
        if b in state["batches"]:
            continue
        s = batch["image"].shape[-1]
        scale = batch["size"] / s  # (B, 2) original pixels per input pixel
        row = {}
        for name, method in methods.items():
            t = time.perf_counter()
            with torch.inference_mode():
                out = method(batch["image"])
            state["seconds"][name] = state["seconds"].get(name, 0.0) + time.perf_counter() - t
            row[name] = {"xy": out.xy * scale[:, None], "logits": out.logits}
        row.update({key: batch[key] for key in ("keypoints", "visible", "size", "label")})
        state["batches"][b] = row
        if b % 10 == 9:
            atomic_torch_save(state, state_path)
        print(f"batch {b + 1}/{len(loader)} {time.time() - start:.0f} s", flush=True)
    atomic_torch_save(state, state_path)

    batches = [state["batches"][b] for b in sorted(state["batches"])]
    meters = {n: KeypointMeter(0.1) for n in methods}
    for r in batches:
        for n, meter in meters.items():
            meter.update(r[n]["xy"], r["keypoints"], r["visible"], r["size"], logits=r[n]["logits"], labels=r["label"])
    pred = {n: torch.cat([r[n]["logits"].argmax(-1) for r in batches]) for n in methods}
    a, o = meters["torch"].xy(), meters["onnxruntime"].xy()
    same_nan = torch.isnan(a) == torch.isnan(o)
    diff = torch.where(same_nan, (a - o).nan_to_num().abs(), torch.tensor(float("inf"))).amax((1, 2))  # (N,)
    n = len(diff)
    caption = (f"{n} of {len(loader.dataset)} images ({args.split} split of {args.data}), LMPNet k=5: max keypoint difference {diff.max():.4f} px; "
               f"{int((diff > TOLERANCE).sum())} images beyond {TOLERANCE} px; images whose greedy-PCK hits differ: "
               f"{int((meters['torch'].hits() != meters['onnxruntime'].hits()).any(1).sum())}; "
               f"predicted class differs: {int((pred['torch'] != pred['onnxruntime']).sum())}")
    header = ["backend", "KP1", "KP2", "KP3", "KP4", "KP5", "avg", "acc", "keypoint s/img"]
    table = []
    for name, meter in meters.items():
        row = meter.compute()
        table.append([name, *[f"{row[c]:.2f}" for c in header[1:-1]], f"{state['seconds'][name] / n:.3f}"])
    emit_table(caption, header, table, args.out)


if __name__ == "__main__":
    main()
