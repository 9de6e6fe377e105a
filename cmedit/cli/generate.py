"""``cmedit generate``: sample new images (Algorithm 1)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from .files import is_file_target
from .options import ModelLoader, file_class_labels, make_generator, model_options, schedule_kwargs, user_errors


@click.command(epilog="""\b
Examples:
  cmedit generate -n 16 -o generated/
  cmedit generate --timesteps 22,0 --seed 3 -o one.png
  accelerate launch -m cmedit generate -n 100000 --seed 0 -o generated/   # one share per GPU
""")
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of images to sample.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per call of the model (and per share handed to a process); the images do not depend "
                   "on it. --max-batch bounds how many the network runs at once (memory).")
@click.option("-o", "--output", metavar="PATH", default="generated/", show_default=True,
              help="Output folder (files 0000.png, ...) or a file name (numbered when several). With --seed, "
                   "image i has seed --seed + i and those that exist are skipped, so a stopped run is resumed by "
                   "the same command; without it, numbering continues after the highest that exists.")
@model_options
def generate(num_images, batch_size, output, model, steps, timesteps, seed, device, dtype, class_label,
             num_samples, compile_unet, channels_last, max_batch, overwrite, quiet) -> None:
    """Sample new images from the model in one step or a few (--steps, --timesteps).

    Default: the model folder's own schedule (generate_timesteps in its cmedit.json), else 1 step.
    Image i (0000.png, ...) is drawn with seed --seed + i, whatever the batch or process it falls in; a
    rerun with the same --seed finishes the job. Without --seed (a random seed) a rerun adds images,
    numbered after the highest that exists.
    """
    from ..batch.distributed import Summary, describe_share, is_main_process, share_blocks, wait_for_everyone
    from ..io.files import OutputExistsError, check_output_path, write_image
    from .files import finish

    if num_samples != 1 and not quiet:  # a model option every edit command has; -n says it for generate
        click.echo("note: --num-samples is deprecated for generate: use -n (the count is -n times --num-samples)",
                   err=True)
    count = num_images * num_samples
    names = OutputNames(output, count, overwrite=overwrite, resume=seed is not None)
    main = is_main_process()
    summary = Summary()
    with user_errors():
        for i in range(count):
            check_output_path(names.path(names.first + i), overwrite=True)  # format and folder, before any work
    if names.single and names.path(0).exists() and not overwrite:
        if not quiet and main:
            click.echo(f"skipped: {names.path(0)} exists (--overwrite to replace)", err=True)
        return
    todo = [i for i in range(count) if overwrite or not names.path(names.first + i).exists()]
    pending = set(todo)
    summary.skipped = [str(names.path(names.first + i)) for i in range(count) if i not in pending] if main else []
    if summary.skipped and not quiet:
        click.echo(f"skipped {len(summary.skipped)} images that exist (--overwrite to replace)", err=True)
    wait_for_everyone()  # every process planned from the same folder before any of them writes
    mine = share_blocks(todo, batch_size)  # whole batches per process: the same batches as one process
    if describe_share(len(mine), "images") and not quiet:
        click.echo(describe_share(len(mine), "images"), err=True)
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch)
    seed = pipe.seed(seed)  # drawn by the main process when not given; printed when the model loads
    progress = None
    if count > 1 and not quiet and main:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(mine), unit="image", leave=False)

    def write(i: int, rgb) -> None:
        """Image ``i`` of this run to its file; one that appeared meanwhile (another run) is kept: with
        --seed it is the same image (skipped), without, this one takes the next free number."""
        number = names.first + i
        while True:
            path = names.path(number)
            try:
                write_image(path, rgb, overwrite=overwrite)
            except OutputExistsError:
                if names.resume or names.single:
                    summary.skipped.append(str(path))
                    if not quiet:
                        click.echo(f"skipped: {path} exists (--overwrite to replace)", err=True)
                    return
                number = max(number + 1, names.highest() + 1)
                continue
            except ValueError as error:
                summary.failed.append((str(path), str(error).splitlines()[0]))
                click.echo(f"Error: {summary.failed[-1][1]}", err=True)
                return
            summary.done.append(str(path))
            if not quiet and main:
                click.echo(f"wrote {path}", err=True)
            return

    fatal = None
    try:
        with user_errors():
            batches: dict[int, list[int]] = {}
            for i in mine:
                batches.setdefault(i // batch_size, []).append(i)
            for indices in batches.values():
                seeds = [seed + names.first + i for i in indices]  # image number n: seed + n
                images = pipe().generate(batch_size=len(indices), generator=[make_generator(s) for s in seeds],
                                         class_labels=file_class_labels(pipe(), class_label, seeds),
                                         output_type="np", **schedule_kwargs(steps, timesteps)).images
                for i, rgb in zip(indices, images):
                    write(i, rgb)
                if progress is not None:
                    progress.update(len(indices))
    except click.ClickException as error:  # the model did not load, say: report, so no process waits
        fatal = error
        summary.fatal = error.format_message()
    if progress is not None:
        progress.close()
    finish(summary, fatal, quiet=quiet or count <= 1)


class OutputNames:
    """Where generate's images go: ``-o file.png`` (one image), ``file_<i>.png`` (several) or
    ``folder/<iiii>.png``. With ``resume`` (an explicit --seed) or ``overwrite`` numbers start at 0
    (image i is always file i); otherwise numbering continues after the highest number that exists,
    so a second run adds files instead of colliding (docs/guarantees.md)."""

    def __init__(self, output: str, count: int, *, overwrite: bool, resume: bool) -> None:
        self.single = is_file_target(output) and count == 1
        self.resume = resume
        if is_file_target(output):
            target = Path(output)
            self.folder, self.prefix, self.suffix, self.width = target.parent, f"{target.stem}_", target.suffix, 0
        else:
            self.folder, self.prefix, self.suffix, self.width = Path(output), "", ".png", 4
        self.first = 0 if overwrite or resume or self.single else self.highest() + 1

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


# -n is generate's count: the edit commands' --num-samples (candidates per input) stays accepted, hidden.
for _param in generate.params:
    if _param.name == "num_samples":
        _param.hidden = True
