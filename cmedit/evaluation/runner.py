"""Edit quality on held-out images: cmedit against classical baselines (``cmedit eval``).

Images are ``(H, W, 3)`` uint8 arrays, all of one size; every metric is computed on 8-bit values
(``data_range=255``), the pipeline's outputs rounded to 8 bits as ``cmedit`` writes them. The
tasks and baselines are in ``cmedit.evaluation.tasks``, the metrics in ``cmedit.evaluation.metrics``,
the table and JSON in ``cmedit.evaluation.report``; this module runs them.

An untimed warm-up call on one image comes first, so the first seed's time carries no start-up
cost. cmedit runs once per seed (each image sampled with a generator seeded with that seed, as ``cmedit
inpaint --seed S`` does for each file); mean and sample standard deviation over seeds. The baselines
are deterministic and run once (standard deviation 0).
"""
from __future__ import annotations

import contextlib
import platform
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..io.files import encode
from ..pipeline import ConsistencyEditPipeline
from .features import FeatureNet
from .metrics import block_errors, colourfulness, pooled_psnr, ssim  # noqa: F401 (the package's names)
from .report import COLUMNS, format_table, summarize, to_json, versions  # noqa: F401
from .tasks import (DEGRADATION_TASKS, INPAINT_RADIUS, SR_FACTOR, TASKS, TaskData, check_images,  # noqa: F401
                    prepare_task, score)


class ForwardCounter:
    """Counts the images (batch rows) passing through ``module.forward``, with a forward pre-hook."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        self._handle = module.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.rows += int(sample.shape[0])

    def remove(self) -> None:
        self._handle.remove()


@contextlib.contextmanager
def counting_forwards(module: torch.nn.Module) -> Iterator[ForwardCounter]:
    """A :class:`ForwardCounter` on ``module`` for the duration of the block."""
    counter = ForwardCounter(module)
    try:
        yield counter
    finally:
        counter.remove()


def run_cmedit(pipe: ConsistencyEditPipeline, task: TaskData, seed: int, batch_size: int,
               schedule: dict) -> list[np.ndarray]:
    """cmedit's uint8 outputs for every input of ``task``, ``batch_size`` images per pipeline call."""
    outputs = []
    for start in range(0, len(task.inputs), batch_size):
        batch = task.inputs[start:start + batch_size]
        kwargs = dict(generator=[torch.Generator().manual_seed(seed) for _ in batch], output_type="np", **schedule)
        if task.name.startswith("inpaint"):
            result = pipe.inpaint(batch, task.masks[start:start + batch_size], **kwargs)
        elif task.name == "colorize":
            result = pipe.colorize(batch, **kwargs)
        else:
            result = pipe.super_resolve(batch, factor=SR_FACTOR, kernel="box", **kwargs)
        outputs += list(encode(result.images, None, 8, False, "PNG"))  # 8 bits, as cmedit writes files
    return outputs


def evaluate(
    pipe: ConsistencyEditPipeline,
    images: Sequence[np.ndarray],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    num_inference_steps: int | None = None,
    timesteps: Sequence[int] | None = None,
    strength: float = 1.0,
    tasks: Sequence[str] = TASKS,
    batch_size: int = 16,
    mask_seed: int = 0,
    features: FeatureNet | None = None,
    progress: Callable[[str], None] | None = None,
    noise_levels: Sequence[float] = (0.0,),
) -> dict:
    """Measure cmedit's edits and the baselines' on ``images`` (``(H, W, 3)`` uint8, one size).

    Args:
        pipe: the pipeline to evaluate; its UNet gets a temporary forward hook (NFE).
        seeds: one cmedit run per seed; mean and spread over them.
        num_inference_steps, timesteps: cmedit's schedule, as for the pipeline's edits (default:
            the model's ``edit_timesteps``, else ``DEFAULT_EDIT_STEPS`` equally spaced steps).
        strength: as for the pipeline's edits: below 1, cmedit's steps start at that fraction of the
            noise grid from its whole input plus noise (with ``num_inference_steps``, not
            ``timesteps``). That input is the one every method gets: the grey image, the upsampled
            small one, and for inpainting the image with the masked pixels zeroed, so there the fill
            starts from black.
        tasks: a subset of :data:`TASKS`.
        batch_size: images per pipeline call.
        mask_seed: the seed of the stroke masks (``cmedit.evaluation.masks.stroke_mask``).
        features: a feature network of the images' domain and size (``cmedit.evaluation.features``);
            adds the ``kid_x1000`` metric. Needs ``torchmetrics``.
        progress: called with a short message before each run (e.g. ``click.echo``).
        noise_levels: the degradation tasks (:data:`DEGRADATION_TASKS`) run at each of these noise
            levels (``[0, 1]`` pixel units), reported as ``"<task> (noise <level>)"``.

    Returns a JSON-ready dict (:func:`to_json`): ``config`` and, per task, ``methods`` ->
    method -> metric -> ``{"mean", "std", "values"}`` (``values``: one per seed for cmedit, one for a
    baseline); inpainting tasks also give ``mask_fraction`` (the mean masked fraction).
    """
    images = check_images(images, tasks)
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("give at least one seed")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if features is not None and images[0].shape[:2] != (features.config["image_size"],) * 2:
        size = features.config["image_size"]
        raise ValueError(f"the feature network takes {size}x{size} images, these are "
                         f"{images[0].shape[1]}x{images[0].shape[0]}")
    # the edits' default, checked; with strength < 1 the timesteps it sets (the pipeline derives the same)
    num_inference_steps, timesteps = pipe.edit_schedule(num_inference_steps, timesteps, strength)
    schedule = {"num_inference_steps": None if timesteps is not None else num_inference_steps,
                "timesteps": None if timesteps is None else [int(t) for t in timesteps]}
    calls = schedule if strength == 1 else {"num_inference_steps": len(timesteps), "strength": strength}
    report = progress or (lambda message: None)
    classic = [name for name in tasks if name in TASKS]
    if classic:
        run_cmedit(pipe, prepare_task(classic[0], images[:1], mask_seed), seeds[0], 1, calls)  # untimed warm-up
    else:
        from .degradation_tasks import degrade, run_cmedit as restore_run

        restore_run(pipe, tasks[0], degrade(tasks[0], images[:1], 0.0), 0.0, seeds[0], 1, calls)
    results = {"config": {
        "num_images": len(images), "image_size": list(images[0].shape[:2]), "seeds": seeds, "tasks": list(tasks),
        **schedule, "strength": float(strength), "batch_size": batch_size, "mask_seed": mask_seed,
        "features": None if features is None else features.config, "model_resolution": pipe.resolution,
        "noise_levels": [float(level) for level in noise_levels],
        "device": str(pipe.device), "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "versions": versions(), "machine": f"{platform.machine()}, {platform.processor() or 'unknown CPU'}",
    }, "tasks": {}}
    for name in tasks:
        if name in DEGRADATION_TASKS:
            from .degradation_tasks import evaluate_task

            for level in noise_levels:
                entry = evaluate_task(pipe, images, name, float(level), seeds, batch_size, calls, features, report)
                results["tasks"][f"{name} (noise {level:g})"] = {
                    "methods": {method: summarize(runs) for method, runs in entry["methods"].items()}}
            continue
        task = prepare_task(name, images, mask_seed)
        methods: dict[str, list[dict[str, float]]] = {"cmedit": []}
        for seed in seeds:
            report(f"{name}: cmedit, seed {seed}")
            with counting_forwards(pipe.unet) as counter:
                start = time.perf_counter()
                outputs = run_cmedit(pipe, task, seed, batch_size, calls)
                seconds = time.perf_counter() - start
            methods["cmedit"].append({**score(task, images, outputs, "cmedit", features),
                                      "nfe": counter.rows / len(images), "seconds_per_image": seconds / len(images)})
        for method, baseline in task.baselines.items():
            report(f"{name}: {method}")
            start = time.perf_counter()
            outputs = [baseline(i) for i in range(len(images))]
            seconds = time.perf_counter() - start
            scores = score(task, images, outputs, method, features)
            if method != "ground_truth":
                scores.update(nfe=0.0, seconds_per_image=seconds / len(images))
            methods[method] = [scores]
        entry: dict = {"methods": {method: summarize(runs) for method, runs in methods.items()}}
        if task.masks is not None:
            entry["mask_fraction"] = float(np.mean([np.count_nonzero(m) / m.size for m in task.masks]))
        results["tasks"][name] = entry
    return results
