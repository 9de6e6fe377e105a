"""``cmedit colorize``: colour greyscale images, keeping their grey levels."""

from __future__ import annotations

import click

from .manifest import manifest_option
from .files import file_options, run_whole_image_edits
from .options import model_options, noise_level_option, strength_option


@click.command(epilog="""\b
Examples:
  cmedit colorize samples/face_gray.png -o color.png
  cmedit colorize samples/heart_gray.png --timesteps 30,20,10,0 --num-samples 4 -o colored/
  cmedit colorize 'samples/*_gray.png' -o colored/
""")
@click.argument("images", nargs=-1, metavar="IMAGE...")
@manifest_option
@strength_option(1.0, "Below 1, start part-way down the model's noise grid (this fraction of it, counted from "
                      "the clean end), from the input plus noise, instead of from pure noise (1, Algorithm 4): "
                      "lower keeps the result closer to the grey input.")
@noise_level_option("Noise in the grey input: its luminance is then followed only as far as the noise allows.")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_colorized.png.")
@model_options
@file_options
def colorize(**options) -> None:
    """Colorize each IMAGE (greyscale, or colour whose luminance is kept); its luminance is unchanged."""
    run_whole_image_edits("colorize", "colorized", **options)
