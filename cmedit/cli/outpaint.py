"""``cmedit outpaint``: extend the canvas and fill the new border (inpainting with a border mask)."""

from __future__ import annotations

from typing import Callable

import click

from .files import Result, expand_inputs, file_options, plan_jobs, run_jobs
from .options import (ModelLoader, candidate_generators, model_options, schedule_kwargs, split_candidates,
                      strength_option)


def outpaint_edit(pipe: Callable, *, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0, feather: int = 3,
                  strength: float = 1.0, steps=None, timesteps=None, seed: int = 0, class_label=None,
                  num_samples: int = 1, max_pixels: int | None = None) -> Callable[[list], list[list[Result]]]:
    """The edit of ``cmedit outpaint``: a batch of same-size ``LoadedImage`` -> each one's candidates (``Result``).

    ``pipe`` returns the pipeline when called (loaded on first use). Used by the CLI and the web app.
    """

    def edit(batch: list) -> list[list[Result]]:
        import torch

        from ..fullres.budget import check_pixels, outpaint_window
        from ..fullres.canvas import outpaint_canvas
        from ..io.files import DEFAULT_MAX_PIXELS
        from ..io.tensors import images_to_tensor

        limit = max_pixels or DEFAULT_MAX_PIXELS
        for loaded in batch:  # the canvas and its window, refused up front (cmedit.fullres.budget)
            height, width = loaded.rgb.shape[:2]
            check_pixels(f"{loaded.path}: the outpainted canvas", height + top + bottom, width + left + right,
                         num_samples, limit)
            check_pixels(f"{loaded.path}: the square window that edits the canvas",
                         *outpaint_window(height, width, left, right, top, bottom, pipe().resolution), num_samples,
                         limit)

        if left + right + top + bottom == 0:
            raise ValueError("give at least one of --left, --right, --top, --bottom")
        canvases = [outpaint_canvas(images_to_tensor(loaded.rgb), left, right, top, bottom, max_pixels=limit)
                    for loaded in batch]
        canvas, mask = torch.cat([c for c, _ in canvases]), canvases[0][1]  # files of one size: one mask
        out = pipe().inpaint((canvas + 1) / 2, mask, feather=feather, full_resolution=True,
                             class_labels=class_label, num_images_per_prompt=num_samples,
                             generator=candidate_generators(seed, len(batch), num_samples), output_type="np",
                             **schedule_kwargs(steps, timesteps, strength=strength)).images
        results = []
        for loaded, candidates in zip(batch, split_candidates(out, len(batch))):
            alpha = None
            if loaded.alpha is not None:  # the new border is opaque
                alpha, _ = outpaint_canvas(images_to_tensor(loaded.alpha), left, right, top, bottom)
                alpha = ((alpha[0, 0] + 1) / 2).numpy() * (1 - mask[0, 0].numpy()) + mask[0, 0].numpy()
            results.append([Result(rgb, alpha, loaded.bits, loaded.grey, loaded.icc_profile) for rgb in candidates])
        return results

    return edit


@click.command(epilog="""\b
Examples:
  cmedit outpaint --right 16 samples/face.png -o wider.png
  cmedit outpaint --left 8 --right 8 --top 8 --bottom 8 samples/heart.png -o framed.png
  cmedit outpaint --right 16 --strength 0.5 samples/face.png -o mirrored.png
""")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--left", type=click.IntRange(min=0), default=0, show_default=True, help="Pixels to add on the left.")
@click.option("--right", type=click.IntRange(min=0), default=0, show_default=True, help="Pixels to add on the right.")
@click.option("--top", type=click.IntRange(min=0), default=0, show_default=True, help="Pixels to add at the top.")
@click.option("--bottom", type=click.IntRange(min=0), default=0, show_default=True,
              help="Pixels to add at the bottom.")
@click.option("--feather", type=click.IntRange(min=0), default=3, show_default=True,
              help="Pixel rings of the new border blended towards the mirrored fill for a soft seam.")
@strength_option(1.0, "Below 1, start part-way down the model's noise grid (this fraction of it, counted from "
                      "the clean end) from the canvas plus noise, so the border's mirror image of the picture "
                      "guides the fill (lower keeps more of it); 1 ignores it.")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_outpainted.png.")
@model_options
@file_options
def outpaint(images, left, right, top, bottom, feather, strength, output, model, steps, timesteps, seed, device, dtype,
             class_label, num_samples, compile_unet, channels_last, max_batch, overwrite, quiet, quality, no_alpha,
             max_pixels, batch_size) -> None:
    """Extend each IMAGE by the given borders and fill them; the original pixels are kept exactly."""
    if left + right + top + bottom == 0:
        raise click.UsageError("give at least one of --left, --right, --top, --bottom")
    jobs = plan_jobs(expand_inputs(images), output, "outpainted", num_samples)
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch,
                       max_pixels=max_pixels)
    seed = pipe.seed(seed)

    edit = outpaint_edit(pipe, left=left, right=right, top=top, bottom=bottom, feather=feather, strength=strength,
                         steps=steps, timesteps=timesteps, seed=seed, class_label=class_label,
                         num_samples=num_samples, max_pixels=max_pixels)

    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
             max_pixels=max_pixels, batch_size=batch_size)
