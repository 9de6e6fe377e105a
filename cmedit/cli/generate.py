"""``cmedit generate``: sample new images (Algorithm 1)."""

from __future__ import annotations

from pathlib import Path

import click

from .files import is_file_target
from .options import ModelLoader, make_generator, model_options, schedule_kwargs, user_errors


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
              help="Output folder (files 0000.png, ...), or a file name (numbered when several).")
@model_options
def generate(num_images, batch_size, output, model, steps, timesteps, seed, device, dtype, class_label,
             num_samples, compile_unet, channels_last, max_batch, overwrite, quiet) -> None:
    """Sample new images from the model in one step or a few (--steps, --timesteps).

    Default: the model folder's own schedule (generate_timesteps in its cmedit.json), else 1 step.
    """
    from ..io.files import check_output_path, write_image

    count = num_images * num_samples
    if is_file_target(output):
        target = Path(output)
        paths = [target] if count == 1 else [target.with_name(f"{target.stem}_{i}{target.suffix}")
                                             for i in range(count)]
    else:
        paths = [Path(output) / f"{i:04d}.png" for i in range(count)]
    with user_errors():
        for path in paths:
            check_output_path(path, overwrite)
        loader = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch)
        seed = loader.seed(seed)
        pipe = loader()
        generator = make_generator(seed)
        for start in range(0, count, batch_size):
            images = pipe.generate(batch_size=min(batch_size, count - start), class_labels=class_label,
                                   generator=generator, output_type="np",
                                   **schedule_kwargs(steps, timesteps)).images
            for path, rgb in zip(paths[start:], images):
                write_image(path, rgb)
                if not quiet:
                    click.echo(f"wrote {path}", err=True)
