"""``cmedit img2img``: turn a rough image (strokes, a sketch) into a model sample with its layout (SDEdit)."""

from __future__ import annotations

import click

from .manifest import manifest_option
from .files import file_options, run_whole_image_edits
from .options import model_options, strength_option


@click.command(epilog="""\b
Examples:
  cmedit img2img samples/strokes_face.png -o image.png
  cmedit img2img samples/strokes_heart.png --strength 0.7 --num-samples 4 -o variants/
  cmedit img2img 'samples/strokes_*.png' --strength 0.3 -o refined/
""")
@click.argument("images", nargs=-1, metavar="IMAGE...")
@manifest_option
@strength_option(0.4, "Where on the model's noise grid to start (this fraction of it, counted from the clean "
                      "end), from the image plus noise: lower keeps "
                      "more of the image, 1 ignores it.")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_img2img.png.")
@model_options
@file_options
def img2img(**options) -> None:
    """Redraw each IMAGE as the model draws, keeping its layout and colours (SDEdit).

    Noise is added to the image at --strength of the model's noise grid and removed in --steps
    steps, with no pixel kept exactly: a painting of coloured strokes becomes an image of the
    model's kind (the paper's stroke-guided generation). The image is resized to the model's
    resolution and the result back to its size. Transparency is kept as it is.
    """
    run_whole_image_edits("img2img", "img2img", **options)
