"""``cmedit generate``: sample new images (Algorithm 1)."""

from __future__ import annotations

import re
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
              help="Output folder (files 0000.png, ...; numbering continues after the highest that exists), "
                   "or a file name (numbered when several).")
@model_options
def generate(num_images, batch_size, output, model, steps, timesteps, seed, device, dtype, class_label,
             num_samples, compile_unet, channels_last, max_batch, overwrite, quiet) -> None:
    """Sample new images from the model in one step or a few (--steps, --timesteps).

    Default: the model folder's own schedule (generate_timesteps in its cmedit.json), else 1 step.
    """
    from ..io.files import OutputExistsError, check_output_path, write_image

    count = num_images * num_samples
    names = OutputNames(output, count, overwrite)
    with user_errors():
        check_output_path(names.path(names.next), overwrite=True)  # format and folder, before any work
        if names.single and names.path(0).exists() and not overwrite:
            if not quiet:
                click.echo(f"skipped: {names.path(0)} exists (--overwrite to replace)", err=True)
            return
        loader = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch)
        seed = loader.seed(seed)
        pipe = loader()
        generator = make_generator(seed)
        for start in range(0, count, batch_size):
            images = pipe.generate(batch_size=min(batch_size, count - start), class_labels=class_label,
                                   generator=generator, output_type="np",
                                   **schedule_kwargs(steps, timesteps)).images
            for rgb in images:
                while True:
                    path = names.path(names.next)
                    try:
                        write_image(path, rgb, overwrite=overwrite)
                    except OutputExistsError:
                        if names.single:  # written meanwhile by another run: kept
                            if not quiet:
                                click.echo(f"skipped: {path} exists (--overwrite to replace)", err=True)
                            break
                        names.skip_taken()  # another run took this number: the next free one
                        continue
                    names.next += 1
                    if not quiet:
                        click.echo(f"wrote {path}", err=True)
                    break


class OutputNames:
    """Where generate's images go: ``-o file.png`` (one image), ``file_<i>.png`` (several) or
    ``folder/<iiii>.png``. Without ``overwrite``, numbering continues after the highest number that
    exists, so a second run adds files instead of colliding (docs/guarantees.md)."""

    def __init__(self, output: str, count: int, overwrite: bool) -> None:
        self.single = is_file_target(output) and count == 1
        if is_file_target(output):
            target = Path(output)
            self.folder, self.prefix, self.suffix, self.width = target.parent, f"{target.stem}_", target.suffix, 0
        else:
            self.folder, self.prefix, self.suffix, self.width = Path(output), "", ".png", 4
        self.next = 0 if overwrite or self.single else self.highest() + 1

    def path(self, index: int) -> Path:
        if self.single:
            return self.folder / f"{self.prefix[:-1]}{self.suffix}"
        return self.folder / f"{self.prefix}{index:0{self.width}d}{self.suffix}"

    def highest(self) -> int:
        """The highest number among the existing ``<prefix><number><suffix>`` files (-1 if none)."""
        pattern = re.compile(re.escape(self.prefix) + r"(\d+)" + re.escape(self.suffix) + "$")
        try:
            numbers = [int(m.group(1)) for entry in self.folder.iterdir() if (m := pattern.match(entry.name))]
        except OSError:
            return -1
        return max(numbers, default=-1)

    def skip_taken(self) -> None:
        self.next = max(self.next + 1, self.highest() + 1)
