"""The tasks of ``cmedit eval``: inputs, masks and classical baselines, and the scoring of a method.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
from skimage.measure import block_reduce

from .features import FeatureNet, kernel_distance
from .masks import box_mask, stroke_mask
from .metrics import block_errors, colourfulness, pooled_psnr, ssim

TASKS = ("inpaint_box", "inpaint_stroke", "colorize", "sr4")
# Restoration of real degradations at one or more noise levels (cmedit.evaluation.degradation_tasks).
DEGRADATION_TASKS = ("sr4-bicubic", "deblur-gauss", "deblur-motion")
SR_FACTOR = 4
INPAINT_RADIUS = 3


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
