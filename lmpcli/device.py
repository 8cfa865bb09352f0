"""Device selection and per-device speed settings."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given.

    Raises:
        ValueError: unknown name, or CUDA asked for on a machine without it.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is available; use --device cpu or auto")
    return dev


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16/float16 autocast on CUDA (AMP); a no-op context on CPU."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to ``device`` in the channels_last memory format (NHWC weights; inputs may stay NCHW).

    On CUDA for AMP's tensor cores; on the CPU because it runs the EfficientNet-Lite pair about
    1.5x faster than NCHW in torch's eager mode (``benchmarks/throughput.py``, docs/speed.md).
    """
    return model.to(device).to(memory_format=torch.channels_last)
