"""``cmedit super-resolve``: upscale by an integer factor, keeping each block's mean."""

from __future__ import annotations

from typing import Callable

import click

from .files import Result, expand_inputs, file_options, plan_jobs, run_jobs
from .options import (ModelLoader, candidate_generators, model_options,
                      schedule_kwargs, split_candidates, strength_option)


def super_resolve_edit(pipe: Callable, *, factor: int = 4, also_colorize: bool = False, overlap: int | None = None,
                       strength: float = 1.0, steps=None, timesteps=None, seed: int = 0, class_label=None,
                       num_samples: int = 1, max_pixels: int | None = None) -> Callable[[list], list[list[Result]]]:
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
        out = pipe().super_resolve([loaded.rgb for loaded in batch], factor=factor, colorize=also_colorize,
                                   overlap=overlap, class_labels=class_label, num_images_per_prompt=num_samples,
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
""")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--factor", "-f", type=click.IntRange(min=2), default=4, show_default=True,
              help="Upscaling factor; must divide the model's resolution (2, 4, 8, ...).")
@click.option("--colorize", "also_colorize", is_flag=True,
              help="Colorize at the same time (only the luminance of each block is kept).")
@click.option("--overlap", type=click.IntRange(min=0), default=None, metavar="PIXELS",
              help="Inputs larger than one tile: overlap of neighbouring tiles in input pixels "
                   "(default: a quarter of a tile).")
@strength_option(1.0, "Below 1, start part-way down the model's noise grid (this fraction of it, counted from "
                      "the clean end), from the input plus noise, instead of from pure noise (1, Algorithm 4): "
                      "lower keeps the result closer to the blocky enlarged input.")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_x<factor>.png.")
@model_options
@file_options
def super_resolve(images, factor, also_colorize, overlap, strength, output, model, steps, timesteps, seed, device,
                  dtype, class_label, num_samples, compile_unet, channels_last, max_batch, overwrite, quiet, quality,
                  no_alpha, max_pixels) -> None:
    """Upscale each IMAGE by FACTOR; averaging each FACTOR x FACTOR output block gives the input back."""
    jobs = plan_jobs(expand_inputs(images), output, f"x{factor}", num_samples)
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch)
    seed = pipe.seed(seed)

    edit = super_resolve_edit(pipe, factor=factor, also_colorize=also_colorize, overlap=overlap, strength=strength,
                              steps=steps, timesteps=timesteps, seed=seed, class_label=class_label,
                              num_samples=num_samples, max_pixels=max_pixels)

    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
             max_pixels=max_pixels)
