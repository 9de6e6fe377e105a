"""``run_manifest``: edit the rows of a manifest with a pipeline, each process its share, one summary."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .distributed import Summary, share, wait_for_everyone
from .manifest import ManifestError, ManifestRow

logger = logging.getLogger(__name__)

# task -> (pipeline method, default output suffix)
TASKS = {
    "inpaint": ("inpaint", "inpainted"),
    "colorize": ("colorize", "colorized"),
    "super-resolve": ("super_resolve", None),  # x<factor>
    "img2img": ("img2img", "img2img"),
}


def output_paths(row: ManifestRow, task: str, factor: int, num_samples: int, folder: Path) -> list[Path]:
    """Where a row's candidates go: its ``output`` (``name_0.png``, ... for several candidates), else
    ``folder/<image stem>_<task>.png`` (``_0``, ``_1``, ... for several), as the command line names them."""
    if row.output is not None:
        target = row.output
        return [target] if num_samples == 1 else [target.with_name(f"{target.stem}_{k}{target.suffix}")
                                                  for k in range(num_samples)]
    suffix = TASKS[task][1] or f"x{factor}"
    stem = f"{row.image.stem}_{suffix}"
    return [folder / f"{stem}.png"] if num_samples == 1 else [folder / f"{stem}_{k}.png" for k in range(num_samples)]


def takes_prompt(method: Callable) -> bool:
    """Whether a pipeline method names a ``prompt`` argument (the latent pipelines do; this one does not)."""
    return "prompt" in inspect.signature(method).parameters


def run_manifest(pipe, rows: Sequence[ManifestRow | ManifestError], task: str, *, output_dir: str | Path = ".",
                 seed: int = 0, factor: int = 4, strength: float | None = None, num_samples: int = 1,
                 overwrite: bool = False, quality: int = 95, max_pixels: int | None = None, keep_alpha: bool = True,
                 report: Callable[[str, str], None] | None = None, **kwargs) -> Summary:
    """Edit each row's image with ``pipe.<task>`` and write its outputs; returns the summary of all processes.

    ``rows``: from :func:`cmedit.batch.read_manifest` (its ``ManifestError`` entries count as failed).
    ``task``: ``inpaint`` (the row's ``mask``, white = fill, else the image's transparent pixels),
    ``colorize``, ``super-resolve`` (row ``factor``, else ``factor``) or ``img2img``. A row's ``seed``
    (else ``seed``) seeds candidate ``k`` with ``seed + k`` as the command line does, so a row gives
    the image ``cmedit <task> --seed S`` gives for that file. ``strength`` (row, else argument; None:
    the method's default) and ``kwargs`` (``num_inference_steps``, ``timesteps``, ``class_labels``,
    ``context``, ``feather``, ``colorize``, ``overlap``...) go to the pipeline method. A row's ``prompt``
    is passed only to a method that takes one; elsewhere it is an error for that row.

    Outputs that exist are skipped unless ``overwrite``; writes are atomic; ``keep_alpha=False`` drops
    the input's transparency. A bad row is reported (``report("error", message)``; also ``"wrote"``,
    ``"skipped"``; rows checked before the work are reported by the main process only) and the
    others go on. Under
    ``accelerate launch`` each process edits its share of the rows on its own device (``pipe`` must
    be on it) and every process gets the total summary.
    """
    from ..io.files import DEFAULT_MAX_PIXELS, OutputExistsError, check_output_path, write_image

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    report = report or (lambda kind, message: logger.info("%s %s", kind, message))
    main = _is_main()
    say = report if main else (lambda kind, message: None)  # every process checks the same rows
    summary = Summary()
    folder = Path(output_dir)
    pending: list[tuple[ManifestRow, list[Path]]] = []
    seen: dict[Path, int] = {}
    for row in rows:
        if isinstance(row, ManifestError):
            _fail(summary, say, f"row {row.number}", f"row {row.number}: {row.message}")
            continue
        paths = output_paths(row, task, row.factor or factor, num_samples, folder)
        try:
            for path in paths:
                check_output_path(path, overwrite=True)
                if path.resolve() in seen:
                    raise ValueError(f"{path}: also the output of row {seen[path.resolve()]}")
                seen[path.resolve()] = row.number
        except ValueError as error:
            _fail(summary, say, str(row.image), f"row {row.number}: {_first_line(error)}")
            continue
        existing = [path for path in paths if path.exists()]
        if existing and not overwrite:
            summary.skipped.append(str(row.image))
            say("skipped", f"{row.image}: {existing[0]} exists")
        else:
            pending.append((row, paths))
    wait_for_everyone()  # every process has seen which outputs exist before any writes
    local = summary if main else Summary()  # the rows checked above are counted once
    for row, paths in share(pending):
        try:
            results = edit_row(pipe, row, task, seed=seed, factor=factor, strength=strength,
                               num_samples=num_samples, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, **kwargs)
            lost = False
            for path, (rgb, alpha, bits, grey, icc) in zip(paths, results):
                try:
                    write_image(path, rgb, alpha if keep_alpha else None, bits=bits, grey=grey, icc_profile=icc,
                                quality=quality, overwrite=overwrite)
                except OutputExistsError:  # written meanwhile by another run: kept (docs/guarantees.md)
                    lost = True
                    report("skipped", f"{row.image}: {path} exists")
                    continue
                report("wrote", str(path))
        except ValueError as error:
            message = _first_line(error)
            if str(row.image) not in message:
                message = f"{row.image}: {message}"
            _fail(local, report, str(row.image), f"row {row.number}: {message}")
            continue
        (local.skipped if lost else local.done).append(str(row.image))
    return local.merged()


def edit_row(pipe, row: ManifestRow, task: str, *, seed: int, factor: int, strength: float | None,
             num_samples: int, max_pixels: int, **kwargs) -> list[tuple]:
    """One row's candidates as ``(rgb (H, W, 3) in [0, 1], alpha or None, bits, grey, icc profile)``."""
    import torch

    from ..io.files import read_image, read_mask
    from ..io.tensors import masks_to_tensor

    method = getattr(pipe, TASKS[task][0])
    if row.prompt is not None:
        if not takes_prompt(method):
            raise ValueError(f"a prompt was given but this pipeline's {task} takes none")
        kwargs["prompt"] = row.prompt
    if row.mask is not None and task != "inpaint":
        raise ValueError(f"a mask was given but {task} takes none")
    if row.factor is not None and task != "super-resolve":
        raise ValueError(f"a factor was given but {task} takes none")
    loaded = read_image(row.image, max_pixels)
    seed = row.seed if row.seed is not None else seed
    strength = row.strength if row.strength is not None else strength
    if strength is not None:
        kwargs["strength"] = strength
    height, width = loaded.rgb.shape[:2]
    alpha, grey = loaded.alpha, loaded.grey
    arguments: list = [loaded.rgb]
    if task == "inpaint":
        if row.mask is not None:
            mask_image = read_mask(row.mask, max_pixels)
            if mask_image.size != (width, height):
                raise ValueError(f"mask {row.mask} is {mask_image.width}x{mask_image.height} but the image is "
                                 f"{width}x{height}")
            mask = masks_to_tensor(mask_image)[0, 0].numpy() > 0.5
        elif alpha is not None:
            mask = alpha < 0.5
            alpha = np.where(mask, 1.0, alpha)  # filled holes become opaque
        else:
            raise ValueError("no mask given and the image has no alpha channel to fill")
        if not mask.any():
            raise ValueError("the mask is empty (all black): nothing to inpaint")
        arguments.append(mask)
    elif task == "super-resolve":
        kwargs["factor"] = factor = row.factor or factor
        grey = grey and not kwargs.get("colorize", False)
        if alpha is not None:  # transparency is not super-resolved, only enlarged
            alpha = np.repeat(np.repeat(alpha, factor, axis=0), factor, axis=1)
    else:
        grey = False
    # As the command line: candidate k has its own generator seeded seed + k.
    generator = [torch.Generator().manual_seed(seed + k) for k in range(num_samples)]
    out = method(*arguments, num_images_per_prompt=num_samples, generator=generator, output_type="np",
                 **kwargs).images
    return [(rgb, alpha, loaded.bits, grey, loaded.icc_profile) for rgb in out]


def _fail(summary: Summary, report, source: str, message: str) -> None:
    summary.failed.append((source, message))
    report("error", message)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _is_main() -> bool:
    from .distributed import is_main_process

    return is_main_process()
