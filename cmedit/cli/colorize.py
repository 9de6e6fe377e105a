"""``cmedit colorize``: colour greyscale images, keeping their grey levels."""

from __future__ import annotations

import click

from .files import Result, expand_inputs, file_options, plan_jobs, run_jobs
from .options import (ModelLoader, candidate_generators, model_options, resolve_seed, schedule_kwargs,
                      split_candidates, strength_option)


@click.command(epilog="""\b
Examples:
  cmedit colorize samples/face_gray.png -o color.png
  cmedit colorize old_photo.jpg --timesteps 30,20,10,0 --num-samples 4 -o colored/
  cmedit colorize 'scans/*.png' -o colored/
""")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@strength_option(1.0, "Below 1, start part-way down the model's noise grid (this fraction of it, counted from "
                      "the clean end), from the input plus noise, "
                      "instead of from pure noise (1, Algorithm 4): lower keeps the result closer to the "
                      "grey input.")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_colorized.png.")
@model_options
@file_options
def colorize(images, strength, output, model, steps, timesteps, seed, device, dtype, class_label, num_samples,
             compile_unet, channels_last, max_batch, overwrite, quiet, quality, no_alpha, max_pixels) -> None:
    """Colorize each IMAGE (greyscale, or colour whose luminance is kept); its luminance is unchanged."""
    jobs = plan_jobs(expand_inputs(images), output, "colorized", num_samples)
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch)
    seed = resolve_seed(seed, quiet)

    def edit(batch: list) -> list[list[Result]]:
        out = pipe().colorize([loaded.rgb for loaded in batch], class_labels=class_label,
                              num_images_per_prompt=num_samples,
                              generator=candidate_generators(seed, len(batch), num_samples), output_type="np",
                              **schedule_kwargs(steps, timesteps, strength=strength)).images
        return [[Result(rgb, loaded.alpha, loaded.bits, False, loaded.icc_profile) for rgb in candidates]
                for loaded, candidates in zip(batch, split_candidates(out, len(batch)))]

    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
             max_pixels=max_pixels, batch_key=lambda loaded: loaded.rgb.shape)
