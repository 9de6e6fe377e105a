"""``--manifest jobs.csv|jobs.jsonl``: the rows of a manifest instead of IMAGE arguments (``cmedit.batch``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from .files import is_file_target
from .options import user_errors


def manifest_option(command: Callable) -> Callable:
    return click.option(
        "--manifest", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE",
        help="A .csv (with a header) or .jsonl file of jobs instead of IMAGE arguments: columns image, "
             "mask, output, and per-row factor, strength, seed, prompt (docs/batch.md); -o is the folder "
             "for rows without an output.")(command)


def check_inputs(images: tuple, manifest: Path | None) -> None:
    """IMAGE arguments or ``--manifest``, one of the two."""
    if not images and manifest is None:
        raise click.UsageError("give IMAGE... or --manifest")
    if images and manifest is not None:
        raise click.UsageError("give IMAGE... or --manifest, not both")


def run_manifest_command(task: str, manifest: Path, *, output, strength, model, steps, timesteps, seed, device,
                         dtype, class_label, num_samples, compile_unet, channels_last, max_batch, overwrite, quiet,
                         quality, no_alpha, max_pixels, factor: int = 4, **task_kwargs) -> None:
    """Read the manifest, run ``cmedit.batch.run_manifest``, print the summary; exit 1 if a row failed."""
    from ..batch import read_manifest, run_manifest
    from ..batch.distributed import is_main_process
    from .files import finish
    from .options import ModelLoader, schedule_kwargs

    if is_file_target(output):
        raise click.UsageError("with --manifest, -o is a folder (for rows without an output column)")
    with user_errors():
        rows, errors = read_manifest(manifest)
    main = is_main_process()
    loader = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch,
                         max_pixels=max_pixels)
    seed = loader.seed(seed)  # drawn by the main process when not given; printed when the model loads
    with user_errors():
        pipe = loader()

    def report(kind: str, message: str) -> None:
        if kind == "error":
            click.echo(f"Error: {manifest} {message}", err=True)
        elif not quiet and main:
            click.echo(f"{kind} {message}", err=True)

    summary = run_manifest(pipe, sorted([*rows, *errors], key=lambda row: row.number), task,
                           output_dir=output or ".", seed=seed, factor=factor, strength=strength,
                           num_samples=num_samples, overwrite=overwrite, quality=quality, max_pixels=max_pixels,
                           keep_alpha=not no_alpha, report=report, class_labels=class_label,
                           **schedule_kwargs(steps, timesteps), **task_kwargs)
    finish(summary, None, quiet=quiet, merged=True)
