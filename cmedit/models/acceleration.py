"""Speed options for a loaded pipeline: ``torch.compile`` of the UNet and the channels-last memory format.

Both change only how the network runs, never what the sampler computes, so they apply to
generation and to every edit alike. Half precision is the other lever and is chosen at load
time (``load_pipeline(..., dtype=torch.bfloat16)``, ``--dtype bfloat16``), not here.
``BENCHMARKS.md`` has the measured effect of each option; on the CPU it was measured there,
bfloat16 helped most and compilation did not pay for its start-up cost.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from diffusers import DiffusionPipeline

PipelineT = TypeVar("PipelineT", bound=DiffusionPipeline)


def accelerate_pipeline(
    pipe: PipelineT,
    compile: bool = False,
    channels_last: bool = False,
    *,
    compile_mode: str | None = None,
) -> PipelineT:
    """Apply speed options to ``pipe.unet`` in place and return ``pipe`` (for chaining).

    Args:
        pipe: a pipeline with a ``unet`` component (``ConsistencyEditPipeline``, or any diffusers
            pipeline built on ``UNet2DModel``).
        compile: compile the UNet's forward pass with ``torch.compile`` (in place, so
            ``save_pretrained``, ``.to()`` and ``unet.config`` keep working). The first call for
            each new input shape (batch size) compiles, which takes seconds to minutes; later
            calls reuse the compiled code. Needs a C++ compiler on the CPU, Triton on CUDA.
        channels_last: store the UNet's weights in the channels-last (NHWC) memory format,
            which the convolution kernels of oneDNN and cuDNN prefer; results equal the default
            format's to float rounding.
        compile_mode: ``torch.compile``'s ``mode`` (``None``, ``"reduce-overhead"``,
            ``"max-autotune"``); used only with ``compile=True``.

    Outputs are unchanged up to float rounding: the sampler and its random draws are untouched.
    """
    unet = getattr(pipe, "unet", None)
    if not isinstance(unet, torch.nn.Module):
        raise TypeError(f"{type(pipe).__name__} has no unet module to accelerate")
    if compile_mode is not None and not compile:
        raise ValueError("compile_mode needs compile=True")
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if compile:
        unet.compile(mode=compile_mode)
    return pipe
