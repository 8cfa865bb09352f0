"""Images per second of every stage of ``lmp predict``, per backend, in one run (docs/speed.md).

The same ``--images`` test images of a CUB-layout folder (spread over the classes), decoded
once into (B, 3, S, S) tensors for the network rows, at ``--batch-size``:

* decode: files -> normalised tensors through the predict loader (default workers, and 0);
* bare backbone, main network (backbone + pooling + classifier), the pair (main + replica on
  the masked image), keypoints (pair + filter selection + clustering, LMPNet defaults), and
  the keypoint branch alone: torch eager (NCHW), torch channels_last, ONNX Runtime;
* one training step of the pair (forward + backward + SGD step, train mode): NCHW and
  channels_last;
* ``lmp predict`` files -> CSV end to end (:func:`lmpcli.predict.run_predict`, LMPNet defaults,
  decoding workers overlapping compute) per backend: steady state from the first batch to the
  last, and the whole call including loading;
* occlusion-gbp on ``--occlusion-images`` images with its defaults (160-px occluders every 96 px
  at the network's input size: 16 occluded forwards per image through ONNX Runtime; guided
  backprop in torch at the full size); ``--occlusion-input-size`` runs the occlusion smaller,
  ``--occluders 160/96,...`` adds a row for each other occluder grid (size/stride, pixels).

With CUDA present, the network rows also run on the GPU with AMP and channels_last for a
batch sweep, and ``lmp predict`` with ``--device cuda``. Peak memory: the largest resident set
of this process and its children (decoding workers) sampled every 20 ms during the row.
``--memory-counts 100,2000`` instead runs ``lmp predict`` on that many images (all splits) in
a child process each and prints its peak memory against the count.

    python benchmarks/throughput.py --data ../shared/data/cub50 [--images 48] [--out table.md]
    python benchmarks/throughput.py --data ../shared/data/cub50 --memory-counts 100,2000
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from _markdown import emit_table
from lmpcli.backends.onnx import _session, install_onnxruntime
from lmpcli.checkpoint import load_model
from lmpcli.data import ImagePathDataset, collate_skip_errors, eval_transform, spread_subset
from lmpcli.device import autocast
from lmpcli.inference import default_workers, make_loader
from lmpcli.methods import create_method
from lmpcli.predict import run_predict


def tree_rss(pid: int) -> int:
    """Resident set of ``pid`` and all its descendants, bytes (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


class PeakMemory:
    """Context manager: the largest :func:`tree_rss` of ``pid`` sampled every ``interval`` s (``.peak``, bytes)."""

    def __init__(self, pid: int | None = None, interval: float = 0.02) -> None:
        self.pid, self.interval, self.peak = pid or os.getpid(), interval, 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))


def measure(fn, batches: list, device: torch.device) -> tuple[float, int]:
    """(images/s, peak bytes) of ``fn(batch)`` over ``batches``, after one warm-up batch."""
    with torch.inference_mode():
        fn(batches[0].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    n = sum(len(b) for b in batches)
    with PeakMemory() as mem:
        start = time.perf_counter()
        for b in batches:
            with torch.inference_mode():
                fn(b.to(device, non_blocking=True))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return n / seconds, mem.peak


class _Timestamps:
    """A :class:`lmpcli.progress.Progress` that records when the first and the last batch came back."""

    def __init__(self) -> None:
        self.first = self.last = None
        self.first_n = 0

    def start(self, description, total) -> None:
        pass

    def advance(self, n: int = 1, **metrics) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first, self.first_n = now, n
        self.last = now

    def finish(self) -> None:
        pass

    def log(self, message: str) -> None:
        pass


def predict_row(paths: list[str], batch_size: int, **options) -> tuple[float, float, int]:
    """(steady images/s, whole-call images/s, peak bytes) of run_predict files -> CSV."""
    stamps = _Timestamps()
    with tempfile.TemporaryDirectory() as tmp, PeakMemory() as mem:
        start = time.perf_counter()
        run_predict(paths, out=str(Path(tmp) / "kps.csv"), batch_size=batch_size, progress=stamps, **options)
        total = time.perf_counter() - start
    steady = (len(paths) - stamps.first_n) / max(stamps.last - stamps.first, 1e-9)
    return steady, len(paths) / total, mem.peak


def backbone_onnx(net, image_size: int):
    """An ONNX Runtime session of the bare backbone (B, 3, S, S) -> (B, C, h, w), dynamic batch."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.backbone.eval(), (torch.zeros(1, 3, image_size, image_size),), buf,
                          input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False)
    return _session(buf.getvalue(), None)


def memory_counts(args, counts: list[int]) -> None:
    images = [ln.split()[1] for ln in (Path(args.data) / "images.txt").read_text().splitlines() if ln.strip()]
    rows = []
    for n in counts:
        if n > len(images):
            sys.exit(f"only {len(images)} images in {args.data}")
        paths = [str(Path(args.data) / "images" / p) for p in images[:n]]
        with tempfile.TemporaryDirectory() as tmp:
            listing = Path(tmp) / "paths.txt"
            listing.write_text("\n".join(paths) + "\n")
            code = ("import sys; from lmpcli.predict import run_predict;"
                    f"run_predict(['-'], out={str(Path(tmp) / 'kps.csv')!r}, stdin=open({str(listing)!r}), "
                    f"batch_size={args.batch_size})")
            start = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
            with PeakMemory(proc.pid, 0.05) as mem:
                proc.wait()
            seconds = time.perf_counter() - start
        if proc.returncode:
            sys.exit(f"lmp predict on {n} images failed ({proc.returncode})")
        rows.append([str(n), f"{mem.peak / 2**20:.0f}", f"{n / seconds:.2f}"])
        print(rows[-1], flush=True)
    base = float(rows[0][1])
    for r in rows:
        r.append(f"{float(r[1]) / base:.3f}")
    emit_table(f"lmp predict (lmpnet defaults, backend auto, default workers {default_workers()}) files -> CSV, "
               f"peak memory of the process and its decoding workers; load {os.getloadavg()[0]:.1f}",
               ["images", "peak MiB", "images/s (incl. start-up)", f"peak / peak at {rows[0][0]}"], rows, args.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--occlusion-images", type=int, default=4, help="0 skips the occlusion-gbp row")
    ap.add_argument("--occlusion-input-size", type=int, default=None,
                    help="occlusion-gbp row: occlusion input side, px (default: the method's, the network input)")
    ap.add_argument("--occluders", default=None,
                    help="also these occluder grids SIZE/STRIDE (pixels), comma-separated, e.g. 160/96")
    ap.add_argument("--train-batches", type=int, default=2, help="training-step rows: batches timed (0 skips them)")
    ap.add_argument("--memory-counts", default=None, help="e.g. 100,2000: only the memory-against-count check")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.memory_counts:
        memory_counts(args, [int(n) for n in args.memory_counts.split(",")])
        return
    load_start = os.getloadavg()[0]
    torch.manual_seed(0)
    from lmpcli.data import CUBDataset

    ref, _ = load_model(args.weights)
    c = ref.config
    tf = eval_transform(c.image_size, c.mean, c.std)
    test = CUBDataset(args.data, "test", tf)
    idx = spread_subset(len(test), args.images)
    paths = [str(test.path(i)) for i in idx]
    b = args.batch_size
    rows: list[list] = []

    def add(stage: str, variant: str, ips: float, peak: int) -> None:
        rows.append([stage, variant, ips, peak])
        print(f"{stage:24s} {variant:32s} {ips:8.2f} img/s  {peak / 2**20:6.0f} MiB", flush=True)

    cpu = torch.device("cpu")
    for workers in (default_workers(), 0):
        loader = make_loader(ImagePathDataset(paths, tf), b, workers, collate_skip_errors, cpu)
        with PeakMemory() as mem:
            start = time.perf_counter()
            batches = [batch["image"] for batch in loader]
            seconds = time.perf_counter() - start
        add("decode", f"{workers} workers (incl. start-up)", len(paths) / seconds, mem.peak)
    images = torch.cat(batches)
    batches = list(images.split(b))

    fast = copy.deepcopy(ref)
    install_onnxruntime(fast)
    cl = copy.deepcopy(ref).to(memory_format=torch.channels_last)
    cl_batches = [x.contiguous(memory_format=torch.channels_last) for x in batches]
    bb_session = backbone_onnx(ref.main, c.image_size)
    lmp = {name: create_method("lmpnet", pair) for name, pair in (("torch", ref), ("cl", cl), ("ort", fast))}
    with torch.inference_mode():
        _, maps, rep = ref.features(batches[0])
    s = (c.image_size, c.image_size)
    cpu_rows = [
        ("backbone", "torch eager (NCHW)", lambda x: ref.main.backbone(x), batches),
        ("backbone", "torch channels_last", lambda x: cl.main.backbone(x), cl_batches),
        ("backbone", "ONNX Runtime", lambda x: bb_session.run(None, {"images": x.numpy()}), batches),
        ("main network", "torch eager (NCHW)", lambda x: ref.main(x), batches),
        ("main network", "torch channels_last", lambda x: cl.main(x), cl_batches),
        ("main network", "ONNX Runtime", lambda x: fast.main(x), batches),
        ("pair", "torch eager (NCHW)", lambda x: ref.features(x), batches),
        ("pair", "torch channels_last", lambda x: cl.features(x), cl_batches),
        ("pair", "ONNX Runtime", lambda x: fast.features(x), batches),
        ("keypoints", "torch eager (NCHW)", lambda x: lmp["torch"](x), batches),
        ("keypoints", "torch channels_last", lambda x: lmp["cl"](x), cl_batches),
        ("keypoints", "ONNX Runtime", lambda x: lmp["ort"](x), batches),
        ("keypoint branch alone", "selection + clustering", lambda x: lmp["torch"].head([maps, rep], s),
         [batches[0]] * len(batches)),
    ]
    for stage, variant, fn, data in cpu_rows:
        add(stage, variant, *measure(fn, data, cpu))

    if args.train_batches:
        for variant, fmt in (("torch eager (NCHW)", torch.contiguous_format), ("torch channels_last", torch.channels_last)):
            model = copy.deepcopy(ref).to(memory_format=fmt).train()
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            labels = torch.zeros(b, dtype=torch.long)

            def step(x, model=model, opt=opt, labels=labels, fmt=fmt):
                with torch.inference_mode(False), torch.enable_grad():
                    x = x.clone().contiguous(memory_format=fmt)
                    logits, rep_logits = model(x)
                    loss = torch.nn.functional.cross_entropy(logits, labels[: len(x)])
                    if rep_logits is not None:
                        loss = loss + torch.nn.functional.cross_entropy(rep_logits, labels[: len(x)])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            add("training step", variant, *measure(step, batches[: args.train_batches], cpu))

    for backend in ("torch", "onnxruntime"):
        steady, whole, peak = predict_row(paths, b, backend=backend, device="cpu")
        add("lmp predict files->CSV", f"{backend}, steady state", steady, peak)
        add("lmp predict files->CSV", f"{backend}, whole call incl. loading", whole, peak)

    if args.occlusion_images:
        occ_batches = list(images[: args.occlusion_images].split(8))
        grids = [None] + [tuple(int(v) for v in g.split("/")) for g in (args.occluders or "").split(",") if g]
        for grid in grids:  # the defaults, then each --occluders grid
            extra = {} if grid is None else {"occluder_size": grid[0], "occluder_stride": grid[1]}
            occ = create_method("occlusion-gbp", fast, input_size=args.occlusion_input_size, **extra)
            add("occlusion-gbp", f"occlusion at {occ.input_size or c.image_size} px, {occ.occluder_size}/"
                f"{occ.occluder_stride}{' (default)' if grid is None else ''}, ONNX Runtime",
                *measure(lambda x, occ=occ: occ(x), occ_batches, cpu))

    cuda_note = "no GPU in this run: CUDA rows not run"
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        net = copy.deepcopy(ref).to(gpu).to(memory_format=torch.channels_last)
        method = create_method("lmpnet", net)
        for bs in (8, 32, 128):
            gb = [x.contiguous(memory_format=torch.channels_last) for x in images.split(bs)]
            for stage, fn in (("main network", lambda x: net.main(x)), ("pair", lambda x: net.features(x)),
                              ("keypoints", lambda x: method(x))):
                def amp(x, fn=fn):
                    with autocast(gpu):
                        return fn(x)
                add(stage, f"CUDA AMP channels_last, batch {bs}", *measure(amp, gb, gpu))
        steady, whole, peak = predict_row(paths, 32, device="cuda", backend="torch")
        add("lmp predict files->CSV", "CUDA, batch 32, steady state", steady, peak)
        cuda_note = f"CUDA: {torch.cuda.get_device_name()}"

    pair_ort = next(r[2] for r in rows if r[0] == "pair" and r[1] == "ONNX Runtime")
    eager = {r[0]: r[2] for r in rows if r[1] == "torch eager (NCHW)"}
    table = [[stage, variant, f"{ips:.2f}", f"{ips / eager[stage]:.2f}" if stage in eager else "",
              f"{ips / pair_ort:.2f}", f"{peak / 2**20:.0f}"] for stage, variant, ips, peak in rows]
    caption = (f"{len(paths)} cub50 test images, batch {b}, {c.image_size} px, weights {args.weights or 'shipped'}; "
               f"{os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads; "
               f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end; {cuda_note}")
    emit_table(caption, ["stage", "variant", "images/s", "x torch eager", "x pair ONNX Runtime", "peak MiB"], table, args.out)


if __name__ == "__main__":
    main()
