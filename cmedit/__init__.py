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
    "MaskedProjectionScheduler": "cmedit.projection",
    "Operator": "cmedit.operators",
    "Inpainting": "cmedit.operators",
    "Colorization": "cmedit.operators",
    "SuperResolution": "cmedit.operators",
    "PatchOperator": "cmedit.operators",
    "compose": "cmedit.operators",
    "consistency_function": "cmedit.sampler",
    "sample": "cmedit.sampler",
    "load_pipeline": "cmedit.loading",
    "load_checkpoint": "cmedit.checkpoints",
    "convert_checkpoint": "cmedit.checkpoints",
    "PRESETS": "cmedit.presets",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .checkpoints import convert_checkpoint, load_checkpoint
    from .loading import load_pipeline
    from .operators import Colorization, Inpainting, Operator, PatchOperator, SuperResolution, compose
    from .pipeline import ConsistencyEditPipeline
    from .presets import PRESETS
    from .projection import MaskedProjectionScheduler
    from .sampler import consistency_function, sample


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cmedit' has no attribute {name!r}")
