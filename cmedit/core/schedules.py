"""Sigma schedules of an edit or a generation: checks, defaults, ``strength`` and a model's own file.

A schedule is either ``num_inference_steps`` equally spaced indices or explicit ``timesteps``:
descending indices into the Karras grid of ``num_train_timesteps`` points, as diffusers'
``CMStochasticIterativeScheduler.set_timesteps`` and the original ``--ts`` flag take them
(docs/design.md, section 2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .arguments import check_int

DEFAULT_EDIT_STEPS = 4
# A model folder may recommend its own schedules in this file, each key optional:
# {"edit_timesteps": [26, 22, 18, 14], "generate_timesteps": [14, 0]}.
EDIT_CONFIG_NAME = "cmedit.json"
SCHEDULE_KEYS = ("edit_timesteps", "generate_timesteps")


def check_schedule(num_train_timesteps: int, num_inference_steps: int | None, timesteps: list[int] | None) -> None:
    """Raise ``ValueError``/``TypeError`` unless the schedule fits a grid of ``num_train_timesteps`` levels."""
    if timesteps is not None:
        if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__iter__"):
            raise TypeError(f"timesteps must be a list of integers, got {timesteps!r}")
        timesteps = list(timesteps)
        if not timesteps or any(isinstance(t, bool) or not isinstance(t, (int, float)) or int(t) != t
                                for t in timesteps):
            raise ValueError(f"timesteps must be a non-empty list of integers, got {timesteps}")
        if any(b >= a for a, b in zip(timesteps, timesteps[1:])):
            raise ValueError(f"timesteps must be strictly descending, got {timesteps}")
        if timesteps[0] >= num_train_timesteps or timesteps[-1] < 0:
            raise ValueError(f"timesteps must lie in [0, {num_train_timesteps - 1}] for this model, got {timesteps}")
        return
    if num_inference_steps is None:
        raise ValueError("give num_inference_steps or timesteps")
    check_int("num_inference_steps", num_inference_steps, low=1)
    if num_inference_steps > num_train_timesteps:
        raise ValueError(f"num_inference_steps must be between 1 and {num_train_timesteps}, got {num_inference_steps}")


def strength_timesteps(num_train_timesteps: int, num_inference_steps: int, strength: float) -> list[int]:
    """Descending grid indices for ``num_inference_steps`` steps that start at ``strength`` of the noise grid.

    The first step is at index ``round((1 - strength) * (num_train_timesteps - 1))`` (index 0 is
    ``sigma_max``, the last index ``sigma_min``); the steps are spaced as diffusers'
    ``CMStochasticIterativeScheduler.set_timesteps`` spaces them over the whole grid, so
    ``strength=1`` gives exactly its schedule (docs/design.md, section 7).
    """
    check_strength(strength)
    start = round((1 - strength) * (num_train_timesteps - 1))
    step = (num_train_timesteps - start) // num_inference_steps
    if step < 1:
        raise ValueError(f"strength {strength} leaves {num_train_timesteps - start} of the model's "
                         f"{num_train_timesteps} noise levels, fewer than {num_inference_steps} steps: raise the "
                         "strength or lower the steps")
    return [start + n * step for n in reversed(range(num_inference_steps))]


def check_strength(strength: float) -> None:
    """``strength`` must be a number in ``(0, 1]`` (NaN refused)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(f"strength must be a number in (0, 1], got {strength!r}")
    if not 0 < strength <= 1 or math.isnan(strength):
        raise ValueError(f"strength must be in (0, 1], got {strength}")


def edit_schedule(num_train_timesteps: int, num_inference_steps: int | None, timesteps: list[int] | None,
                  strength: float = 1.0, own_timesteps: list[int] | None = None
                  ) -> tuple[int | None, list[int] | None]:
    """An edit's checked ``(num_inference_steps, timesteps)``.

    Without a schedule: the model's own ``own_timesteps`` (its ``cmedit.json``), else
    ``DEFAULT_EDIT_STEPS`` equally spaced steps. ``strength < 1`` turns the steps into timesteps
    that start part-way down the grid (:func:`strength_timesteps`).
    """
    check_strength(strength)
    if strength != 1:
        if timesteps is not None:
            raise ValueError("give strength or timesteps, not both (strength sets where the timesteps start)")
        steps = DEFAULT_EDIT_STEPS if num_inference_steps is None else num_inference_steps
        check_schedule(num_train_timesteps, steps, None)
        return None, strength_timesteps(num_train_timesteps, steps, strength)
    if num_inference_steps is None and timesteps is None:
        if own_timesteps is None:
            num_inference_steps = DEFAULT_EDIT_STEPS
        else:
            timesteps = list(own_timesteps)
    check_schedule(num_train_timesteps, num_inference_steps, timesteps)
    return num_inference_steps, None if timesteps is None else [int(t) for t in timesteps]


def set_timesteps(scheduler, num_inference_steps: int | None, timesteps: list[int] | None, device) -> None:
    """``scheduler.set_timesteps`` with whichever of the two the schedule is given by."""
    if timesteps is not None:
        scheduler.set_timesteps(timesteps=list(timesteps), device=device)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)


def read_schedule_file(folder: str | Path, num_train_timesteps: int) -> dict[str, list[int]]:
    """The schedules that ``folder/cmedit.json`` recommends (``{}`` without the file).

    Each key of :data:`SCHEDULE_KEYS` is optional; each is checked against the model's noise grid,
    and anything else in the file is refused, with ``ValueError`` naming the file.
    """
    path = Path(folder) / EDIT_CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict) or not config or set(config) - set(SCHEDULE_KEYS):
            raise ValueError(f"expected an object with some of {', '.join(SCHEDULE_KEYS)}")
        for key, timesteps in config.items():
            if not isinstance(timesteps, list):
                raise TypeError(f"{key} must be a list of integers, got {timesteps!r}")
            check_schedule(num_train_timesteps, None, timesteps)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a valid schedule file ({error})") from None
    return {key: [int(t) for t in value] for key, value in config.items()}


def grid_sigmas(config) -> list[float]:
    """The Karras grid of a ``CMStochasticIterativeScheduler`` config, index 0 (``sigma_max``) to the last
    (``sigma_min``): ``(sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` (docs/design.md,
    section 2), the levels that ``set_timesteps(timesteps=...)`` indexes."""
    count, rho = int(config.num_train_timesteps), float(config.rho)
    top, bottom = config.sigma_max ** (1 / rho), config.sigma_min ** (1 / rho)
    return [(top + i / (count - 1) * (bottom - top)) ** rho for i in range(count)]


def sigma_timesteps(config, num_inference_steps: int, sigma_start: float, sigma_end: float) -> list[int]:
    """Timesteps for ``num_inference_steps`` noise levels spaced geometrically from ``sigma_start`` down to
    ``sigma_end``, each the grid level nearest to it (in ``log sigma``), all distinct.

    A restoration's default schedule (docs/design.md, section 12): given in noise levels, not grid
    indices, so that it means the same on any model's grid. Where two levels would share a grid level
    the later ones move one level further down (refused if the grid runs out).
    """
    check_int("num_inference_steps", num_inference_steps, low=1)
    if not 0 < sigma_end <= sigma_start:
        raise ValueError(f"expected 0 < sigma_end <= sigma_start, got {sigma_start}, {sigma_end}")
    logs = [math.log(s) for s in grid_sigmas(config)]
    if num_inference_steps == 1:
        targets = [math.log(sigma_start)]
    else:
        span = math.log(sigma_end) - math.log(sigma_start)
        targets = [math.log(sigma_start) + span * n / (num_inference_steps - 1) for n in range(num_inference_steps)]
    indices: list[int] = []
    for target in targets:
        index = min(range(len(logs)), key=lambda i: abs(logs[i] - target))
        if indices and index <= indices[-1]:
            index = indices[-1] + 1
        if index >= len(logs):
            raise ValueError(f"{num_inference_steps} steps from sigma {sigma_start:g} to {sigma_end:g} need more "
                             f"levels than the model's grid of {len(logs)} has there: take fewer steps")
        indices.append(index)
    return indices[::-1]
