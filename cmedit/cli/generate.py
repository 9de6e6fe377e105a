"""``cmedit generate``: sample new images (Algorithm 1)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (check_outputs, load_model, make_generator, model_options, output_paths,
                      schedule_kwargs, user_errors, write_outputs)


@click.command(epilog="""\b
Examples:
  cmedit generate -n 16 -o generated/
  cmedit generate --timesteps 22,0 --seed 3 -o one.png
""")
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of images to sample (in batches of --batch-size).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per forward pass.")
@click.option("-o", "--output", metavar="PATH", default="generated/", show_default=True,
              help="Output folder (files 0000.png, ...), or a file name when -n is 1.")
@model_options
def generate(num_images: int, batch_size: int, output: str, model, steps, timesteps, seed, device, dtype,
             class_label, num_samples, overwrite, quiet) -> None:
    """Sample new images from the model in 1 step (default) or a few (--steps, --timesteps)."""
    count = num_images * num_samples
    if Path(output).suffix and not output.endswith(("/", "\\")):
        paths = output_paths(output, "sample", count)
    else:
        paths = [Path(output) / f"{i:04d}.png" for i in range(count)]
    check_outputs(paths, overwrite)
    with user_errors():
        pipe = load_model(model, device, dtype, quiet)
        generator = make_generator(seed, quiet)
        images = []
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            images += pipe.generate(batch_size=n, class_labels=class_label, generator=generator,
                                    **schedule_kwargs(steps, timesteps, 1)).images
    write_outputs(images, paths, quiet)
