"""``cmedit super-resolve``: upscale by an integer factor, keeping each block's mean."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (check_outputs, load_model, make_generator, model_options, output_paths,
                      schedule_kwargs, user_errors, write_outputs)


@click.command(epilog="""\b
Examples:
  cmedit super-resolve --factor 4 small.png -o big.png
  cmedit super-resolve --factor 2 --colorize small_gray.png -o big_color.png
""")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--factor", "-f", type=click.IntRange(min=2), default=4, show_default=True,
              help="Upscaling factor; must divide the model's resolution (2, 4, 8, ...).")
@click.option("--colorize", "also_colorize", is_flag=True,
              help="Colorize at the same time (only the luminance of each block is kept).")
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_x<factor>.png.")
@model_options
def super_resolve(image: Path, factor: int, also_colorize: bool, output: str | None, model, steps, timesteps,
                  seed, device, dtype, class_label, num_samples, overwrite, quiet) -> None:
    """Upscale IMAGE by FACTOR; averaging each FACTOR x FACTOR block of the output gives IMAGE back."""
    from ..image_io import read_image
    from ..pipeline import DEFAULT_EDIT_STEPS

    paths = output_paths(output, f"{image.stem}_x{factor}", num_samples)
    check_outputs(paths, overwrite)
    with user_errors():
        picture = read_image(image)
        pipe = load_model(model, device, dtype, quiet)
        result = pipe.super_resolve(picture, factor=factor, colorize=also_colorize, class_labels=class_label,
                                    num_images_per_prompt=num_samples, generator=make_generator(seed, quiet),
                                    **schedule_kwargs(steps, timesteps, DEFAULT_EDIT_STEPS))
    write_outputs(result.images, paths, quiet)
