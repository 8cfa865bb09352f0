"""Every random number generator a training run draws from, captured and restored for exact resume.

A run resumed from ``last.pt`` must draw the same numbers as the uninterrupted run: the loader's
shuffle order and its workers' seeds (both drawn from the loader's own ``torch.Generator``), the
augmentations and drop connect (torch's global generator in the main process, or the workers'
generators, which are seeded from the loader's generator each epoch), CutMix (torch's global
generator) and anything that uses Python's ``random`` or NumPy's global generator.

The state is a dict of tensors, ints, lists and strings, so it round-trips through
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng_state(generator: torch.Generator | None = None, device: torch.device | None = None) -> dict:
    """The state of Python's, NumPy's and torch's global generators (and ``generator``, and the CUDA
    generator of ``device`` when it is a CUDA device).

    Returns:
        ``{"python": [version, [625 ints], gauss], "numpy": {...}, "torch": uint8 tensor,
        "cuda": uint8 tensor (CUDA only), "loader": uint8 tensor (with ``generator``)}``;
        plain types only (loadable with ``weights_only=True``).
    """
    version, internal, gauss = random.getstate()
    legacy = np.random.get_state(legacy=False)
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"key": torch.from_numpy(legacy["state"]["key"].astype(np.int64)), "pos": int(legacy["state"]["pos"]),
                  "has_gauss": int(legacy["has_gauss"]), "gauss": float(legacy["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def restore_rng_state(state: dict, generator: torch.Generator | None = None,
                      device: torch.device | None = None) -> None:
    """Set the generators captured by :func:`capture_rng_state` back to ``state``.

    Entries missing from ``state`` (a checkpoint written before they were stored, or the CUDA
    state of a run that trained on the CPU) leave their generator as it is.
    """
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    if "loader" in state and generator is not None:
        generator.set_state(state["loader"])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
