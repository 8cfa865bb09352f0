"""1 against N training processes on this machine's CPU (torchrun, gloo): images per second.

Each configuration runs ``torchrun --standalone --nproc-per-node N -m lmpcli train`` for one
epoch on the same images with the same global batch (``--batch-size`` = global / N per process)
and ``OMP_NUM_THREADS`` = cores / N (or ``--threads``), so every configuration may use every core. The time is the
epoch's, from ``metrics.csv`` (the slowest rank's; model building and start-up are excluded);
the whole command's wall time is shown too. The machine's load average (1 min) is printed before
and after each run: on a shared machine it says how much of the CPU the run did not have.

    python benchmarks/distributed.py --data ../shared/data/cub50 --limit 32 --image-size 128 --processes 1 2 1 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from _markdown import emit_table

REPO = Path(__file__).resolve().parent.parent


def run(data: str, processes: int, args, out: Path) -> dict:
    """One ``lmp train`` epoch under torchrun with ``processes`` processes; its timings."""
    if out.exists():
        shutil.rmtree(out)
    threads = args.threads or max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO),
           "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "lmpcli", "train", data, "--out", str(out), "--device", "cpu", "--epochs", "1",
           "--limit", str(args.limit), "--image-size", str(args.image_size),
           "--batch-size", str(args.global_batch // processes), "--workers", str(args.workers), "--seed", "0", "--parts", "0", "-q"]
    if not args.pretrained:
        cmd.append("--no-pretrained")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    row = pd.read_csv(out / "metrics.csv").iloc[0]
    return {"processes": processes, "threads": threads, "batch": args.global_batch // processes,
            "epoch_s": float(row["seconds"]), "images_per_s": float(row["images_per_s"]), "wall_s": wall,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="CUB-layout folder or class folders")
    ap.add_argument("--limit", type=int, default=32, help="training images (one epoch)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--global-batch", type=int, default=8, help="images per step over all processes")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores / processes)")
    ap.add_argument("--workers", type=int, default=0, help="loader workers per process")
    ap.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (speed is the same)")
    ap.add_argument("--runs", default=str(REPO / "runs" / "bench-distributed"), help="scratch folder")
    ap.add_argument("--out", default=None, help="also write the table here")
    args = ap.parse_args()
    rows = []
    for n in args.processes:
        r = run(args.data, n, args, Path(args.runs) / f"np{n}")
        rows.append(r)
        print(r, file=sys.stderr)
    base = rows[0]["images_per_s"]
    caption = (f"lmp train, 1 epoch, {args.limit} images of {args.data} at {args.image_size} px, global batch "
               f"{args.global_batch}, CPU ({os.cpu_count()} cores), gloo, {args.workers} loader workers per process")
    head = ["processes", "threads each", "batch each", "epoch s", "images/s", "vs first", "command wall s",
            "load avg before", "load avg after"]
    emit_table(caption, head, [[str(r["processes"]), str(r["threads"]), str(r["batch"]), f"{r['epoch_s']:.1f}",
                                f"{r['images_per_s']:.2f}", f"{r['images_per_s'] / base:.2f}", f"{r['wall_s']:.1f}",
                                f"{r['load_before']:.1f}", f"{r['load_after']:.1f}"] for r in rows], args.out)


if __name__ == "__main__":
    main()
