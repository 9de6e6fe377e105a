"""The arguments every edit shares, checked in one place for the library and the command line.

:class:`EditOptions` is the keyword block of ``ConsistencyEditPipeline.edit`` and its task methods
(schedule, strength, class labels, candidates, random generator): the public methods take the
keywords explicitly, build one ``EditOptions`` and hand it on, so that crops and tiles
(``cmedit.fullres``) receive the same object instead of re-declaring the keywords.
Bad values raise ``TypeError`` (wrong kind) or ``ValueError`` (out of range) naming the argument.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence, Union

import torch

ClassLabels = Union[int, Sequence[int], torch.Tensor, None]
Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def check_int(name: str, value, *, low: int | None = None) -> int:
    """``value`` as an ``int`` (``bool`` and non-integral numbers refused), at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_number(name: str, value, *, low: float | None = None) -> float:
    """``value`` as a finite ``float`` (``bool`` refused), at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or (low is not None and value < low):
        bound = "" if low is None else f" >= {low}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value}")
    return float(value)


def check_generators(generator: Generators, batch_size: int) -> None:
    """One ``torch.Generator`` for the batch, or a list of exactly one per image of the batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"generator must be a torch.Generator or a list of them, got {generator!r}")
    if len(generator) != batch_size:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch_size} images "
                         "(images x num_images_per_prompt): give one generator or one per image")


@dataclass(frozen=True)
class EditOptions:
    """How to run one edit: schedule, starting level, class labels, candidates and randomness.

    Attributes:
        num_inference_steps: equally spaced steps (``None``: the model's own schedule or the default).
        timesteps: explicit descending grid indices, instead of ``num_inference_steps``.
        strength: in ``(0, 1]``; below 1 the steps start part-way down the noise grid from the input.
        class_labels: for class-conditional models (one for all, or one per image); random if ``None``.
        num_images_per_prompt: candidates per input image (adjacent in the output).
        generator: one ``torch.Generator``, or one per output image (``images x candidates``).
        noise_level: the input's Gaussian noise in ``[0, 1]`` pixel units (``cmedit.core.noise``); 0: exact.
    """

    num_inference_steps: int | None = None
    timesteps: Sequence[int] | None = None
    strength: float = 1.0
    class_labels: ClassLabels = None
    num_images_per_prompt: int = 1
    generator: Generators = None
    noise_level: float = 0.0

    def __post_init__(self) -> None:
        from .noise import check_noise_level

        check_noise_level(self.noise_level)
        if self.num_inference_steps is not None:
            check_int("num_inference_steps", self.num_inference_steps, low=1)
        check_int("num_images_per_prompt", self.num_images_per_prompt, low=1)
        from .schedules import check_strength

        check_strength(self.strength)
        if isinstance(self.generator, (list, tuple)):
            check_generators(self.generator, len(self.generator))  # the kinds; the count in check_batch
        else:
            check_generators(self.generator, 1)

    def check_batch(self, num_images: int) -> None:
        """Check the generators against a batch of ``num_images`` inputs (before candidates)."""
        check_generators(self.generator, num_images * self.num_images_per_prompt)


def first_generator(generator: Generators) -> torch.Generator | None:
    """The generator whose seed stands for the batch (the first of a list)."""
    if isinstance(generator, (list, tuple)):
        return generator[0] if generator else None
    return generator


def draw_class_labels(num_classes: int | None, class_labels: ClassLabels, batch_size: int,
                      generator: Generators, device: torch.device | str) -> torch.Tensor | None:
    """``(batch_size,)`` labels for a class-conditional UNet (``num_classes`` set), else ``None``.

    Random labels (no ``class_labels``) come from a generator seeded with the first generator's
    ``initial_seed()``, not from the generator itself, so they do not shift the noise draws
    (docs/design.md, section 5).
    """
    if num_classes is None:
        if class_labels is not None:
            raise ValueError("this model is not class-conditional: do not pass class labels")
        return None
    if class_labels is None:
        first = first_generator(generator)
        label_generator = None if first is None else torch.Generator().manual_seed(first.initial_seed())
        labels = torch.randint(0, num_classes, (batch_size,), generator=label_generator)
    else:
        labels = torch.as_tensor(class_labels).reshape(-1)
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"class labels must be integers, got {class_labels!r}")
        labels = labels.long()
        if len(labels) == 1:
            labels = labels.expand(batch_size)
        if len(labels) != batch_size:
            raise ValueError(f"got {len(labels)} class labels for a batch of {batch_size}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"class labels must lie in [0, {num_classes - 1}], got {labels.tolist()}")
    return labels.to(device)
