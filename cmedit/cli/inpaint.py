"""``cmedit inpaint``: fill the white area of a mask."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (check_outputs, load_model, make_generator, model_options, output_paths,
                      schedule_kwargs, user_errors, write_outputs)


@click.command(epilog="""\b
Examples:
  cmedit inpaint --mask samples/face_mask.png samples/face.png -o filled.png
  cmedit inpaint --mask m.png img.png --num-samples 4 -o candidates/
""")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mask", "mask_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Mask image of the same size: white (>= 50% grey) = fill, black or transparent = keep.")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_inpainted.png.")
@model_options
def inpaint(image: Path, mask_path: Path, output: str | None, model, steps, timesteps, seed, device, dtype,
            class_label, num_samples, overwrite, quiet) -> None:
    """Fill the white area of MASK in IMAGE; every pixel outside it is kept exactly."""
    from ..image_io import read_image
    from ..pipeline import DEFAULT_EDIT_STEPS

    paths = output_paths(output, f"{image.stem}_inpainted", num_samples)
    check_outputs(paths, overwrite)
    with user_errors():
        picture, mask = read_image(image), read_image(mask_path)
        if picture.size != mask.size:
            raise ValueError(f"{mask_path}: mask is {mask.width}x{mask.height} but {image} is "
                             f"{picture.width}x{picture.height}")
        pipe = load_model(model, device, dtype, quiet)
        result = pipe.inpaint(picture, mask, class_labels=class_label, num_images_per_prompt=num_samples,
                              generator=make_generator(seed, quiet),
                              **schedule_kwargs(steps, timesteps, DEFAULT_EDIT_STEPS))
    write_outputs(result.images, paths, quiet)
