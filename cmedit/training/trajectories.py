"""Trajectory distillation: regress the student's consistency function on a teacher's ODE solutions.

A consistency function maps every point of a probability-flow ODE trajectory to the trajectory's end
(Song et al. 2023, section 3). Given a teacher denoiser ``D``, the trajectories can be solved once, in
full, and stored: from ``x_0 = sigma_max z`` Heun steps down a Karras grid ``sigma_0 = sigma_max > ... >
sigma_{K-1} = sigma_min`` (and an Euler step to 0) give the points ``x_k`` and the end ``x_end``. The
student then learns ``f(x_k, sigma_k) ~ x_end`` directly, a regression with a fixed target (Luhman &
Luhman 2021 regress the one-step map ``sigma_max z -> x_end`` alone; here every level is kept, so the
result stays a multistep consistency model). Unlike consistency distillation, the target never comes
from the student itself, so no error of the student feeds back into its own training; the price is
that the teacher's ODE is solved for every stored trajectory up front.

Cache layout (``run_dir/trajectories/``): ``sigmas.npy`` (the grid, float32), ``source.json`` (the
teacher's name and the digest of its weights, and the seed) and ``chunk0000.npz``, ... with
``points`` (B, K, C, H, W) and ``ends`` (B, C, H, W), float16; chunk ``c`` starts from the noise of
``torch.Generator().manual_seed(seed * 1_000_000 + 100_000 + c)``. Existing chunks are kept, so an
interrupted run resumes its cache; another grid, teacher or seed is refused. The teacher is recognised
by its weights, not by its path: a moved copy is the same teacher, a folder retrained in place is not.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
from diffusers import CMStochasticIterativeScheduler, UNet2DModel
from tqdm.auto import tqdm

from ..core.sampler import consistency_function
from .consistency import Denoiser, heun_step, make_scheduler

CHUNK = 128
"""Trajectories per cache file (and per teacher batch)."""


def trajectory_sigmas(num_levels: int) -> torch.Tensor:
    """The teacher's grid: the Karras levels of a ``num_levels``-step scheduler, sigma_max first, float32."""
    return make_scheduler(num_levels).sigmas.float()


def weights_digest(module: torch.nn.Module) -> str:
    """The sha256 (hex) of a module's state: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _named(teacher: str | None, digest: str | None) -> str:
    return f"{teacher}" if digest is None else f"{teacher} (weights {digest[:12]})"


def chunk_file(cache: Path, chunk: int) -> Path:
    """Where a cache keeps its finished chunk ``chunk`` (a solve writes ``.tmp.npz`` first)."""
    return cache / f"chunk{chunk:04d}.npz"


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk``'s starting noise in a run with seed ``seed``."""
    return seed * 1_000_000 + 100_000 + chunk


@torch.no_grad()
def solve_trajectories(
    teacher: Denoiser, noise: torch.Tensor, sigmas: torch.Tensor, sigma_min: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heun steps of the teacher's probability-flow ODE from ``sigmas[0] * noise`` down ``sigmas``, then to 0.

    Returns the points at every level, ``(B, K, C, H, W)`` (``points[:, 0]`` is the start), and the end
    ``(B, C, H, W)``, clipped to [-1, 1] like the images the student is trained to produce.
    """
    x = noise * sigmas[0]
    points = []
    # every level once, as a per-sample batch of it on the noise's device (heun_step takes per-sample levels)
    levels = torch.cat([sigmas, sigmas.new_zeros(1)]).to(noise.device)[:, None].expand(-1, noise.shape[0])
    for t, r in zip(levels[:-1], levels[1:]):
        points.append(x)
        x = heun_step(teacher, x, t, r, sigma_min)
    return torch.stack(points, dim=1), x.clamp(-1, 1)


def trajectory_loss(
    unet: UNet2DModel, scheduler: CMStochasticIterativeScheduler, x_t: torch.Tensor, t: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """Pseudo-Huber distance (c = 0.00054 sqrt(dim), as the ECT loss) between ``f(x_t, t)`` and the ODE's end."""
    f_t = consistency_function(unet, scheduler, x_t, t).float()
    c = 0.00054 * math.sqrt(target[0].numel())
    return ((((f_t - target.float()) ** 2).sum(dim=(1, 2, 3)) + c**2).sqrt() - c).mean()


@torch.no_grad()
def anchor_batch(
    anchor: Denoiser, x0: torch.Tensor, levels: torch.Tensor, generator: torch.Generator,
    noise_generator: torch.Generator, start_fraction: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_t, t, target)``: images ``x0`` noised at levels drawn from ``levels``, and the anchor model there.

    Regressing the student on these keeps the anchor's behaviour at those levels (e.g. the low noise
    that edits use) while the trajectories, or a second anchor, train the others. A ``start_fraction``
    of the batch is taken at ``levels[0]`` (sigma_max for the upper levels: the one-step sampler's input),
    the rest uniformly over ``levels``.
    """
    pick = torch.randint(0, len(levels), (x0.shape[0],), generator=generator)
    if start_fraction:
        pick = torch.where(torch.rand(x0.shape[0], generator=generator) < start_fraction, 0, pick)
    t = levels[pick].to(x0.device)
    x_t = x0 + t.view(-1, 1, 1, 1) * torch.randn(x0.shape, generator=noise_generator, device=x0.device)
    return x_t, t, anchor(x_t, t).float()


class TrajectorySet:
    """A teacher's stored ODE trajectories (see the module docstring) and the training batches drawn from them."""

    def __init__(self, points: torch.Tensor, ends: torch.Tensor, sigmas: torch.Tensor):
        self.points, self.ends, self.sigmas = points, ends, sigmas

    @classmethod
    def build(
        cls,
        cache: Path,
        teacher: Denoiser,
        count: int,
        num_levels: int,
        image_shape: tuple[int, int, int],
        seed: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
        show_progress: bool = True,
        source: str | None = None,
        weights: str | None = None,
    ) -> TrajectorySet:
        """Solve (or reuse from ``cache``) ``count`` trajectories rounded up to whole chunks, and load them.

        ``autocast``: a factory of the context the teacher runs in (e.g. ``accelerator.autocast``).
        ``source``: the teacher's name (e.g. its folder) and ``weights``: its :func:`weights_digest`,
        recorded with the seed in ``source.json``. A cache of other weights or another seed is refused;
        one without ``source.json`` adopts these, and one that records no weights (older caches) is
        matched by name and then records them.
        """
        sigmas = trajectory_sigmas(num_levels)
        cache.mkdir(parents=True, exist_ok=True)
        grid_file = cache / "sigmas.npy"
        if grid_file.exists():
            stored = torch.from_numpy(np.load(grid_file))
            if stored.shape != sigmas.shape or not torch.allclose(stored, sigmas, rtol=1e-5):
                raise ValueError(f"{cache}: trajectories on another grid ({len(stored)} levels); "
                                 "use another --run-dir or the same --teacher-steps")
        else:
            np.save(grid_file, sigmas.numpy())
        source_file, made_by = cache / "source.json", {"teacher": source, "weights": weights, "seed": seed}
        stored = json.loads(source_file.read_text()) if source_file.exists() else made_by
        same = ("weights" in stored and stored["weights"] == weights
                or "weights" not in stored and stored["teacher"] == source)
        if not same or stored["seed"] != seed:
            raise ValueError(f"{cache}: trajectories of teacher {_named(stored['teacher'], stored.get('weights'))} "
                             f"with seed {stored['seed']}, not {_named(source, weights)} with seed {seed}; "
                             "use another --run-dir")
        if stored.get("weights") != weights or not source_file.exists():
            source_file.write_text(json.dumps({**stored, "weights": weights}) + "\n")
        sigma_min = make_scheduler().config.sigma_min
        chunks = math.ceil(count / CHUNK)
        todo = [c for c in range(chunks) if not chunk_file(cache, c).exists()]
        for c in tqdm(todo, desc="teacher trajectories", unit="chunk", disable=not show_progress or not todo):
            noise = torch.randn((CHUNK, *image_shape), generator=torch.Generator().manual_seed(chunk_seed(seed, c)))
            with autocast():
                points, ends = solve_trajectories(teacher, noise.to(device), sigmas, sigma_min)
            tmp = chunk_file(cache, c).with_suffix(".tmp.npz")
            np.savez(tmp, points=points.half().cpu().numpy(), ends=ends.half().cpu().numpy())
            tmp.replace(chunk_file(cache, c))
        files = [np.load(chunk_file(cache, c)) for c in range(chunks)]
        points = torch.from_numpy(np.concatenate([f["points"] for f in files]))
        ends = torch.from_numpy(np.concatenate([f["ends"] for f in files]))
        if points.shape[1:] != (num_levels, *image_shape):
            raise ValueError(f"{cache}: trajectories of shape {tuple(points.shape[1:])}, "
                             f"expected {(num_levels, *image_shape)}")
        return cls(points, ends, sigmas)

    def __len__(self) -> int:
        return self.points.shape[0]

    def batch(
        self, batch_size: int, generator: torch.Generator, start_fraction: float, min_sigma: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, t, end)`` for random trajectories at random levels, float32.

        A ``start_fraction`` of the batch is taken at sigma_max (the one-step sampler's input), the
        rest uniformly over the levels at or above ``min_sigma`` (with 0, all of them: the Karras grid
        puts most at low noise, where edits work).
        """
        usable = int((self.sigmas >= min_sigma).sum())  # the grid descends: levels 0 .. usable - 1
        if usable == 0:
            raise ValueError(f"no trajectory level at or above sigma {min_sigma:g}")
        idx = torch.randint(0, len(self), (batch_size,), generator=generator)
        level = torch.randint(0, usable, (batch_size,), generator=generator)
        at_start = torch.rand(batch_size, generator=generator) < start_fraction
        level = torch.where(at_start, torch.zeros_like(level), level)
        return self.points[idx, level].float(), self.sigmas[level], self.ends[idx].float()
