"""Many input files, one model: output naming, skipping, per-file errors and the closing summary."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import click

from .options import user_errors


@dataclass
class Result:
    """One edited image to write: float ``(H, W, 3)`` RGB in ``[0, 1]``, optional ``(H, W)`` alpha,
    and the source's bit depth, greyness and ICC profile so that it is written back in kind."""

    rgb: object
    alpha: object | None = None
    bits: int = 8
    grey: bool = False
    icc_profile: bytes | None = None


# Files of one size are edited together only up to this many pixels each: every crop, tile and
# full-size tensor of a batch is held at once, so large images go one file at a time.
BATCH_MAX_PIXELS = 1 << 20


def same_size_key(loaded) -> tuple | None:
    """Batch files of the same size (``None``: this file alone, being over ``BATCH_MAX_PIXELS``)."""
    height, width = loaded.rgb.shape[:2]
    return loaded.rgb.shape if height * width <= BATCH_MAX_PIXELS else None


@dataclass
class Job:
    source: Path
    outputs: list[Path]


def file_options(command: Callable) -> Callable:
    """Options of the commands that read and write image files."""
    options = [
        click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
                     help="JPEG / WebP quality of the outputs."),
        click.option("--no-alpha", is_flag=True, help="Drop the input's alpha channel from the outputs."),
        click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, metavar="N",
                     help="Files of one size edited together (in blocks of N consecutive files, the unit that "
                          "--num-processes / accelerate launch hands to each process)."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Refuse images, and results (times the candidates), of more pixels than this "
                          "(default 64,000,000); the library's own checks use the same limit."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Input arguments to paths; a quoted glob such as 'photos/*.jpg' is expanded here."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) and not Path(pattern).exists() else []
        if glob.has_magic(pattern) and not Path(pattern).exists() and not matches:
            raise click.ClickException(f"{pattern}: no file matches")
        paths += [Path(match) for match in matches] or [Path(pattern)]
    return paths


def is_file_target(output: str | None) -> bool:
    """``-o`` names a file (has an extension, is no existing folder, does not end with a slash)."""
    return output is not None and Path(output).suffix != "" and not output.endswith(("/", "\\")) \
        and not Path(output).is_dir()


def plan_jobs(inputs: list[Path], output: str | None, task: str, count: int) -> list[Job]:
    """Output paths per input: ``-o file.ext`` (one input; ``file_0.ext``... for candidates),
    ``-o folder/`` or an existing folder (``folder/<stem>_<task>.png``), or ``./<stem>_<task>.png``."""
    to_file = is_file_target(output)
    if to_file and len(inputs) > 1:
        raise click.ClickException(f"{output}: with several inputs, -o must be a folder (end it with /)")
    jobs = []
    for source in inputs:
        if to_file:
            target = Path(output)
            names = [target] if count == 1 else [target.with_name(f"{target.stem}_{i}{target.suffix}")
                                                 for i in range(count)]
        else:
            folder = Path(output) if output is not None else Path(".")
            stem = f"{source.stem}_{task}"
            names = [folder / f"{stem}.png"] if count == 1 else [folder / f"{stem}_{i}.png" for i in range(count)]
        jobs.append(Job(source, names))
    outputs = [path for job in jobs for path in job.outputs]
    if len(set(outputs)) != len(outputs):
        raise click.ClickException("two inputs would write the same output file (same name in different folders)")
    return jobs


def write_result(path: Path, result: Result, *, quality: int = 95, no_alpha: bool = False,
                 overwrite: bool = False) -> None:
    """Write one ``Result`` as the commands do: the source's bit depth, greyness and ICC profile kept;
    an existing ``path`` is replaced only with ``overwrite`` (else ``OutputExistsError``)."""
    from ..io.files import write_image

    write_image(path, result.rgb, None if no_alpha else result.alpha, bits=result.bits, grey=result.grey,
                icc_profile=result.icc_profile, quality=quality, overwrite=overwrite)


def run_jobs(jobs: list[Job], edit: Callable[[list], list[list[Result]]], *, output: str | None, overwrite: bool,
             quiet: bool, quality: int = 95, no_alpha: bool = False, max_pixels: int | None = None,
             batch_key: Callable[[object], object] | None = same_size_key, batch_size: int = 16) -> None:
    """Read every job's input, ``edit`` them, write the results; report per file, exit 1 if any failed.

    ``edit`` takes a list of ``LoadedImage`` and returns each one's results (one per candidate).
    Inputs with the same ``batch_key`` (not ``None``; by default their size, for images up to
    ``BATCH_MAX_PIXELS``) in one block of ``batch_size`` consecutive jobs go to one ``edit`` call;
    if such a batch fails, its files are retried one by one so that the bad file is named. Without
    ``--overwrite`` nothing is replaced: an input whose output exists is skipped (one "skipped" line,
    exit code 0), before its edit or, when another process wrote the name meanwhile, at the atomic
    write (docs/guarantees.md). One bad file does not stop the others.

    Under ``accelerate launch`` (several processes) the blocks with jobs still to do are split between
    the processes (``cmedit.batch.distributed.share_blocks``), each process edits its share, and the
    main process shows the progress and the summary of all of them.
    """
    from ..batch.distributed import Summary, describe_share, is_main_process, share_blocks, wait_for_everyone
    from ..io.files import DEFAULT_MAX_PIXELS, OutputExistsError, check_output_path, read_image
    from ..models.errors import ModelLoadError
    from .options import show_library_notes

    show_library_notes(quiet)  # the readers' warnings (several frames) from the first file on
    for job in jobs:
        with user_errors():
            for path in job.outputs:
                check_output_path(path, overwrite=True)  # format and folder: fatal, before any work
    main = is_main_process()
    summary = Summary()
    pending = []
    for index, job in enumerate(jobs):  # every process sees the same files before any of them writes
        existing = [path for path in job.outputs if path.exists()]
        if existing and not overwrite:
            summary.skipped.append(str(job.source))
            if not quiet and main:
                click.echo(f"skipped {job.source}: {existing[0]} exists (--overwrite to replace)", err=True)
        else:
            pending.append(index)
    wait_for_everyone()
    mine = share_blocks(pending, batch_size)
    if describe_share(len(mine)) and not quiet:
        click.echo(describe_share(len(mine)), err=True)
    if not main:
        summary.skipped = []  # counted once, by the main process
    progress = None
    if len(jobs) > 1 and not quiet and main:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(mine), unit="file", leave=False)

    def report(job: Job, error: ValueError) -> None:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if str(job.source) not in message:
            message = f"{job.source}: {message}"
        summary.failed.append((str(job.source), message))
        click.echo(f"Error: {message}", err=True)

    def run(group: list) -> None:
        try:
            results = edit([loaded for _, loaded in group])
        except ModelLoadError as error:
            raise click.ClickException(str(error)) from None
        except ValueError as error:  # ImageWriteError and the library's input errors
            if len(group) > 1:
                for item in group:
                    run([item])
            else:
                report(group[0][0], error)
            return
        for (job, _), candidates in zip(group, results):
            write_job(job, candidates)

    def write_job(job: Job, candidates: list[Result]) -> None:
        lost = False
        for path, result in zip(job.outputs, candidates):
            try:
                write_result(path, result, quality=quality, no_alpha=no_alpha, overwrite=overwrite)
            except OutputExistsError:  # appeared while this run computed it (another run): not replaced
                lost = True
                if not quiet:
                    click.echo(f"skipped {job.source}: {path} exists (--overwrite to replace)", err=True)
                continue
            except ValueError as error:
                report(job, error)
                return
            if not quiet and main:
                click.echo(f"wrote {path}", err=True)
        (summary.skipped if lost else summary.done).append(str(job.source))

    def run_share() -> None:
        group: list = []
        for index in mine:
            job = jobs[index]
            try:
                loaded = read_image(job.source, max_pixels or DEFAULT_MAX_PIXELS)
            except ValueError as error:
                report(job, error)
            else:
                try:
                    key = batch_key(loaded) if batch_key is not None else None
                except ModelLoadError as error:
                    raise click.ClickException(str(error)) from None
                key = (index // batch_size, key) if key is not None else None  # batches within blocks
                if group and (key is None or key != group[0][2] or len(group) >= batch_size):
                    run([(j, l) for j, l, _ in group])
                    group = []
                group.append((job, loaded, key))
                if key is None:
                    run([(job, loaded)])
                    group = []
            if progress is not None:
                progress.update()
        if group:
            run([(j, l) for j, l, _ in group])

    fatal = None
    try:
        run_share()
    except click.ClickException as error:  # the model did not load: still report, so no process waits
        fatal = error
        summary.fatal = error.format_message()
    if progress is not None:
        progress.close()
    finish(summary, fatal, quiet=quiet or len(jobs) <= 1)


def finish(summary, fatal: click.ClickException | None, *, quiet: bool, merged: bool = False) -> None:
    """Gather every process's summary (unless ``merged`` already); the main process prints it and
    exits 1 when a file failed."""
    from ..batch.distributed import is_main_process

    total = summary if merged else summary.merged()
    if fatal is not None:
        raise fatal
    if total.fatal is not None:
        raise SystemExit(1)  # another process stopped; it printed why
    if not quiet and is_main_process():
        click.echo(total.line(), err=True)
        if total.failed:
            click.echo("failed: " + ", ".join(source for source, _ in total.failed), err=True)
    if total.failed and is_main_process():  # the others exit 0, so that a launcher lets the main one report
        raise SystemExit(1)


def batch_key_for_noise(noise_level) -> Callable[[object], object]:
    """Inputs batched by size, except with ``--noise-level auto``: then one file at a time (its own estimate)."""
    return (lambda loaded: None) if noise_level == "auto" else same_size_key


def run_whole_image_edits(method: str, task: str, *, images, manifest, output, strength, model, steps, timesteps,
                          seed, device, dtype, class_label, num_samples, compile_unet, channels_last, max_batch,
                          overwrite, quiet, quality, no_alpha, max_pixels, batch_size,
                          noise_level: float | str | None = None) -> None:
    """A command whose edit is ``pipe.<method>(images, ...)`` on whole images of any size, with the
    common options (``model_options``, ``file_options``, ``--strength``); files of one size share a
    batch, outputs are named ``<image>_<task>``, colour RGB with the input's alpha kept."""
    from .manifest import check_inputs, run_manifest_command
    from .options import ModelLoader

    check_inputs(images, manifest)
    if manifest is not None:
        return run_manifest_command(method, manifest, output=output,
                                    strength=strength, model=model, steps=steps, timesteps=timesteps, seed=seed,
                                    device=device, dtype=dtype, class_label=class_label, num_samples=num_samples,
                                    compile_unet=compile_unet, channels_last=channels_last, max_batch=max_batch,
                                    overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
                                    max_pixels=max_pixels,
                                    **({} if noise_level is None else {"noise_level": noise_level}))
    jobs = plan_jobs(expand_inputs(images), output, task, num_samples)
    pipe = ModelLoader(model, device, dtype, quiet, compile_unet, channels_last, max_batch,
                       max_pixels=max_pixels)
    seed = pipe.seed(seed)

    edit = whole_image_edit(pipe, method, strength=strength, steps=steps, timesteps=timesteps, seed=seed,
                            class_label=class_label, num_samples=num_samples, max_pixels=max_pixels,
                            noise_level=noise_level)
    run_jobs(jobs, edit, output=output, overwrite=overwrite, quiet=quiet, quality=quality, no_alpha=no_alpha,
             max_pixels=max_pixels, batch_key=batch_key_for_noise(noise_level), batch_size=batch_size)


def whole_image_edit(pipe: Callable, method: str, *, strength: float, steps=None, timesteps=None, seed: int = 0,
                     class_label=None, num_samples: int = 1,
                     max_pixels: int | None = None,
                     noise_level: float | str | None = None) -> Callable[[list], list[list[Result]]]:
    """The edit of ``cmedit colorize`` / ``img2img``: ``pipe().<method>`` on a ``LoadedImage`` batch -> each
    image's candidates (``Result``, colour RGB with the input's alpha kept). Used by the CLI and the web app."""
    from .options import candidate_generators, file_class_labels, schedule_kwargs, split_candidates

    def edit(batch: list) -> list[list[Result]]:
        from ..fullres.budget import check_pixels
        from ..io.files import DEFAULT_MAX_PIXELS

        for loaded in batch:  # the full-size copies of every candidate, refused up front
            check_pixels(f"{loaded.path}: the result", *loaded.rgb.shape[:2], num_samples,
                         max_pixels or DEFAULT_MAX_PIXELS)
        extra = {} if noise_level is None else {"noise_level": noise_level}  # colorize: --noise-level
        out = getattr(pipe(), method)([loaded.rgb for loaded in batch], **extra,
                                      class_labels=file_class_labels(pipe(), class_label, [seed] * len(batch)),
                                      num_images_per_prompt=num_samples,
                                      generator=candidate_generators(seed, len(batch), num_samples),
                                      output_type="np", **schedule_kwargs(steps, timesteps, strength=strength)).images
        return [[Result(rgb, loaded.alpha, loaded.bits, False, loaded.icc_profile) for rgb in candidates]
                for loaded, candidates in zip(batch, split_candidates(out, len(batch)))]

    return edit
