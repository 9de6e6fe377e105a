"""``cmedit inpaint``: fill the white area of a mask (or the transparent area of an RGBA image)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from .files import Result, batch_key_for_noise, expand_inputs, file_options, plan_jobs, run_jobs
from .options import (ModelLoader, candidate_generators, model_options, noise_level_option, schedule_kwargs,
                      show_library_notes, split_candidates, strength_option, user_errors)


def inpaint_mask(loaded, mask_image, *, mask_name=None, resize_mask: bool = False, quiet: bool = False):
    """The ``(H, W)`` boolean mask (True = fill) of a ``LoadedImage``: ``mask_image`` (a PIL image, white =
    fill; resized with nearest neighbour if ``resize_mask``) or, when it is None, the image's transparent
    pixels. Raises ``ValueError`` for a mask of the wrong size, an empty mask or nothing to fill."""
    from PIL import Image

    from ..io.tensors import masks_to_tensor, transparent

    source = loaded.path
    if mask_image is None:
        if loaded.alpha is None:
            raise ValueError(f"{source}: no --mask given and the image has no alpha channel to fill")
        mask = transparent(loaded.alpha)
    else:
        current = mask_image
        if current.size != loaded.size:
            if not resize_mask:
                raise ValueError(f"{source}: mask {mask_name} is {current.width}x{current.height} but the image "
                                 f"is {loaded.size[0]}x{loaded.size[1]} (pass --resize-mask to resize it)")
            current = current.resize(loaded.size, Image.NEAREST)
        mask = masks_to_tensor(current)[0, 0].numpy() > 0.5
    if not mask.any():
        raise ValueError(f"{source}: the mask is empty (all black): nothing to inpaint")
    if mask.all() and not quiet:
        click.echo(f"{source}: the mask covers the whole image: generating a new image", err=True)
    return mask


def inpaint_edit(pipe: Callable, *, mask_image, mask_name=None, resize_mask: bool = False, context: float = 0.5,
                 feather: int = 3, strength: float = 1.0, steps=None, timesteps=None, seed: int = 0,
                 class_label=None, num_samples: int = 1, quiet: bool = False,
                 max_pixels: int | None = None, noise_level: float | str = 0.0) -> Callable[[list], list[list[Result]]]:
    """The edit of ``cmedit inpaint``: ``LoadedImage`` batch -> each image's candidates (``Result``).

    ``pipe`` returns the pipeline when called (loaded on first use). Used by the CLI and the web app.
    ``max_pixels`` bounds the full-size buffers (crop windows, results) before anything is allocated.
    """

    def edit(batch: list) -> list[list[Result]]:
        import numpy as np

        from ..io.files import DEFAULT_MAX_PIXELS

        masks = [inpaint_mask(loaded, mask_image, mask_name=mask_name, resize_mask=resize_mask, quiet=quiet)
                 for loaded in batch]
        limit = max_pixels or DEFAULT_MAX_PIXELS
        for loaded, mask in zip(batch, masks):  # crop windows' memory, refused up front (cmedit.fullres.budget)
            if max(loaded.rgb.shape[:2]) > pipe().resolution:
                from ..fullres.budget import check_pixels, largest_crop_window

                side = largest_crop_window(mask, context=context, min_crop_size=pipe().resolution)
                check_pixels(f"{loaded.path}: the crop window around the masked region", side, side, num_samples,
                             limit)
                check_pixels(f"{loaded.path}: the result", *loaded.rgb.shape[:2], num_samples, limit)
        generator = candidate_generators(seed, len(batch), num_samples)
        out = pipe().inpaint([loaded.rgb for loaded in batch], masks, context=context, feather=feather,
                             noise_level=noise_level,
                             class_labels=class_label, num_images_per_prompt=num_samples, generator=generator,
                             output_type="np", **schedule_kwargs(steps, timesteps, strength=strength)).images
        results = []
        for loaded, mask, candidates in zip(batch, masks, split_candidates(out, len(batch))):
            alpha = loaded.alpha
            if alpha is not None and mask_image is None:
                alpha = np.where(mask, 1.0, alpha)  # filled holes become opaque
            results.append([Result(rgb, alpha, loaded.bits, loaded.grey, loaded.icc_profile) for rgb in candidates])
        return results

    return edit


@click.command(epilog="""\b
Examples:
  cmedit inpaint --mask samples/center_mask.png samples/face.png -o filled.png
  cmedit inpaint --mask samples/quarter_mask.png samples/heart.png --num-samples 4 -o candidates/
  cmedit inpaint --mask samples/center_mask.png samples/face.png samples/animal.png 'samples/heldout/1f1e*.png' -o filled/
  cmedit inpaint samples/face_holes.png          # RGBA: the transparent pixels are filled
  cmedit inpaint --mask samples/center_mask.png samples/face_painted.png --strength 0.4   # paint guides the fill
""")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path), default=None,
              help="Mask image: white (>= 50% grey) = fill, black or transparent = keep. "
                   "Without it, the transparent pixels of an RGBA image are filled.")
@click.option("--resize-mask", is_flag=True, help="Resize the mask to each image's size (nearest neighbour).")
@click.option("--context", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Images larger than the model: margin of context around each masked region, "
                   "as a fraction of the region's size.")
@click.option("--feather", type=click.IntRange(min=0), default=3, show_default=True,
              help="Images larger than the model: pixel rings inside the mask blended into the original "
                   "for a soft seam (0: hard edge). Pixels outside the mask never change.")
@strength_option(1.0, "Below 1, start part-way down the model's noise grid (this fraction of it, counted "
                      "from the clean end) from the image itself plus noise, so what lies under the mask "
                      "guides the fill (lower keeps more of it); 1 ignores it (Algorithm 4).")
@noise_level_option("Noise in the image: the fill follows the kept pixels only as far as the noise allows "
                    "(they are written back as they are).")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_inpainted.png.")
@model_options
@file_options
def inpaint(images, mask_path, resize_mask, context, feather, strength, noise_level, output, model, steps, timesteps, seed, device,
            dtype, class_label, num_samples, compile_unet, channels_last, max_batch, overwrite, quiet, quality,
            no_alpha, max_pixels) -> None:
    """Fill the masked area of each IMAGE; every pixel outside it is kept exactly."""
    from ..io.files import DEFAULT_MAX_PIXELS, read_mask

    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    jobs = plan_jobs(expand_inputs(images), output, "inpainted", num_samples)
    mask_image = None
    if mask_path is not None:
        show_library_notes(quiet)
        with user_errors():
            mask_image = read_mask(mask_path, max_pixels)
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch)
    seed = pipe.seed(seed)

    edit = inpaint_edit(pipe, mask_image=mask_image, mask_name=mask_path, resize_mask=resize_mask, context=context,
                        feather=feather, strength=strength, steps=steps, timesteps=timesteps, seed=seed,
                        class_label=class_label, num_samples=num_samples, quiet=quiet, max_pixels=max_pixels,
                        noise_level=noise_level)

    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
             max_pixels=max_pixels, batch_key=batch_key_for_noise(noise_level))
