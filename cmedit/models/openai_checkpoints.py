"""Reading the original OpenAI consistency-model checkpoints (``.pt``) safely and converting them to diffusers.

A checkpoint is untrusted input: it is read with ``torch.load(..., weights_only=True)`` only, so a
file whose unpickling would run code is refused, never executed. The architecture comes from the
weights' keys and shapes (``checkpoint_keys.read_architecture``); what they cannot tell (image size,
channels per attention head, the scheduler's ``num_train_timesteps``) comes from the arguments, else
from the released model the checkpoint is (``cmedit.models.presets``: ``preset=``, else the file's name).
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch
from diffusers import CMStochasticIterativeScheduler, UNet2DModel

from .openai_keys import CheckpointError, UNetArchitecture, convert_state_dict, read_architecture, unet_config
from ..pipeline import ConsistencyEditPipeline
from .presets import FAMILIES, PRESETS, Family, Preset, preset_for

logger = logging.getLogger(__name__)

__all__ = ["CheckpointError", "read_state_dict", "unet_from_state_dict", "load_checkpoint", "convert_checkpoint"]

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # docs/design.md, section 1; every released model
DEFAULT_NUM_TRAIN_TIMESTEPS = 40  # the consistency-distillation grid (launch.sh --steps 40)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt`` file, read with ``weights_only=True`` (no code in the file ever runs).

    Raises ``CheckpointError`` (one line) for a missing, truncated or corrupt file, for one holding
    Python objects other than tensors and plain containers, and for anything but a ``{name: tensor}`` dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # mmap (zip format only): float32 weights stay backed by the file's copy-on-write pages, so a
        # 2 GB checkpoint loads in a moment and takes no memory twice.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        if "global" in str(error).lower():  # "Unsupported global: GLOBAL module.name ..."; junk bytes fail otherwise
            raise CheckpointError(f"{path}: refused: the file holds Python objects other than tensors, which would "
                                  "run code when loaded; only plain weight checkpoints are read") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?)") from None
    except Exception as error:  # noqa: BLE001 - corrupt bytes reach the unpickler's internals (KeyError, ...)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        reason = reason if isinstance(error, (RuntimeError, OSError, EOFError)) else f"{type(error).__name__}: {reason}"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {reason}") from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: not a state dict of named tensors (an OpenAI UNet checkpoint is one)")
    return state


def matches_family(arch: UNetArchitecture, family: Family) -> bool:
    """Whether ``arch`` is the UNet of the released models of ``family``."""
    return (arch.block_channels == family.block_channels and arch.num_res_blocks == family.num_res_blocks
            and arch.attention_levels == family.attention_levels and arch.num_classes == family.num_classes
            and arch.use_scale_shift_norm == family.use_scale_shift_norm and arch.in_channels == 3)


def unet_from_state_dict(
    state_dict: dict[str, torch.Tensor], sample_size: int, num_head_channels: int
) -> UNet2DModel:
    """A float32 ``UNet2DModel`` holding the weights of a ``cm/unet.py`` state dict.

    Raises ``CheckpointError`` when a key is missing or unexpected, or a shape does not fit.
    """
    arch = read_architecture({key: tuple(value.shape) for key, value in state_dict.items()})
    converted, origin = convert_state_dict(state_dict, arch)
    config = unet_config(arch, sample_size, num_head_channels)
    try:
        with torch.device("meta"):  # no memory or random init for weights that are replaced at once
            unet = UNet2DModel(**config)
    except (ValueError, RuntimeError) as error:
        raise CheckpointError(f"no diffusers UNet2DModel for this architecture ({str(error).splitlines()[0]})") from None
    expected = unet.state_dict()
    for key, tensor in expected.items():
        if key not in converted:
            raise CheckpointError(f"no weight for diffusers' {key}: not the layout of an OpenAI UNet")
        if converted[key].shape != tensor.shape:
            raise CheckpointError(f"{origin[key]} has shape {tuple(state_dict[origin[key]].shape)}, which does not "
                                  f"fit the architecture of the other weights ({arch.describe()})")
    unet.load_state_dict({key: value.to(torch.float32) for key, value in converted.items()}, strict=True, assign=True)
    return unet.eval()


def _settings(
    path: Path, arch: UNetArchitecture, preset: Preset | None, explicit: bool,
    resolution: int | None, num_head_channels: int | None, num_train_timesteps: int | None,
) -> tuple[int, int, int]:
    """``(sample_size, num_head_channels, num_train_timesteps)``: the arguments, else the preset's or family's."""
    if preset is not None and not matches_family(arch, preset.family):
        if explicit:
            raise CheckpointError(f"the weights are not those of {preset.name} ({preset.family.name}) but "
                                  f"{arch.describe()}")
        logger.warning("%s: named like %s, but the weights are not of that model; ignoring the name",
                       path, preset.name)
        preset = None
    known = preset.family if preset is not None else next((f for f in FAMILIES if matches_family(arch, f)), None)
    if known is None and (resolution is None or num_head_channels is None):
        raise CheckpointError(f"not a released architecture ({arch.describe()}), so the image size and the channels "
                              "per attention head cannot be told from the weights: give resolution and "
                              "num_head_channels")
    if num_train_timesteps is None and preset is None:
        logger.warning("%s: not named after a released model (%s): using num_train_timesteps=%d as the distilled "
                       "(CD) models do; give the preset or num_train_timesteps for another grid",
                       path, ", ".join(PRESETS), DEFAULT_NUM_TRAIN_TIMESTEPS)
    return (
        resolution if resolution is not None else known.resolution,
        num_head_channels if num_head_channels is not None else known.num_head_channels,
        num_train_timesteps if num_train_timesteps is not None else (
            preset.num_train_timesteps if preset is not None else DEFAULT_NUM_TRAIN_TIMESTEPS),
    )


def load_checkpoint(
    path: str | os.PathLike,
    preset: str | None = None,
    resolution: int | None = None,
    num_head_channels: int | None = None,
    num_train_timesteps: int | None = None,
) -> ConsistencyEditPipeline:
    """A ``ConsistencyEditPipeline`` (float32, CPU) from an original OpenAI ``.pt`` checkpoint.

    Args:
        path: the ``.pt`` file (e.g. ``cd_imagenet64_l2.pt``), read with ``weights_only=True``.
        preset: the released model it is (a key of ``cmedit.models.presets.PRESETS``); default: the file's
            name when that is a preset's. It gives the scheduler's grid and is checked against the weights.
        resolution, num_head_channels, num_train_timesteps: override what the preset (or, for the
            released architectures, the weights) imply; required for other architectures.

    Raises ``CheckpointError`` (one line, naming the file) for anything that is not such a checkpoint.
    """
    path = Path(path)
    if preset is not None and preset not in PRESETS:
        raise CheckpointError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    chosen = PRESETS[preset] if preset is not None else preset_for(path)
    state_dict = read_state_dict(path)
    try:
        arch = read_architecture({key: tuple(value.shape) for key, value in state_dict.items()})
        size, heads, grid = _settings(path, arch, chosen, preset is not None, resolution, num_head_channels,
                                      num_train_timesteps)
        unet = unet_from_state_dict(state_dict, size, heads)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    scheduler = CMStochasticIterativeScheduler(num_train_timesteps=grid, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    return ConsistencyEditPipeline(unet=unet, scheduler=scheduler)


def convert_checkpoint(path: str | os.PathLike, output_dir: str | os.PathLike, **kwargs) -> ConsistencyEditPipeline:
    """Convert an original ``.pt`` checkpoint to a diffusers folder (``unet/``, ``scheduler/``, ``model_index.json``).

    The folder loads with ``cmedit`` and with diffusers' ``ConsistencyModelPipeline.from_pretrained``.
    Keyword arguments as :func:`load_checkpoint`. Returns the converted pipeline.
    """
    pipe = load_checkpoint(path, **kwargs)
    pipe.save_pretrained(output_dir)
    return pipe
