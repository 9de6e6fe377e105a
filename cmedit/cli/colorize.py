"""``cmedit colorize``: colour greyscale images, keeping their grey levels."""

from __future__ import annotations

from pathlib import Path

import click

from .files import Result, expand_inputs, file_options, plan_jobs, run_jobs
from .options import ModelLoader, make_generator, model_options, resolve_seed, schedule_kwargs


@click.command(epilog="""\b
Examples:
  cmedit colorize samples/face_gray.png -o color.png
  cmedit colorize old_photo.jpg --timesteps 30,20,10,0 --num-samples 4 -o colored/
  cmedit colorize 'scans/*.png' -o colored/
""")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_colorized.png.")
@model_options
@file_options
def colorize(images, output, model, steps, timesteps, seed, device, dtype, class_label, num_samples,
             compile_unet, channels_last, overwrite, quiet, quality, no_alpha, max_pixels) -> None:
    """Colorize each IMAGE (greyscale, or colour whose luminance is kept); its luminance is unchanged."""
    from ..image_files import DEFAULT_MAX_PIXELS, read_image
    from ..pipeline import DEFAULT_EDIT_STEPS

    jobs = plan_jobs(expand_inputs(images), output, "colorized", num_samples)
    pipe, seed = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last), resolve_seed(seed, quiet)

    def edit(source: Path) -> list[Result]:
        loaded = read_image(source, max_pixels or DEFAULT_MAX_PIXELS)
        out = pipe().colorize(loaded.rgb, class_labels=class_label, num_images_per_prompt=num_samples,
                              generator=make_generator(seed), output_type="np",
                              **schedule_kwargs(steps, timesteps, DEFAULT_EDIT_STEPS)).images
        return [Result(rgb, loaded.alpha, loaded.bits, False, loaded.icc_profile) for rgb in out]

    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha)
