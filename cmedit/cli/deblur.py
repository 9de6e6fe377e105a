"""``cmedit deblur``: undo a known blur (Gaussian, box, motion, or a kernel file), optionally with noise."""

from __future__ import annotations

from pathlib import Path

import click

from .files import Result, batch_key_for_noise, expand_inputs, file_options, plan_jobs, run_jobs
from .options import (ModelLoader, candidate_generators, model_options, noise_level_option, schedule_kwargs,
                      split_candidates, strength_option, user_errors)

BLUR_FORMS = "gaussian:SIGMA, box:SIZE or motion:LENGTH[,ANGLE]"


def parse_blur(ctx: click.Context, param: click.Parameter, value: str | None):
    """``gaussian:3`` / ``box:5`` / ``motion:9,30`` -> the kernel array (``cmedit.core.degradations``)."""
    if value is None:
        return None
    from ..core.degradations import box_kernel, gaussian_kernel, motion_kernel

    name, _, args = value.partition(":")
    try:
        numbers = [float(part) for part in args.split(",")] if args.strip() else []
        if name == "gaussian" and len(numbers) == 1:
            return gaussian_kernel(numbers[0])
        if name == "box" and len(numbers) == 1 and numbers[0] == int(numbers[0]):
            return box_kernel(int(numbers[0]))
        if name == "motion" and len(numbers) in (1, 2):
            return motion_kernel(*numbers)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    raise click.BadParameter(f"expected {BLUR_FORMS}, got {value!r}")


@click.command(epilog="""\b
Examples:
  cmedit deblur --blur gaussian:1 samples/face.png -o sharp.png
  cmedit deblur --blur motion:5,30 --noise-level 0.025 samples/animal.png -o sharp.png
  cmedit deblur --blur box:3 --noise-level auto samples/face.png samples/animal.png -o sharp/
""")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--blur", "blur_kernel", callback=parse_blur, metavar="SPEC",
              help=f"The blur, as {BLUR_FORMS} (pixels; angle in degrees, anticlockwise).")
@click.option("--kernel", "kernel_path", type=click.Path(path_type=Path), default=None,
              help="The blur kernel as a .npy array or a greyscale image (normalised to sum 1).")
@noise_level_option("Noise in the blurred image: the result then follows it only as far as the noise allows.")
@click.option("--overlap", type=click.IntRange(min=0), default=None, metavar="PIXELS",
              help="Images larger than the model: overlap of neighbouring tiles (default: a quarter of a tile).")
@strength_option(None, "Where the steps start on the model's noise grid (this fraction of it, counted from the "
                       "clean end), from the regularised pseudo-inverse plus noise. Default: the blur's "
                       "restoration schedule (low noise levels, measured best; docs/design.md section 12).")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_deblurred.png.")
@model_options
@file_options
def deblur(images, blur_kernel, kernel_path, noise_level, overlap, strength, output, model, steps, timesteps, seed,
           device, dtype, class_label, num_samples, compile_unet, channels_last, max_batch, overwrite, quiet, quality,
           no_alpha, max_pixels, batch_size) -> None:
    """Deblur each IMAGE: the result blurred with the kernel (scipy's reflect boundary) gives the input back.

    Images larger than the model are deblurred in overlapping tiles and projected at full size (a
    Gaussian or box blur exactly; a motion or file kernel beyond 64x64 by conjugate gradients).
    """
    if (blur_kernel is None) == (kernel_path is None):
        raise click.UsageError("give the blur: --blur SPEC or --kernel FILE (one of them)")
    from ..core.degradations import Blur, load_kernel

    with user_errors():
        operator = Blur(load_kernel(kernel_path) if kernel_path is not None else blur_kernel)
    jobs = plan_jobs(expand_inputs(images), output, "deblurred", num_samples)
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch,
                       max_pixels=max_pixels)
    seed = pipe.seed(seed)

    def edit(batch: list) -> list[list[Result]]:
        generator = candidate_generators(seed, len(batch), num_samples)
        out = pipe().deblur([loaded.rgb for loaded in batch], operator, noise_level=noise_level, overlap=overlap,
                            class_labels=class_label, num_images_per_prompt=num_samples, generator=generator,
                            output_type="np", **schedule_kwargs(steps, timesteps, strength=strength)).images
        return [[Result(rgb, loaded.alpha, loaded.bits, loaded.grey, loaded.icc_profile) for rgb in candidates]
                for loaded, candidates in zip(batch, split_candidates(out, len(batch)))]

    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
             max_pixels=max_pixels, batch_key=batch_key_for_noise(noise_level), batch_size=batch_size)
