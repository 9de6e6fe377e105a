"""cmedit: zero-shot image editing with consistency models.

The heavy modules (torch, diffusers) load on first use of a name, so that
``import cmedit`` and ``cmedit --version`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "ConsistencyEditPipeline": "cmedit.pipeline",
    "MaskedProjectionScheduler": "cmedit.core.projection",
    "Operator": "cmedit.core.operators",
    "Inpainting": "cmedit.core.operators",
    "Colorization": "cmedit.core.operators",
    "SuperResolution": "cmedit.core.operators",
    "PatchOperator": "cmedit.core.operators",
    "compose": "cmedit.core.operators",
    "LinearOperator": "cmedit.core.linear",
    "Downsample": "cmedit.core.degradations",
    "Blur": "cmedit.core.degradations",
    "GaussianBlur": "cmedit.core.degradations",
    "BoxBlur": "cmedit.core.degradations",
    "MotionBlur": "cmedit.core.degradations",
    "consistency_function": "cmedit.core.sampler",
    "sample": "cmedit.core.sampler",
    "load_pipeline": "cmedit.models.loading",
    "load_checkpoint": "cmedit.models.openai_checkpoints",
    "convert_checkpoint": "cmedit.models.openai_checkpoints",
    "PRESETS": "cmedit.models.presets",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .models.openai_checkpoints import convert_checkpoint, load_checkpoint
    from .models.loading import load_pipeline
    from .core.degradations import Blur, BoxBlur, Downsample, GaussianBlur, MotionBlur
    from .core.linear import LinearOperator
    from .core.operators import Colorization, Inpainting, Operator, PatchOperator, SuperResolution, compose
    from .pipeline import ConsistencyEditPipeline
    from .models.presets import PRESETS
    from .core.projection import MaskedProjectionScheduler
    from .core.sampler import consistency_function, sample


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cmedit' has no attribute {name!r}")
