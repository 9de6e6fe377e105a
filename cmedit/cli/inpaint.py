"""``cmedit inpaint``: fill the white area of a mask (or the transparent area of an RGBA image)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from .files import Result, batch_key_for_noise, expand_inputs, file_options, plan_jobs, run_jobs
from .manifest import check_inputs, manifest_option, run_manifest_command
from .options import (ModelLoader, candidate_generators, file_class_labels, model_options, noise_level_option,
                      schedule_kwargs, show_library_notes, split_candidates, strength_option, user_errors)


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
                 class_label=None, num_samples: int = 1, quiet: bool = False, per_image: dict | None = None,
                 per_image_source=None, max_pixels: int | None = None,
                 noise_level: float | str = 0.0) -> Callable[[list], list[list[Result]]]:
    """The edit of ``cmedit inpaint``: ``LoadedImage`` batch -> each image's candidates (``Result``).

    ``pipe`` returns the pipeline when called (loaded on first use). Used by the CLI and the web app.
    ``per_image`` (``--mask-dir`` / ``--masks``, from ``cmedit.batch.masks.match_masks``): each image's
    mask file, or why it has none (a string), instead of the one ``mask_image``; ``per_image_source``
    names the folder or glob in errors. ``max_pixels`` bounds the masks read and the full-size buffers
    (crop windows, results) before anything is allocated.
    """
    from ..io.files import DEFAULT_MAX_PIXELS, read_mask

    def own_mask(loaded):
        """(mask image, its name) of one image: its own file (``per_image``) or ``mask_image``."""
        if per_image is None:
            return mask_image, mask_name
        path = per_image.get(Path(loaded.path), "no mask")
        if isinstance(path, str):
            raise ValueError(f"{loaded.path}: {path} in {per_image_source}")
        return read_mask(path, max_pixels or DEFAULT_MAX_PIXELS), path

    def edit(batch: list) -> list[list[Result]]:
        import numpy as np

        masks = []
        for loaded in batch:
            image, name = own_mask(loaded)
            masks.append(inpaint_mask(loaded, image, mask_name=name, resize_mask=resize_mask, quiet=quiet))
        limit = max_pixels or DEFAULT_MAX_PIXELS
        for loaded, mask in zip(batch, masks):  # crop windows' memory, refused up front (cmedit.fullres.budget)
            if max(loaded.rgb.shape[:2]) > pipe().resolution:
                from ..fullres.budget import check_pixels, largest_crop_window

                side = largest_crop_window(mask, context=context, min_crop_size=pipe().resolution)
                check_pixels(f"{loaded.path}: the crop window around the masked region", side, side, num_samples,
                             limit)
                check_pixels(f"{loaded.path}: the result", *loaded.rgb.shape[:2], num_samples, limit)
        generator = candidate_generators(seed, len(batch), num_samples)
        whole_image = max(batch[0].rgb.shape[:2]) <= pipe().resolution  # else region crops
        out = pipe().inpaint([loaded.rgb for loaded in batch], masks, context=context, feather=feather,
                             noise_level=noise_level,
                             class_labels=file_class_labels(pipe(), class_label, [seed] * len(batch))
                             if whole_image else class_label,
                             num_images_per_prompt=num_samples, generator=generator,
                             output_type="np", **schedule_kwargs(steps, timesteps, strength=strength)).images
        results = []
        for loaded, mask, candidates in zip(batch, masks, split_candidates(out, len(batch))):
            alpha = loaded.alpha
            if alpha is not None and mask_image is None and per_image is None:
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
@click.argument("images", nargs=-1, metavar="IMAGE...")
@manifest_option
@click.option("--mask", "mask_path", type=click.Path(path_type=Path), default=None,
              help="Mask image: white (>= 50% grey) = fill, black or transparent = keep. "
                   "Without it, the transparent pixels of an RGBA image are filled.")
@click.option("--mask-dir", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="A mask per image: DIR/<image stem>.* or DIR/<image stem>_mask.* (a mask per image in a batch).")
@click.option("--masks", "masks_glob", metavar="GLOB", default=None,
              help="A mask per image among the files matching GLOB (quoted, e.g. 'masks/*.png'), matched by "
                   "file stem as --mask-dir.")
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
def inpaint(images, manifest, mask_path, mask_dir, masks_glob, resize_mask, context, feather, strength, noise_level,
            output, model, steps, timesteps, seed, device, dtype, class_label, num_samples, compile_unet, channels_last,
            max_batch, overwrite, quiet, quality, no_alpha, max_pixels, batch_size) -> None:
    """Fill the masked area of each IMAGE; every pixel outside it is kept exactly."""
    from ..io.files import DEFAULT_MAX_PIXELS, read_mask

    check_inputs(images, manifest)
    if sum(option is not None for option in (mask_path, mask_dir, masks_glob)) > 1:
        raise click.UsageError("give one of --mask, --mask-dir, --masks")
    if manifest is not None:
        if mask_path is not None or mask_dir is not None or masks_glob is not None:
            raise click.UsageError("with --manifest, masks are given in its mask column")
        return run_manifest_command(
            "inpaint", manifest, output=output, strength=strength, model=model, steps=steps, timesteps=timesteps,
            seed=seed, device=device, dtype=dtype, class_label=class_label, num_samples=num_samples,
            compile_unet=compile_unet, channels_last=channels_last, max_batch=max_batch, overwrite=overwrite,
            quiet=quiet, quality=quality, no_alpha=no_alpha, max_pixels=max_pixels, context=context, feather=feather,
            noise_level=noise_level)
    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    jobs = plan_jobs(expand_inputs(images), output, "inpainted", num_samples)
    mask_image = None
    if mask_path is not None:
        show_library_notes(quiet)
        with user_errors():
            mask_image = read_mask(mask_path, max_pixels)
    per_image = None  # image -> its mask file, or why there is none
    if mask_dir is not None or masks_glob is not None:
        from ..batch.masks import mask_candidates, match_masks

        with user_errors():
            per_image = match_masks([job.source for job in jobs], mask_candidates(mask_dir, masks_glob))
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch,
                       max_pixels=max_pixels)
    seed = pipe.seed(seed)

    edit = inpaint_edit(pipe, mask_image=mask_image, mask_name=mask_path, resize_mask=resize_mask, context=context,
                        feather=feather, strength=strength, steps=steps, timesteps=timesteps, seed=seed,
                        class_label=class_label, num_samples=num_samples, quiet=quiet, per_image=per_image,
                        per_image_source=mask_dir or masks_glob, max_pixels=max_pixels, noise_level=noise_level)

    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
             max_pixels=max_pixels, batch_key=batch_key_for_noise(noise_level), batch_size=batch_size)
