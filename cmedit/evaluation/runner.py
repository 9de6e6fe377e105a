"""Edit quality on held-out images: cmedit against classical baselines (``cmedit eval``).

Images are ``(H, W, 3)`` uint8 arrays, all of one size; every metric is computed on 8-bit values
(``data_range=255``), the pipeline's outputs rounded to 8 bits as ``cmedit`` writes them.

Tasks and methods:

- ``inpaint_box``, ``inpaint_stroke``: fill a centre box (a quarter of the area) or free-form
  strokes (``cmedit.evaluation.masks``); every method gets the image with the masked pixels zeroed.
  Baselines: ``cv2.inpaint`` with ``INPAINT_TELEA`` (Telea 2004) and ``INPAINT_NS`` (Bertalmio et al.
  2001, Navier-Stokes), radius 3. PSNR and SSIM over the masked pixels only.
- ``colorize``: colour the grey image (``cv2.COLOR_RGB2GRAY``, BT.601, replicated to RGB). Baseline:
  the grey image itself; reference: the ground truth's colourfulness. PSNR, SSIM, colourfulness.
- ``sr4``: 4x super-resolution of the 4x smaller image of block means (``skimage.measure.block_reduce``,
  rounded to 8 bits). Baselines: ``cv2.resize`` with ``INTER_CUBIC`` and ``INTER_NEAREST``. PSNR, SSIM,
  and the known-pixel consistency error: ``|block mean of the output - input pixel|`` in 8-bit levels,
  its maximum and mean over all blocks of all images.

Metrics (PSNR and SSIM from ``skimage.metrics``, not re-implemented here):

- PSNR: ``peak_signal_noise_ratio`` of all evaluated pixels of all images together, i.e. from the MSE
  pooled over the set. A per-image mean would be infinite as soon as one image is reproduced exactly
  (a greyscale image under the grey baseline); the pooled PSNR is infinite only if every image is.
- SSIM: ``structural_similarity(..., channel_axis=2, full=True)`` per image. Inpainting: the mean of the
  SSIM map over the masked pixels (the 7x7 windows near the mask's edge also see kept pixels);
  whole-image tasks: skimage's mean SSIM. Then the mean over images.
- Colourfulness: Hasler & Suesstrunk 2003 (:func:`colourfulness`), the mean over images.
- KID x1000 (only with ``features``, a :class:`cmedit.evaluation.features.FeatureNet` of the images'
  domain): the kernel distance between a method's outputs and the original images in that network's
  features, over the whole set (:func:`cmedit.evaluation.features.kernel_distance`, one subset of all
  images). Small when the outputs look like the originals as a set, whatever their pixel errors:
  a plausible but different colour costs PSNR, not KID; a grey or blurred image costs both. Each
  output is paired with its own original, so near-copies score below 0; compare methods, not with 0.
- NFE: network evaluations per image, counted with a forward pre-hook on ``pipe.unet`` (the rows of
  every batch that passes through it, divided by the number of images).
- Seconds per image: wall time of the method's calls over the set, divided by the number of images
  (cmedit runs ``batch_size`` images per call; the baselines one at a time).

An untimed warm-up call on one image comes first, so the first seed's time carries no start-up
cost. cmedit runs once per seed (each image sampled with a generator seeded with that seed, as ``cmedit
inpaint --seed S`` does for each file); mean and sample standard deviation over seeds. The baselines
are deterministic and run once (standard deviation 0).
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from skimage.measure import block_reduce
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .masks import box_mask, stroke_mask
from ..io.files import encode
from ..pipeline import ConsistencyEditPipeline
from .features import FeatureNet, kernel_distance

TASKS = ("inpaint_box", "inpaint_stroke", "colorize", "sr4")
# Restoration of real degradations at one or more noise levels (cmedit.evaluation.degradation_tasks).
DEGRADATION_TASKS = ("sr4-bicubic", "deblur-gauss", "deblur-motion")
SR_FACTOR = 4
INPAINT_RADIUS = 3
# Columns of the table: metric key, header, number format.
COLUMNS = (("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"), ("colourfulness", "colourfulness", "{:.1f}"),
           ("kid_x1000", "KID x1000", "{:.1f}"), ("block_error_max", "block err. max", "{:.2f}"),
           ("block_error_mean", "block err. mean", "{:.3f}"),
           ("nfe", "NFE", "{:.0f}"), ("seconds_per_image", "s / image", "{:.4f}"))


def colourfulness(image: np.ndarray) -> float:
    """Colourfulness ``M`` of an ``(H, W, 3)`` RGB image in 8-bit levels (0 for a grey image).

    Hasler & Suesstrunk 2003, *Measuring colourfulness in natural images* (their recommended metric M^(3)):
    ``rg = R - G``, ``yb = (R + G) / 2 - B``, ``M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)``.
    No library ships it, hence these lines.
    """
    r, g, b = (image[..., c].astype(np.float64) for c in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def pooled_psnr(truths: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                masks: Sequence[np.ndarray] | None = None) -> float:
    """skimage's PSNR of the pixels of all images together (``masks``: ``(H, W)``, non-zero = evaluated).

    ``inf`` when every evaluated pixel is reproduced exactly.
    """
    masks = masks if masks is not None else [np.ones(t.shape[:2], dtype=bool) for t in truths]
    truth = np.concatenate([t[m > 0] for t, m in zip(truths, masks)])
    output = np.concatenate([o[m > 0] for o, m in zip(outputs, masks)])
    if np.array_equal(truth, output):
        return math.inf  # skimage divides by the zero MSE (with a warning) to the same result
    return float(peak_signal_noise_ratio(truth, output, data_range=255))


def ssim(truth: np.ndarray, output: np.ndarray, mask: np.ndarray | None = None) -> float:
    """skimage's SSIM of two ``(H, W, 3)`` uint8 images; with ``mask``, the SSIM map's mean over its non-zero pixels.

    (skimage's own mean leaves out a border of half the window; the map is defined up to the edge.)
    """
    mean, ssim_map = structural_similarity(truth, output, channel_axis=2, data_range=255, full=True)
    return float(mean) if mask is None else float(ssim_map[mask > 0].mean())


def block_errors(outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray], factor: int) -> tuple[float, float]:
    """Max and mean of ``|block mean of output - input pixel|`` over all ``factor x factor`` blocks, in levels."""
    errors = np.concatenate([
        np.abs(block_reduce(out.astype(np.float64), (factor, factor, 1), np.mean) - low).ravel()
        for out, low in zip(outputs, inputs)])
    return float(errors.max()), float(errors.mean())


@dataclass
class TaskData:
    """One task on one image set: what every method receives, and the pixels the metrics look at."""

    name: str
    inputs: list[np.ndarray]                       # the damaged / grey / small images, uint8
    masks: list[np.ndarray] | None                 # inpainting: (H, W) uint8, 255 = generate
    baselines: dict[str, Callable[[int], np.ndarray]]  # name -> output for image i


def prepare_task(name: str, images: list[np.ndarray], mask_seed: int = 0) -> TaskData:
    """The inputs, masks and baselines of task ``name`` (one of :data:`TASKS`) for ``images``."""
    height, width = images[0].shape[:2]
    if name in ("inpaint_box", "inpaint_stroke"):
        masks = [box_mask(height, width) if name == "inpaint_box" else stroke_mask(height, width, i, mask_seed)
                 for i in range(len(images))]
        inputs = [np.where(mask[..., None] > 0, 0, image).astype(np.uint8) for image, mask in zip(images, masks)]
        baselines = {
            "telea": lambda i: cv2.inpaint(inputs[i], masks[i], INPAINT_RADIUS, cv2.INPAINT_TELEA),
            "navier_stokes": lambda i: cv2.inpaint(inputs[i], masks[i], INPAINT_RADIUS, cv2.INPAINT_NS),
        }
        return TaskData(name, inputs, masks, baselines)
    if name == "colorize":
        inputs = [cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) for image in images]
        return TaskData(name, inputs, None, {"grey": lambda i: inputs[i], "ground_truth": lambda i: images[i]})
    if name == "sr4":
        block = (SR_FACTOR, SR_FACTOR, 1)
        inputs = [np.round(block_reduce(image.astype(np.float64), block, np.mean)).astype(np.uint8)
                  for image in images]
        baselines = {
            "bicubic": lambda i: cv2.resize(inputs[i], (width, height), interpolation=cv2.INTER_CUBIC),
            "nearest": lambda i: cv2.resize(inputs[i], (width, height), interpolation=cv2.INTER_NEAREST),
        }
        return TaskData(name, inputs, None, baselines)
    raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")


def score(task: TaskData, truths: list[np.ndarray], outputs: list[np.ndarray], method: str,
          features: FeatureNet | None = None) -> dict[str, float]:
    """The quality metrics of one method's ``outputs`` on ``task`` (module docstring)."""
    if method == "ground_truth":  # the colourfulness reference: its PSNR, SSIM and KID say nothing
        return {"colourfulness": float(np.mean([colourfulness(out) for out in outputs]))}
    masks = task.masks or [None] * len(truths)
    scores = {"psnr": pooled_psnr(truths, outputs, task.masks),
              "ssim": float(np.mean([ssim(t, o, m) for t, o, m in zip(truths, outputs, masks)]))}
    if features is not None:
        kid, _ = kernel_distance(features, np.stack(truths), np.stack(outputs), subset_size=len(truths), subsets=1)
        scores["kid_x1000"] = 1000 * kid
    if task.name == "colorize":
        scores["colourfulness"] = float(np.mean([colourfulness(out) for out in outputs]))
    if task.name == "sr4":
        scores["block_error_max"], scores["block_error_mean"] = block_errors(outputs, task.inputs, SR_FACTOR)
    return scores


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


def check_images(images: Sequence[np.ndarray], tasks: Sequence[str]) -> list[np.ndarray]:
    """``images`` as a list of ``(H, W, 3)`` uint8 arrays of one size; raises ``ValueError`` otherwise."""
    images = list(images)
    if not images:
        raise ValueError("no images to evaluate")
    if not tasks:
        raise ValueError(f"give at least one task of {', '.join(TASKS)}")
    for name in tasks:
        if name not in TASKS + DEGRADATION_TASKS:
            raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS + DEGRADATION_TASKS)}")
    for image in images:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("images must be (H, W, 3) uint8 arrays")
        if image.shape != images[0].shape:
            raise ValueError(f"all images must have one size, got {images[0].shape[:2]} and {image.shape[:2]}")
    height, width = images[0].shape[:2]
    if min(height, width) < 8:
        raise ValueError(f"images must be at least 8x8 pixels (SSIM's 7x7 window), got {width}x{height}")
    if ("sr4" in tasks or "sr4-bicubic" in tasks) and (height % SR_FACTOR or width % SR_FACTOR):
        raise ValueError(f"sr4 needs sizes divisible by {SR_FACTOR}, got {width}x{height}")
    return images


def summarize(runs: list[dict[str, float]]) -> dict[str, dict]:
    """Per metric, the mean and sample standard deviation over runs (0 for one run or equal values)."""
    summary = {}
    for metric in runs[0]:
        values = [run[metric] for run in runs]
        std = 0.0 if len(set(values)) == 1 else float(np.std(values, ddof=1))
        summary[metric] = {"mean": float(np.mean(values)), "std": std, "values": values}
    return summary


def versions() -> dict[str, str]:
    """Versions of the libraries whose code computes the numbers."""
    import diffusers
    import skimage

    from .. import __version__

    return {"cmedit": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "scikit-image": skimage.__version__, "opencv": cv2.__version__, "numpy": np.__version__}


def to_json(results: dict) -> str:
    """``results`` as strict JSON; infinite and NaN values become the strings "inf", "-inf", "nan"."""

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, list):
            return [finite(item) for item in value]
        return value

    return json.dumps(finite(results), indent=2, allow_nan=False) + "\n"


def format_table(results: dict) -> str:
    """A markdown table of ``results``: ``mean ± std`` over seeds (cmedit), one value (deterministic baselines)."""
    config = results["config"]
    schedule = (f"timesteps {','.join(map(str, config['timesteps']))}" if config["timesteps"] is not None
                else f"{config['num_inference_steps']} steps")
    if config.get("strength", 1) != 1:  # files written before the key existed ran at strength 1
        schedule += f" (strength {config['strength']:g})"
    height, width = config["image_size"]
    lines = [f"{config['num_images']} images of {width}x{height}, {schedule}, seeds "
             f"{','.join(map(str, config['seeds']))}: mean ± std over seeds (baselines: one deterministic run).",
             "",
             "| task | method | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for name, entry in results["tasks"].items():
        label = name if "mask_fraction" not in entry else f"{name} ({entry['mask_fraction']:.0%} masked)"
        for method, metrics in entry["methods"].items():
            cells = []
            for key, _, fmt in COLUMNS:
                if key not in metrics:
                    cells.append("")
                    continue
                cell = fmt.format(metrics[key]["mean"])
                if len(metrics[key]["values"]) > 1 and key != "nfe":
                    cell += " ± " + fmt.format(metrics[key]["std"])
                cells.append(cell)
            lines.append(f"| {label} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
