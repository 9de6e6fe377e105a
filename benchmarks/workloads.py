"""What the benchmark runs: model configurations, pipelines built on them, and one call per task.

Speed does not depend on the weights' values, so every model is a randomly initialised
``UNet2DModel`` (seeded) of a realistic size; all pipelines of one model share its weights.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import torch
from diffusers import (CMStochasticIterativeScheduler, ConsistencyModelPipeline, RePaintPipeline,
                       RePaintScheduler, UNet2DModel)

from cmedit import ConsistencyEditPipeline
from cmedit.models.loading import DEFAULT_MODEL_DIR

TASKS = ("generate", "inpaint", "colorize", "super_resolve")
SUPER_RESOLUTION_FACTOR = 4


def _unet_config(sample_size: int, channels: tuple[int, ...], attention: tuple[bool, ...], layers: int) -> dict:
    """A ``UNet2DModel`` config in the layout of ``cmedit.training.model.make_unet``."""
    return {
        "sample_size": sample_size, "in_channels": 3, "out_channels": 3,
        "block_out_channels": list(channels), "layers_per_block": layers,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "attention_head_dim": 32, "norm_num_groups": min(32, min(channels)),
    }


def default_model_config() -> tuple[dict, str]:
    """The embedded default model's UNet config when it is installed, else its planned size."""
    path = DEFAULT_MODEL_DIR / "unet" / "config.json"
    if path.is_file():
        config = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
        return config, f"config of {path.relative_to(DEFAULT_MODEL_DIR.parent.parent)}"
    return (_unet_config(32, (64, 128, 128), (False, False, True), 1),
            "the default model's planned size (training preset 'small'; cmedit/default_model/ not installed)")


def model_configs(quick: bool) -> dict[str, dict]:
    """name -> {"unet": UNet2DModel config, "source": where it comes from}."""
    if quick:
        return {"tiny16": {"unet": _unet_config(16, (8, 16), (False, True), 1) | {"norm_num_groups": 4,
                                                                                  "attention_head_dim": 8},
                           "source": "tiny test configuration (--quick)"}}
    config, source = default_model_config()
    return {
        "default32": {"unet": config, "source": source},
        "imagenet64-small": {
            "unet": _unet_config(64, (64, 128, 192, 256), (False, False, True, True), 1),
            "source": "64x64, ImageNet-64 layout (attention at 16x16 and 8x8), much smaller than the "
                      "280M-parameter cd_imagenet64 release",
        },
    }


def build_unet(config: dict, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**config).eval()


def default_scheduler() -> CMStochasticIterativeScheduler:
    path = DEFAULT_MODEL_DIR / "scheduler"
    if (path / "scheduler_config.json").is_file():
        return CMStochasticIterativeScheduler.from_pretrained(path)
    return CMStochasticIterativeScheduler()


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cmedit_pipeline(unet: UNet2DModel, dtype: torch.dtype | None = None, copy_unet: bool = False):
    unet = copy.deepcopy(unet) if copy_unet or dtype is not None else unet
    pipe = ConsistencyEditPipeline(unet=unet, scheduler=default_scheduler())
    if dtype is not None:
        pipe.to(dtype=dtype)
    return quiet(pipe)


def diffusers_cm_pipeline(unet: UNet2DModel) -> ConsistencyModelPipeline:
    return quiet(ConsistencyModelPipeline(unet=unet, scheduler=default_scheduler()))


def repaint_pipeline(unet: UNet2DModel) -> RePaintPipeline:
    return quiet(RePaintPipeline(unet=unet, scheduler=RePaintScheduler()))


def inputs(resolution: int, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images in [0, 1] (BCHW), a centred square mask (1 = generate), a grey and a low-resolution batch."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, resolution, resolution, generator=g)
    mask = torch.zeros(resolution, resolution)
    q = resolution // 4
    mask[q:resolution - q, q:resolution - q] = 1
    gray = (image * torch.tensor([0.2989, 0.5870, 0.1140])[:, None, None]).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    low = torch.rand(batch, 3, resolution // SUPER_RESOLUTION_FACTOR, resolution // SUPER_RESOLUTION_FACTOR,
                     generator=g)
    return {"image": image, "mask": mask, "gray": gray.contiguous(), "low": low}


def task_call(pipe: ConsistencyEditPipeline, task: str, batch: int, steps: int,
              seed: int = 0) -> Callable[[], object]:
    """A no-argument call of ``task`` on ``pipe`` for ``batch`` images, ``steps`` network evaluations each."""
    data = inputs(pipe.resolution, batch)
    common = {"num_inference_steps": steps, "output_type": "np"}
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    if task == "generate":
        return lambda: pipe.generate(batch_size=batch, generator=g(), **common).images
    if task == "inpaint":
        return lambda: pipe.inpaint(data["image"], data["mask"], generator=g(), **common).images
    if task == "colorize":
        return lambda: pipe.colorize(data["gray"], generator=g(), **common).images
    if task == "super_resolve":
        return lambda: pipe.super_resolve(data["low"], factor=SUPER_RESOLUTION_FACTOR, kernel="box", generator=g(),
                                          **common).images
    raise ValueError(f"unknown task {task!r}")


def diffusers_generate_call(pipe: ConsistencyModelPipeline, batch: int, steps: int, seed: int = 0):
    return lambda: pipe(batch_size=batch, num_inference_steps=steps, output_type="np",
                        generator=torch.Generator().manual_seed(seed)).images


def repaint_call(pipe: RePaintPipeline, steps: int, jump_length: int, jump_n_sample: int, seed: int = 0):
    """RePaint on the same image and mask as ``task_call(..., "inpaint", 1, ...)`` (RePaint: 1 = keep)."""
    data = inputs(pipe.unet.config.sample_size, 1)
    image, keep = data["image"] * 2 - 1, (1 - data["mask"])[None, None]
    return lambda: pipe(image=image, mask_image=keep, num_inference_steps=steps, jump_length=jump_length,
                        jump_n_sample=jump_n_sample, output_type="np",
                        generator=torch.Generator().manual_seed(seed)).images


def repaint_network_evaluations(steps: int, jump_length: int, jump_n_sample: int) -> int:
    """The network evaluations of a RePaint run, counted from its schedule as ``RePaintPipeline`` walks it."""
    scheduler = RePaintScheduler()
    scheduler.set_timesteps(steps, jump_length, jump_n_sample)
    count, t_last = 0, scheduler.timesteps[0] + 1
    for t in scheduler.timesteps:
        count += int(t < t_last)  # t >= t_last is an undo (re-noising) step with no network call
        t_last = t
    return count


def save_model_folder(config: dict, folder: Path) -> Path:
    """A diffusers consistency-model folder (``unet/`` + ``scheduler/``) with random weights."""
    build_unet(config).save_pretrained(folder / "unet")
    default_scheduler().save_pretrained(folder / "scheduler")
    return folder
