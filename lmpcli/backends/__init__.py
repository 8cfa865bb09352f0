"""Inference backends for the networks of an :class:`~lmpcli.model.LMPNetPair`.

``torch`` runs the PyTorch modules as they are. ``onnxruntime`` replaces ``pair.main`` and
``pair.replica`` by :class:`~lmpcli.backends.onnx.OnnxNetwork` objects with LMPNet's call
signature ((B, 3, S, S) -> (logits (B, K), feature maps (B, C, h, w))), so every keypoint
method gets the speed without change. ``auto`` picks ONNX Runtime on the CPU and torch on
CUDA (AMP, channels_last). Measured speeds: docs/speed.md.
"""

from __future__ import annotations

import importlib.util

import torch

from ..choices import BACKENDS


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> ``onnxruntime`` on the CPU, ``torch`` elsewhere; other names as given.

    Raises:
        ValueError: an unknown name, ``onnxruntime`` on a non-CPU device, or ``onnxruntime``
            asked for but not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    installed = importlib.util.find_spec("onnxruntime") is not None
    if backend == "auto":
        return "onnxruntime" if device.type == "cpu" and installed else "torch"
    if backend == "onnxruntime":
        if device.type != "cpu":
            raise ValueError("--backend onnxruntime runs on the CPU only; use --device cpu or --backend torch")
        if not installed:
            raise ValueError("--backend onnxruntime needs the onnxruntime package (pip install onnxruntime)")
    return backend


def apply_backend(pair, backend: str, device: torch.device, cache_dir=None) -> str:
    """Install ``backend`` for inference on ``pair`` (in place; test-time settings already applied).

    Call it after :meth:`~lmpcli.model.LMPNetPair.set_output_stride` / ``set_image_size``:
    the ONNX graph is exported for the pair's current input size and output stride.

    Returns:
        The backend used (``auto`` resolved).

    Raises:
        ValueError: see :func:`resolve_backend`.
    """
    name = resolve_backend(backend, device)
    if name == "onnxruntime":
        from .onnx import install_onnxruntime

        install_onnxruntime(pair, cache_dir=cache_dir)
    return name


__all__ = ["BACKENDS", "apply_backend", "resolve_backend"]
