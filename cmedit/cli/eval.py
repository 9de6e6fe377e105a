"""``cmedit eval``: edit quality on held-out images against classical baselines (``cmedit.evaluation``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .files import expand_inputs
from .options import DTYPES, check_strength, load_model, parse_timesteps, strength_option, user_errors

# The names of cmedit.evaluation.runner.TASKS, repeated here so that `cmedit eval --help` imports no torch
# (tests/test_evaluation.py checks that the two agree).
TASK_NAMES = ("inpaint_box", "inpaint_stroke", "colorize", "sr4")
# Restoration of real degradations, measured at each --noise-level (not run by default).
DEGRADATION_TASK_NAMES = ("sr4-bicubic", "deblur-gauss", "deblur-motion")


def parse_noise_levels(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    """``"0,0.025,0.05"`` -> ``[0.0, 0.025, 0.05]``, each in ``[0, 1]``."""
    try:
        levels = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 0,0.025,0.05, got {value!r}") from None
    if not levels or any(not 0 <= level <= 1 for level in levels):
        raise click.BadParameter(f"noise levels must lie in [0, 1] (pixel units), got {value!r}")
    return levels


def parse_seeds(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``."""
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 0,1,2, got {value!r}") from None
    if not seeds:
        raise click.BadParameter("give at least one seed")
    return seeds


def parse_tasks(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    """``"inpaint_box,sr4"`` -> ``["inpaint_box", "sr4"]``, each one of :data:`TASK_NAMES`."""
    tasks = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [task for task in tasks if task not in TASK_NAMES + DEGRADATION_TASK_NAMES]
    if unknown or not tasks:
        raise click.BadParameter(f"unknown task {', '.join(unknown) or '(none)'}; "
                                 f"choose from {', '.join(TASK_NAMES + DEGRADATION_TASK_NAMES)}")
    return tasks


def image_paths(sources: tuple[str, ...]) -> list[Path]:
    """The image files of folders (their files with an image extension, sorted by name), files and globs."""
    from ..io.files import FORMATS

    paths: list[Path] = []
    for source in sources:
        if Path(source).is_dir():
            found = sorted(p for p in Path(source).iterdir() if p.is_file() and p.suffix.lower() in FORMATS)
            if not found:
                raise click.ClickException(f"{source}: no image files in this folder")
            paths += found
        else:
            paths += expand_inputs([source])
    return paths


@click.command(epilog="""\b
Examples:
  cmedit eval samples/heldout --timesteps 22,0 --seeds 0,1 --limit 16 --json eval.json
  cmedit eval samples/heldout --steps 1 --limit 16 --tasks inpaint_box,sr4
  cmedit eval samples/heldout --steps 8 --strength 0.6 --limit 16 --seeds 0 --tasks colorize,sr4
  cmedit eval samples/heldout --tasks deblur-gauss --noise-level 0,0.025 --limit 8 --seeds 0
  cmedit eval 'samples/heldout/1f1e*.png' --model cmedit/default_model --seeds 0 --tasks colorize
""")
@click.argument("sources", nargs=-1, required=True, metavar="FOLDER|IMAGE...")
@click.option("--model", "-m", metavar="PATH|NAME|ID", default=None,
              help="Consistency model, as for the other commands (a diffusers folder, a .pt checkpoint, a released "
                   "model's name or a hub id). Default: the embedded model.")
@click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Number of equally spaced sampling steps (default: as the edit commands).")
@click.option("--timesteps", callback=parse_timesteps, metavar="T1,T2,...",
              help="Explicit descending indices into the model's noise grid, e.g. 22,0 (overrides --steps; "
                   "default for a released model: the paper's 2-step choice; else as the edit commands).")
@strength_option(1.0, "Below 1, cmedit's steps start part-way down the model's noise grid (this fraction of it) "
                      "from its input plus noise, as the edit commands' --strength (takes --steps, not "
                      "--timesteps). The input is every method's: for inpainting, the image with the masked "
                      "pixels zeroed.")
@click.option("--seeds", callback=parse_seeds, default="0,1,2", show_default=True, metavar="S1,S2,...",
              help="One cmedit run per seed; the table gives the mean and standard deviation over them.")
@click.option("--tasks", callback=parse_tasks, default=",".join(TASK_NAMES), show_default=True, metavar="T1,T2,...",
              help="Tasks to evaluate; also sr4-bicubic, deblur-gauss, deblur-motion (real degradations, at "
                   "each --noise-level).")
@click.option("--noise-level", "noise_levels", callback=parse_noise_levels, default="0", show_default=True,
              metavar="S1,S2,...", help="Noise levels of the degradation tasks (standard deviation in [0, 1] "
                                        "pixel units), each measured separately.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Evaluate only the first N images (in file-name order).  [default: all]")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per forward pass.")
@click.option("--mask-seed", type=int, default=0, show_default=True, help="Seed of the free-form stroke masks.")
@click.option("--features", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              metavar="FOLDER",
              help="A feature network of the images' domain (scripts/sample_quality.py train; for emoji "
                   "checkpoints/twemoji32_features): adds KID x1000, how far each method's outputs are from the "
                   "originals as a set in its features (plausible, not exact).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH",
              help="Also write the results as JSON: configuration, versions and every seed's values.")
@click.option("--overwrite", is_flag=True, help="Replace the JSON file if it exists.")
@click.option("--device", default="auto", show_default=True,
              help="torch device: cpu, cuda, cuda:1, mps, or auto (cuda when available).")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
              help="Weights' precision; auto is float16 on cuda and float32 elsewhere.")
@click.option("--quiet", "-q", is_flag=True, help="No progress messages on stderr.")
def eval(sources, model, steps, timesteps, strength, seeds, tasks, noise_levels, limit, batch_size, mask_seed, features,  # noqa: A001
         json_path, overwrite, device, dtype, quiet) -> None:
    """Measure edit quality on held-out images (all of one size) and print a markdown table.

    For each task cmedit is compared with classical baselines: inpainting of a centre box and of
    free-form strokes (PSNR and SSIM over the masked pixels) against OpenCV's Telea and Navier-Stokes
    inpainting; colorization (PSNR, SSIM, colourfulness) against the grey image, with the ground
    truth's colourfulness for reference; 4x super-resolution of the block-mean image (PSNR, SSIM, and
    how far the output's block means are from the input, in 8-bit levels) against bicubic and nearest
    upsampling. Also the network evaluations (NFE) and seconds per image, and with --features the
    kernel distance (KID) of each method's outputs from the originals. Metrics from scikit-image,
    baselines from OpenCV; details in cmedit/evaluation/ (tasks.py, metrics.py). Transparent pixels
    are composited on white.
    """
    from ..models.presets import preset_for

    check_strength(strength, timesteps)
    if json_path is not None and json_path.exists() and not overwrite:
        raise click.ClickException(f"{json_path}: already exists (pass --overwrite to replace it)")
    if json_path is not None:
        folder = json_path.absolute().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise click.ClickException(f"{json_path}: cannot create folder {folder} ({error.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise click.ClickException(f"{json_path}: folder {folder} is not writable")
    paths = image_paths(sources)[:limit]
    try:
        from ..evaluation.report import format_table, to_json
        from ..evaluation.runner import evaluate
        if features is not None:
            import torchmetrics  # noqa: F401  (needed by the KID column)
    except ModuleNotFoundError as error:
        raise click.ClickException(f"cmedit eval needs {error.name}: pip install 'cmedit[eval]'") from None
    from ..evaluation.features import load_feature_net
    from ..io.files import encode, read_image

    with user_errors():
        images = [encode(read_image(path).on_white(), None, 8, False, "PNG") for path in paths]
    for path, image in zip(paths, images):
        if image.shape != images[0].shape:
            raise click.ClickException(f"{path}: {image.shape[1]}x{image.shape[0]}, but {paths[0]} is "
                                       f"{images[0].shape[1]}x{images[0].shape[0]}; all images must have one size")
    preset = preset_for(model)
    if preset is not None and steps is None and timesteps is None and strength == 1:
        timesteps = list(preset.timesteps)
    with user_errors():
        feature_net = None if features is None else load_feature_net(features)
        pipe = load_model(model, device, dtype, quiet=True)
        progress = None if quiet else (lambda message: click.echo(message, err=True))
        results = evaluate(pipe, images, seeds=seeds, num_inference_steps=steps, timesteps=timesteps,
                           strength=strength, tasks=tasks, batch_size=batch_size, mask_seed=mask_seed,
                           features=feature_net, progress=progress, noise_levels=noise_levels)
    results["config"]["model"] = model if model is not None else "embedded default model"
    results["config"]["images"] = [str(path) for path in paths]
    click.echo(format_table(results), nl=False)
    if json_path is not None:
        write_text_atomically(json_path, to_json(results))
        if not quiet:
            click.echo(f"wrote {json_path}", err=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (``cmedit.io.files.write_file_atomically``)."""
    from ..io.files import write_file_atomically

    try:
        write_file_atomically(path, lambda tmp: tmp.write_text(text))
    except OSError as error:
        raise click.ClickException(f"{path}: cannot write ({error.strerror or error})") from None
