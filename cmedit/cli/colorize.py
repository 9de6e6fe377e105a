"""``cmedit colorize``: colour a greyscale image, keeping its grey levels."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (check_outputs, load_model, make_generator, model_options, output_paths,
                      schedule_kwargs, user_errors, write_outputs)


@click.command(epilog="""\b
Examples:
  cmedit colorize samples/face_gray.png -o color.png
  cmedit colorize old_photo.jpg --timesteps 30,20,10,0 --num-samples 4 -o colored/
""")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", metavar="PATH", help="Output file, or folder ending in /. "
              "Default: ./<image>_colorized.png.")
@model_options
def colorize(image: Path, output: str | None, model, steps, timesteps, seed, device, dtype,
             class_label, num_samples, overwrite, quiet) -> None:
    """Colorize IMAGE (greyscale, or colour whose luminance is kept); its luminance is unchanged."""
    from ..image_io import read_image
    from ..pipeline import DEFAULT_EDIT_STEPS

    paths = output_paths(output, f"{image.stem}_colorized", num_samples)
    check_outputs(paths, overwrite)
    with user_errors():
        picture = read_image(image)
        pipe = load_model(model, device, dtype, quiet)
        result = pipe.colorize(picture, class_labels=class_label, num_images_per_prompt=num_samples,
                               generator=make_generator(seed, quiet),
                               **schedule_kwargs(steps, timesteps, DEFAULT_EDIT_STEPS))
    write_outputs(result.images, paths, quiet)
