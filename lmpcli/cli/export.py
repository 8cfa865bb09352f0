"""``lmp export``: a network of a checkpoint to ONNX."""

from pathlib import Path
from typing import Annotated

import typer

from ._console import say
from .options import IO, NETWORK, ExportFormat, ImageSize, Network, OutputStride, Overwrite, Quiet, Weights, command, in_panel

EPILOG = """Examples:

  lmp export --out lmpnet-main.onnx

  lmp export --weights runs/lite0/model.pt --network replica --out replica.onnx
"""

@command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", show_default=False, rich_help_panel=IO,
                                      help="The .onnx file to write.")],
    weights: Weights = None,
    overwrite: Overwrite = False,
    format: Annotated[ExportFormat, typer.Option("--format", rich_help_panel=IO, help="Output format.")] = "onnx",
    network: Annotated[Network, typer.Option(
        rich_help_panel=NETWORK,
        help="The replica is fed the image with the main network's first keypoint masked out.")] = "main",
    output_stride: in_panel(OutputStride, NETWORK) = None,
    image_size: in_panel(ImageSize, NETWORK) = None,
    quiet: Quiet = False,
) -> None:
    """Export a network to ONNX for deployment elsewhere: images (B, 3, S, S) -> logits, feature maps."""
    from ..validate import check_export_call

    check_export_call(out, weights=weights, overwrite=overwrite, network=network, output_stride=output_stride,
                      image_size=image_size)
    from ..backends.onnx import export_checkpoint

    summary = export_checkpoint(out, weights=weights, format=format, network=network, image_size=image_size,
                                output_stride=output_stride, overwrite=overwrite)
    if not quiet:
        say(f"{summary['network']} network, {summary['image_size']} px, output stride {summary['output_stride']}, "
            f"{summary['bytes'] / 1e6:.1f} MB -> {out}")
