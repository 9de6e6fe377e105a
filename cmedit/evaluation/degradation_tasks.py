"""Restoration tasks for ``cmedit eval``: real degradations with noisy measurements, and classical baselines.

Each task is a linear operator ``A`` (``cmedit.core.degradations``) applied to the held-out images,
plus Gaussian noise of standard deviation ``noise_level`` in ``[0, 1]`` pixel units (one seeded draw per
image), clipped to ``[0, 1]`` and kept in float (not quantised):

- ``sr4-bicubic``: PIL's antialiased bicubic shrink by 4;
- ``deblur-gauss``: a Gaussian blur of ``GAUSS_SIGMA`` pixels (``scipy.ndimage.convolve``, reflect);
- ``deblur-motion``: a straight motion blur of ``MOTION_LENGTH`` pixels at ``MOTION_ANGLE`` degrees.

Baselines from the ecosystem: bicubic upsampling (PIL) for super-resolution; scikit-image's
``wiener`` (its ``balance`` the best of ``WIENER_BALANCES`` on the set, an oracle choice that favours the
baseline), ``unsupervised_wiener`` and ``richardson_lucy`` (iterations the best of ``RL_ITERATIONS``, also
oracle) for deblurring, each on the measurement mirrored at its edges; and the pseudo-inverse ``A^+ y`` itself (regularised, ``eta = ZETA (2 sigma_y g)^2``,
``g`` the operator's ``noise_gain``) for all.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch

from ..core.degradations import Downsample, GaussianBlur, MotionBlur
from ..core.linear import LinearOperator
from ..core.noise import noise_eta

GAUSS_SIGMA = 1.5
MOTION_LENGTH, MOTION_ANGLE = 7, 30
DEGRADATION_TASKS = ("sr4-bicubic", "deblur-gauss", "deblur-motion")
WIENER_BALANCES = (0.003, 0.01, 0.03, 0.1, 0.3)
RL_ITERATIONS = (5, 15, 40)


@functools.lru_cache(maxsize=None)
def task_operator(name: str) -> LinearOperator:
    """The degradation ``A`` of task ``name`` (one per task: its SVDs are cached per image size)."""
    if name == "sr4-bicubic":
        return Downsample(4, "bicubic")
    if name == "deblur-gauss":
        return GaussianBlur(GAUSS_SIGMA)
    if name == "deblur-motion":
        return MotionBlur(MOTION_LENGTH, MOTION_ANGLE)
    raise ValueError(f"unknown task {name!r}; choose from {', '.join(DEGRADATION_TASKS)}")


def degrade(name: str, images: Sequence[np.ndarray], noise_level: float, seed: int = 0) -> list[np.ndarray]:
    """Measurements ``A x + n`` of uint8 ``(H, W, 3)`` images, float32 ``(h, w, 3)`` in ``[0, 1]``."""
    operator = task_operator(name)
    x = torch.from_numpy(np.stack(images).astype(np.float64) / 255).permute(0, 3, 1, 2)
    y = operator.A(x).permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(seed)
    noisy = y + noise_level * rng.standard_normal(y.shape)
    return [np.clip(m, 0, 1).astype(np.float32) for m in noisy]


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def pseudo_inverse(name: str, measurement: np.ndarray, noise_level: float) -> np.ndarray:
    """``A^+_eta y`` of one ``(h, w, 3)`` measurement in ``[0, 1]`` (on ``[-1, 1]``, as cmedit samples)."""
    operator = task_operator(name)
    y = torch.from_numpy(measurement.astype(np.float64) * 2 - 1).permute(2, 0, 1)[None]
    x = operator.pinv(y, noise_eta(noise_level * operator.noise_gain))
    return to_uint8((x[0].permute(1, 2, 0).numpy() + 1) / 2)


def _per_channel(function: Callable[[np.ndarray], np.ndarray], image: np.ndarray, pad: int = 0) -> np.ndarray:
    """``function`` on each channel; ``pad``: mirrored first (as the blur's boundary) and cropped after.

    skimage's deconvolutions assume periodic (``wiener``) or zero (``richardson_lucy``) boundaries;
    mirroring the measurement spares them the boundary error.
    """
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    out = np.stack([function(image[..., c]) for c in range(image.shape[-1])], axis=-1)
    return out[pad:out.shape[0] - pad, pad:out.shape[1] - pad] if pad else out


def baselines(name: str, measurements: list[np.ndarray], noise_level: float,
              truths: list[np.ndarray]) -> dict[str, Callable[[], list[np.ndarray]]]:
    """Method name -> a function giving its uint8 outputs for all ``measurements``.

    ``truths`` are used only to pick the oracle parameter of ``wiener`` and ``richardson_lucy``.
    """
    from PIL import Image
    from skimage.restoration import richardson_lucy, unsupervised_wiener, wiener

    height, width = truths[0].shape[:2]
    methods: dict[str, Callable[[], list[np.ndarray]]] = {
        "pseudo_inverse": lambda: [pseudo_inverse(name, m, noise_level) for m in measurements]}
    if name.startswith("sr"):
        methods["bicubic"] = lambda: [
            to_uint8(_per_channel(lambda c: np.asarray(Image.fromarray(c, mode="F").resize(
                (width, height), Image.Resampling.BICUBIC)), m)) for m in measurements]
        return methods
    psf = task_operator(name).kernel
    pad = max(psf.shape)

    def best(outputs_for: Callable[[object], list[np.ndarray]], grid) -> list[np.ndarray]:
        candidates = [outputs_for(p) for p in grid]
        errors = [np.mean([np.mean((o.astype(float) - t) ** 2) for o, t in zip(out, truths)]) for out in candidates]
        return candidates[int(np.argmin(errors))]

    methods["wiener"] = lambda: best(lambda balance: [
        to_uint8(_per_channel(lambda c: wiener(c.astype(np.float64), psf, balance, clip=False), m, pad))
        for m in measurements], WIENER_BALANCES)
    methods["unsupervised_wiener"] = lambda: [
        to_uint8(_per_channel(lambda c: unsupervised_wiener(c.astype(np.float64), psf, clip=False,
                                                            rng=0)[0], m, pad)) for m in measurements]
    methods["richardson_lucy"] = lambda: best(lambda iterations: [
        to_uint8(_per_channel(lambda c: richardson_lucy(c.astype(np.float64), psf, num_iter=iterations,
                                                        clip=False), m, pad)) for m in measurements], RL_ITERATIONS)
    return methods


def run_cmedit(pipe, name: str, measurements: list[np.ndarray], noise_level: float, seed: int,
               batch_size: int, schedule: dict) -> list[np.ndarray]:
    """cmedit's uint8 restorations of ``measurements`` (``pipe.edit`` with the task's operator)."""
    operator = task_operator(name)
    outputs = []
    for start in range(0, len(measurements), batch_size):
        batch = measurements[start:start + batch_size]
        result = pipe.edit(batch, operator, noise_level=noise_level, generator=torch.Generator().manual_seed(seed),
                           output_type="np", **schedule)
        outputs += [to_uint8(image) for image in result.images]
    return outputs


def evaluate_task(pipe, images: list[np.ndarray], name: str, noise_level: float, seeds: Sequence[int],
                  batch_size: int, schedule: dict, features=None, report: Callable[[str], None] = lambda m: None,
                  measurement_seed: int = 0) -> dict:
    """Per method, the runs' metrics (``cmedit.evaluation.tasks.score``) of one task at one noise level.

    Returns ``{"methods": {method: [metrics per run]}}``; cmedit runs once per seed (with NFE and
    seconds per image), each baseline once. The measurements' noise is drawn with ``measurement_seed``.
    """
    import time

    from .runner import counting_forwards
    from .tasks import TaskData, score

    measurements = degrade(name, images, noise_level, measurement_seed)
    task = TaskData(name, [to_uint8(m) for m in measurements], None, {})
    methods: dict[str, list[dict[str, float]]] = {"cmedit": []}
    for seed in seeds:
        report(f"{name} (noise {noise_level:g}): cmedit, seed {seed}")
        with counting_forwards(pipe.unet) as counter:
            start = time.perf_counter()
            outputs = run_cmedit(pipe, name, measurements, noise_level, seed, batch_size, schedule)
            seconds = time.perf_counter() - start
        methods["cmedit"].append({**score(task, images, outputs, "cmedit", features),
                                  "nfe": counter.rows / len(images), "seconds_per_image": seconds / len(images)})
    for method, run in baselines(name, measurements, noise_level, images).items():
        report(f"{name} (noise {noise_level:g}): {method}")
        start = time.perf_counter()
        outputs = run()
        seconds = time.perf_counter() - start
        methods[method] = [{**score(task, images, outputs, method, features), "nfe": 0.0,
                            "seconds_per_image": seconds / len(images)}]
    return {"methods": methods}
