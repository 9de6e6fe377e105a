"""``cmedit img2img``: turn a rough image (strokes, a sketch) into a model sample with its layout (SDEdit)."""

from __future__ import annotations

import click

from .files import Result, expand_inputs, file_options, plan_jobs, run_jobs
from .options import (ModelLoader, candidate_generators, model_options, resolve_seed, schedule_kwargs,
                      split_candidates, strength_option)


@click.command(epilog="""\b
Examples:
  cmedit img2img strokes.png -o image.png
  cmedit img2img strokes.png --strength 0.7 --num-samples 4 -o variants/
  cmedit img2img 'sketches/*.png' --strength 0.3 -o refined/
""")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@strength_option(0.4, "Where on the model's noise grid to start (this fraction of it, counted from the clean "
                      "end), from the image plus noise: lower keeps "
                      "more of the image, 1 ignores it.")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_img2img.png.")
@model_options
@file_options
def img2img(images, strength, output, model, steps, timesteps, seed, device, dtype, class_label, num_samples,
            compile_unet, channels_last, max_batch, overwrite, quiet, quality, no_alpha, max_pixels) -> None:
    """Redraw each IMAGE as the model draws, keeping its layout and colours (SDEdit).

    Noise is added to the image at --strength of the model's noise grid and removed in --steps
    steps, with no pixel kept exactly: a painting of coloured strokes becomes an image of the
    model's kind (the paper's stroke-guided generation). The image is resized to the model's
    resolution and the result back to its size. Transparency is kept as it is.
    """
    jobs = plan_jobs(expand_inputs(images), output, "img2img", num_samples)
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch)
    seed = resolve_seed(seed, quiet)

    def edit(batch: list) -> list[list[Result]]:
        out = pipe().img2img([loaded.rgb for loaded in batch], class_labels=class_label,
                             num_images_per_prompt=num_samples,
                             generator=candidate_generators(seed, len(batch), num_samples), output_type="np",
                             **schedule_kwargs(steps, timesteps, strength=strength)).images
        return [[Result(rgb, loaded.alpha, loaded.bits, False, loaded.icc_profile) for rgb in candidates]
                for loaded, candidates in zip(batch, split_candidates(out, len(batch)))]

    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
             max_pixels=max_pixels, batch_key=lambda loaded: loaded.rgb.shape)
