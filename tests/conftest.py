"""Tiny consistency models built in code: CPU, no network, a few milliseconds per forward pass."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from diffusers import CMStochasticIterativeScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from cmedit import ConsistencyEditPipeline

RESOLUTION = 16


def tiny_unet(num_class_embeds: int | None = None, sample_size: int = RESOLUTION, seed: int = 0) -> UNet2DModel:
    """A two-level UNet2DModel with random weights (seeded), as the released models but tiny."""
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
        num_class_embeds=num_class_embeds,
    )
    # Random weights of a fresh UNet are near zero at the output; scale them up so that the
    # network's output matters and a wrong scaling or mask cannot hide behind it.
    with torch.no_grad():
        unet.conv_out.weight.mul_(50)
    return unet.eval()


def tiny_scheduler(num_train_timesteps: int = 40) -> CMStochasticIterativeScheduler:
    return CMStochasticIterativeScheduler(num_train_timesteps=num_train_timesteps)


@pytest.fixture
def pipe() -> ConsistencyEditPipeline:
    pipe = ConsistencyEditPipeline(unet=tiny_unet(), scheduler=tiny_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def class_pipe() -> ConsistencyEditPipeline:
    pipe = ConsistencyEditPipeline(unet=tiny_unet(num_class_embeds=10), scheduler=tiny_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model saved as a diffusers folder, for the command line's --model."""
    path = tmp_path_factory.mktemp("model")
    ConsistencyEditPipeline(unet=tiny_unet(), scheduler=tiny_scheduler()).save_pretrained(path)
    return path


def sample_by_hand(unet: UNet2DModel, scheduler: CMStochasticIterativeScheduler, x: torch.Tensor,
                   generator: torch.Generator, project: Callable[[torch.Tensor], torch.Tensor] = lambda d: d,
                   ) -> torch.Tensor:
    """Multistep sampling written out from docs/design.md: at each of the scheduler's levels denoise with the
    section 1 scalings, clip, ``project``, then add the next level's noise (one draw per step)."""
    sigmas, smin = scheduler.sigmas, scheduler.config.sigma_min
    with torch.no_grad():
        for n in range(len(scheduler.timesteps)):
            sigma, t = sigmas[n], scheduler.timesteps[n]
            c_skip, c_out = scheduler.get_scalings_for_boundary_condition(sigma)
            model_output = unet(x / (sigma**2 + 0.25) ** 0.5, t).sample
            denoised = project((c_skip * x + c_out * model_output).clamp(-1, 1))
            noise = randn_tensor(x.shape, generator=generator)
            x = denoised + noise * (sigmas[n + 1].clamp(min=smin) ** 2 - smin**2) ** 0.5
    return x


def run_script(script, *args):
    """Run a ``scripts/`` file as ``python SCRIPT ARGS...`` would, in this process (no second Python and
    torch start-up): its exit code, stdout and stderr as a ``subprocess.CompletedProcess``; an uncaught
    exception is printed as Python prints it (a traceback on stderr) with exit code 1."""
    import contextlib
    import io
    import runpy
    import subprocess
    import sys
    import traceback

    argv, out, err, code = sys.argv, io.StringIO(), io.StringIO(), 0
    sys.argv = [str(script), *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as stop:
                if isinstance(stop.code, str):
                    err.write(stop.code + "\n")
                    code = 1
                else:
                    code = stop.code or 0
            except Exception:  # noqa: BLE001 - what the interpreter would print
                err.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess([sys.executable, str(script), *map(str, args)], code, out.getvalue(),
                                       err.getvalue())
