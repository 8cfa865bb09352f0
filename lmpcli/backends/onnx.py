"""ONNX Runtime backend: each LMPNet network exported once to ONNX, cached, run by ONNX Runtime.

:class:`OnnxNetwork` has :class:`~lmpcli.model.LMPNet`'s call signature, (B, 3, S, S) float32
normalised images -> (logits (B, K) float32, feature maps (B, C, h, w) float32), and is
installed in place of ``pair.main`` / ``pair.replica`` for inference only
(:func:`install_onnxruntime`), so every keypoint method that calls the networks (lmpnet, cam,
channel-mean, occlusion-gbp's occluded forwards, the filter grid) runs on ONNX Runtime
without change. Attributes the methods read from a network (``backbone``, ``pool``,
``classifier``) are the torch network's; methods that need gradients (guided backprop) use
:func:`torch_network`.

Graphs: one per network, input size S and output stride, with a dynamic batch axis,
exported by ``torch.onnx.export`` (TorchScript exporter, opset 17). They are cached under
:func:`cache_dir` keyed by a SHA-256 of the network's weights and everything else that
changes the graph (backbone, pooling, eps, S, output stride, :data:`EXPORT_VERSION`); a
file is written to a temporary name and renamed into place, so concurrent processes never
see a partial file. Speed and agreement with torch: docs/speed.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..choices import EXPORT_FORMATS, NETWORKS
from ..outputs import atomic_path

EXPORT_VERSION = 3  # bump when the exported graph changes for the same weights
OPSET = 17
CACHE_ENV = "LMP_CACHE_DIR"


def cache_dir() -> Path:
    """Folder of cached ONNX graphs: ``$LMP_CACHE_DIR``, else ``$XDG_CACHE_HOME/lmp/onnx``, else
    ``~/.cache/lmp/onnx`` (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lmp" / "onnx"


def network_key(net: nn.Module, image_size: int) -> str:
    """Hex SHA-256 naming one network's graph: its weights (state dict, in key order), backbone
    class, output stride, pooling mode and eps, the input side ``image_size`` (pixels) and
    :data:`EXPORT_VERSION`."""
    h = hashlib.sha256()
    pool = getattr(net, "pool", None)
    h.update(json.dumps([EXPORT_VERSION, type(net.backbone).__name__, int(net.backbone.stride),
                         getattr(pool, "mode", None), getattr(pool, "eps", None), int(image_size)]).encode())
    for name, value in net.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_onnx(net: nn.Module, image_size: int, path: str | os.PathLike | None = None,
                metadata: dict | None = None) -> bytes:
    """Export one network, (B, 3, S, S) -> (logits (B, K), features (B, C, h, w), mid (B, C', S/16, S/16)), to ONNX.

    The batch axis is dynamic; S is fixed at ``image_size``. Inputs are named ``images``,
    outputs ``logits``, ``features`` and ``mid`` (the mid-level map at its own resolution, which
    part models may read: :func:`lmpcli.parts.stack_maps`; computed on the way to ``features``
    anyway). The
    network is exported in eval mode as it stands (output stride included) and left in eval mode.

    Args:
        net: an :class:`~lmpcli.model.LMPNet` (float32, any device).
        image_size: input side S, pixels.
        path: also write the graph there, atomically (temporary file + rename).
        metadata: string key/values stored in the graph's ``metadata_props`` (e.g. class names).

    Returns:
        The serialised ONNX model.

    Raises:
        OSError: ``path`` cannot be written.
    """
    net = net.eval()
    device = next(net.parameters()).device
    example = torch.zeros(1, 3, image_size, image_size, device=device)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter (TracerWarning, deprecation notices)
        # the wrapper in eval mode: the exporter restores the exported module's mode afterwards,
        # and a new module is in train mode, which would leave ``net`` in train mode
        torch.onnx.export(_WithMid(net).eval(), (example,), buf, input_names=["images"], output_names=list(OUTPUTS),
                          dynamic_axes={n: {0: "batch"} for n in ("images", *OUTPUTS)},
                          opset_version=OPSET, dynamo=False)
    data = buf.getvalue()
    if metadata:
        import onnx

        model = onnx.load_from_string(data)
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        data = model.SerializeToString()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
    return data


#: Output names of the exported graphs, in order.
OUTPUTS = ("logits", "features", "mid")


class _WithMid(nn.Module):
    """``net(images, with_mid=True)`` as a module, for the exporter's trace."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # noqa: D102
        return self.net(images, with_mid=True)


def _session(model: str | bytes, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def cached_session(net: nn.Module, image_size: int, cache: str | os.PathLike | None = None,
                   threads: int | None = None):
    """An ONNX Runtime session of ``net`` at ``image_size``, from the cache or exported now.

    The graph is looked up as ``<cache>/<backbone>-<key[:20]>-<S>px-os<stride>.onnx``
    (:func:`network_key`); a missing or unreadable file is (re-)exported and written
    atomically. When the cache folder cannot be written the graph is kept in memory only.

    Args:
        cache: cache folder (default :func:`cache_dir`).
        threads: ONNX Runtime intra-op threads (default ``torch.get_num_threads()``).

    Returns:
        ``(onnxruntime.InferenceSession, path of the cached graph or None)``.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    name = f"{type(net.backbone).__name__}-{network_key(net, image_size)[:20]}-{image_size}px-os{int(net.backbone.stride)}.onnx"
    path = folder / name
    if path.is_file():
        try:
            return _session(str(path), threads), path
        except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
            warnings.warn(f"unreadable cached ONNX graph {path} ({type(e).__name__}); exporting it again", stacklevel=2)
    try:
        data = export_onnx(net, image_size, path)
    except OSError:  # read-only cache: keep the graph in memory
        data, path = export_onnx(net, image_size), None
    return _session(data, threads), path


class OnnxNetwork(nn.Module):
    """A network run by ONNX Runtime with :class:`~lmpcli.model.LMPNet`'s call signature (inference only).

    Args:
        network: the torch :class:`~lmpcli.model.LMPNet` it replaces; kept as ``.network`` for
            its attributes (``backbone``, ``pool``, ``classifier``) and for gradients.
        session: ``onnxruntime.InferenceSession`` of ``network`` (:func:`cached_session`).
        image_size: the input side S the graph was exported for, pixels.
        cache, threads: see :func:`cached_session`; used for the graphs of other input sizes.

    Calling it on (B, 3, S, S) float normalised images (any device, any memory format) returns
    (logits (B, K), feature maps (B, C, h, w)), float32 CPU tensors without gradients, and with
    ``with_mid=True`` also the mid-level map (B, C', S/16, S/16) (as :meth:`lmpcli.model.LMPNet.forward`).
    Another square size S' gets its own graph, exported (or read from the cache) on first use.

    Raises:
        ValueError: (on call) inputs not (B, 3, S', S') square images.
    """

    def __init__(self, network: nn.Module, session, image_size: int, cache: str | os.PathLike | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        self.network = network
        self.sessions = {int(image_size): session}
        self.image_size = int(image_size)
        self.cache, self.threads = cache, threads

    @property
    def backbone(self) -> nn.Module:
        return self.network.backbone

    @property
    def pool(self) -> nn.Module:
        return self.network.pool

    @property
    def classifier(self) -> nn.Module:
        return self.network.classifier

    def forward(self, images: Tensor, with_mid: bool = False) -> tuple[Tensor, ...]:
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"the ONNX graphs take (B, 3, S, S) images, got {tuple(images.shape)}")
        s = int(images.shape[-1])
        if s not in self.sessions:  # another square size (e.g. occlusion at 112 px): its own graph, cached
            self.sessions[s] = cached_session(self.network, s, self.cache, self.threads)[0]
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        names = list(OUTPUTS if with_mid else OUTPUTS[:2])
        return tuple(torch.from_numpy(a) for a in self.sessions[s].run(names, {"images": x}))


def torch_network(net: nn.Module) -> nn.Module:
    """The torch module behind a network: ``net.network`` for an :class:`OnnxNetwork`, else ``net``."""
    return net.network if isinstance(net, OnnxNetwork) else net


def install_onnxruntime(pair, cache_dir: str | os.PathLike | None = None, threads: int | None = None) -> list:
    """Replace ``pair.main`` (and ``pair.replica``) by :class:`OnnxNetwork` objects, in place.

    Graphs are exported for the pair's current ``config.image_size`` and output stride
    (apply test-time settings first), cached (:func:`cached_session`). Networks already
    replaced are kept. For inference only: training needs the torch modules.

    Returns:
        The cached graph paths (None for graphs kept in memory), main first.
    """
    paths = []
    for name in ("main", "replica"):
        net = getattr(pair, name)
        if net is None or isinstance(net, OnnxNetwork):
            continue
        session, path = cached_session(net.eval(), pair.config.image_size, cache_dir, threads)
        setattr(pair, name, OnnxNetwork(net, session, pair.config.image_size, cache_dir, threads))
        paths.append(path)
    return paths


def export_checkpoint(out: str | os.PathLike, *, weights: str | os.PathLike | None = None, format: str = "onnx",
                      network: str = "main", image_size: int | None = None, output_stride: int | None = None,
                      overwrite: bool = False) -> dict:
    """Write one network of a checkpoint as a standalone ONNX graph (the body of ``lmp export``).

    The graph maps ``images`` (B, 3, S, S) float32, normalised with the checkpoint's mean/std
    (``metadata_props``), to ``logits`` (B, K) and ``features`` (B, C, S/stride, S/stride),
    batch axis dynamic. ``metadata_props`` also hold ``class_names`` (JSON list, index =
    logit), ``image_size``, ``output_stride``, ``cell_centre`` (feature cell ``i`` sits at
    ``(i + cell_centre) * stride`` input pixels) and the checkpoint's ``config`` (JSON). The
    keypoint branch (filter selection, mask-out, clustering) stays in Python: the replica's
    input is the image with the main network's first keypoint masked out (Sec. 3.3).

    Args:
        out: the ``.onnx`` file to write (atomically).
        weights: checkpoint (None = the shipped weights).
        format: ``onnx`` (the only one).
        network: ``main`` or ``replica``.
        image_size, output_stride: test-time settings (None = as trained; see
            :meth:`lmpcli.model.LMPNetPair.set_image_size` / ``set_output_stride``).
        overwrite: replace an existing ``out``.

    Returns:
        ``{"out": path, "network": name, "image_size": S, "output_stride": stride, "bytes": n}``.

    Raises:
        ValueError: unknown ``format`` or ``network``, or no replica in the checkpoint.
        OutputError: ``out`` exists without ``overwrite`` or cannot be written.
        CheckpointError: missing or foreign checkpoint.
    """
    from ..inference import load_for_inference
    from ..settings import KeypointSettings
    from ..outputs import check_writable

    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; only onnx is supported")
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose main or replica")
    check_writable(out, overwrite)
    (pair,), ckpt = load_for_inference(weights, torch.device("cpu"),
                                     KeypointSettings(output_stride=output_stride, image_size=image_size), backend="torch")
    net = getattr(pair, network)
    if net is None:
        raise ValueError("this checkpoint has no replica network (trained with --no-replica)")
    c = pair.config
    metadata = {"format": "lmpcli.lmpnet.onnx", "network": network, "class_names": json.dumps(ckpt["class_names"]),
                "image_size": c.image_size, "output_stride": c.output_stride, "cell_centre": pair.cell_centre(),
                "mean": json.dumps(list(c.mean)), "std": json.dumps(list(c.std)), "config": json.dumps(c.to_dict())}
    data = export_onnx(net, c.image_size, out, metadata)
    return {"out": str(out), "network": network, "image_size": c.image_size, "output_stride": c.output_stride,
            "bytes": len(data)}
