"""``cmedit super-resolve``: upscale by an integer factor so that shrinking the result gives the input back."""

from __future__ import annotations

from typing import Callable

import click

from .files import Result, batch_key_for_noise, expand_inputs, file_options, plan_jobs, run_jobs
from .manifest import check_inputs, manifest_option, run_manifest_command
from .options import (ModelLoader, candidate_generators, file_class_labels, model_options,
                      noise_level_option, schedule_kwargs, split_candidates, strength_option)


def super_resolve_edit(pipe: Callable, *, factor: int = 4, also_colorize: bool = False, overlap: int | None = None,
                       strength: float | None = None, steps=None, timesteps=None, seed: int = 0, class_label=None,
                       num_samples: int = 1, max_pixels: int | None = None, kernel: str | None = None,
                       noise_level: float | str = 0.0) -> Callable[[list], list[list[Result]]]:
    """The edit of ``cmedit super-resolve``: ``LoadedImage`` batch -> each image's candidates (``Result``).

    ``pipe`` returns the pipeline when called (loaded on first use). Used by the CLI and the web app.
    """

    def edit(batch: list) -> list[list[Result]]:
        import numpy as np

        from ..fullres.budget import check_pixels
        from ..io.files import DEFAULT_MAX_PIXELS

        for loaded in batch:  # the outputs' memory, refused up front
            check_pixels(f"{loaded.path}: the x{factor} result", loaded.rgb.shape[0] * factor,
                         loaded.rgb.shape[1] * factor, num_samples, max_pixels or DEFAULT_MAX_PIXELS)
        generator = candidate_generators(seed, len(batch), num_samples)
        tiled = max(batch[0].rgb.shape[:2]) * factor > pipe().resolution
        out = pipe().super_resolve([loaded.rgb for loaded in batch], factor=factor, colorize=also_colorize,
                                   kernel=kernel, noise_level=noise_level,
                                   overlap=overlap, num_images_per_prompt=num_samples,
                                   class_labels=class_label if tiled
                                   else file_class_labels(pipe(), class_label, [seed] * len(batch)),
                                   generator=generator, output_type="np",
                                   **schedule_kwargs(steps, timesteps, strength=strength)).images
        results = []
        for loaded, candidates in zip(batch, split_candidates(out, len(batch))):
            alpha = loaded.alpha
            if alpha is not None:  # transparency is not super-resolved, only enlarged
                alpha = np.repeat(np.repeat(alpha, factor, axis=0), factor, axis=1)
            grey = loaded.grey and not also_colorize
            results.append([Result(rgb, alpha, loaded.bits, grey, loaded.icc_profile) for rgb in candidates])
        return results

    return edit


@click.command(epilog="""\b
Examples:
  cmedit super-resolve --factor 4 samples/face_8x8.png -o big.png
  cmedit super-resolve --factor 4 --colorize samples/animal_8x8.png -o big_color.png
  cmedit super-resolve --factor 4 --kernel bicubic --noise-level 0.025 samples/face_8x8.png -o big.png
""")
@click.argument("images", nargs=-1, metavar="IMAGE...")
@manifest_option
@click.option("--factor", "-f", type=click.IntRange(min=2), default=4, show_default=True,
              help="Upscaling factor; must divide the model's resolution (2, 4, 8, ...).")
@click.option("--kernel", type=click.Choice(["bicubic", "bilinear", "lanczos", "box"]), default=None,
              help="How the small image was made: PIL's antialiased shrink with this filter "
              "(as Image.resize, MATLAB's imresize); the result shrunk so gives the input back. 'box': "
              "each FACTOR x FACTOR block averages to the input pixel.  [default: bicubic; box with --colorize]")
@noise_level_option("Noise in the small image: the result then follows it only as far as the noise allows.")
@click.option("--colorize", "also_colorize", is_flag=True,
              help="Colorize at the same time (only the luminance of each block is kept).")
@click.option("--overlap", type=click.IntRange(min=0), default=None, metavar="PIXELS",
              help="Inputs larger than one tile: overlap of neighbouring tiles in input pixels "
                   "(default: a quarter of a tile).")
@strength_option(None, "Start part-way down the model's noise grid (this fraction of it, counted from the clean "
                       "end) from the input plus noise; 1 starts from pure noise (Algorithm 4). Default: the "
                       "kernel's restoration schedule (measured best), or 1 with --kernel box.")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_x<factor>.png.")
@model_options
@file_options
def super_resolve(images, manifest, factor, kernel, noise_level, also_colorize, overlap, strength, output, model,
                  steps, timesteps, seed, device, dtype, class_label, num_samples, compile_unet, channels_last,
                  max_batch, overwrite, quiet, quality, no_alpha, max_pixels, batch_size) -> None:
    """Upscale each IMAGE by FACTOR; shrinking the result as KERNEL does gives the input back."""
    if kernel is None:
        kernel = "box" if also_colorize else "bicubic"
    if also_colorize and kernel != "box":
        raise click.UsageError("--colorize needs --kernel box (block means of the luminance)")
    check_inputs(images, manifest)
    if manifest is not None:
        return run_manifest_command(
            "super-resolve", manifest, output=output, strength=strength, model=model, steps=steps,
            timesteps=timesteps, seed=seed, device=device, dtype=dtype, class_label=class_label,
            num_samples=num_samples, compile_unet=compile_unet, channels_last=channels_last, max_batch=max_batch,
            overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha, max_pixels=max_pixels,
            factor=factor, colorize=also_colorize, overlap=overlap, kernel=kernel, noise_level=noise_level)
    jobs = plan_jobs(expand_inputs(images), output, f"x{factor}", num_samples)
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch,
                       max_pixels=max_pixels)
    seed = pipe.seed(seed)

    edit = super_resolve_edit(pipe, factor=factor, also_colorize=also_colorize, overlap=overlap, strength=strength,
                              steps=steps, timesteps=timesteps, seed=seed, class_label=class_label,
                              num_samples=num_samples, max_pixels=max_pixels, kernel=kernel,
                              noise_level=noise_level)

    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
             max_pixels=max_pixels, batch_key=batch_key_for_noise(noise_level), batch_size=batch_size)
