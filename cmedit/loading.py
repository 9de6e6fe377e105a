"""Finding and loading a consistency model: a local diffusers folder, a hub id, or the embedded default."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .pipeline import ConsistencyEditPipeline

logger = logging.getLogger(__name__)

# The one place that names the model used when none is given (filled by the embedded-model issue).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


class ModelLoadError(ValueError):
    """The model cannot be found or is not a consistency model; the message is one line."""


def resolve_model(model: str | os.PathLike | None) -> str:
    """The path or hub id to load: ``model`` itself, or the embedded default model when ``None``."""
    if model is not None:
        return str(model)
    if not (DEFAULT_MODEL_DIR / "unet").is_dir():
        raise ModelLoadError("no embedded default model in this installation: pass --model PATH")
    return str(DEFAULT_MODEL_DIR)


def load_pipeline(
    model: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> ConsistencyEditPipeline:
    """Load a ``ConsistencyEditPipeline`` from a diffusers folder (``unet/`` + ``scheduler/``) or hub id.

    ``model=None`` loads the embedded default model. A local folder needs no ``model_index.json``
    (its two subfolders suffice). Anything that is not a ``UNet2DModel`` with a
    ``CMStochasticIterativeScheduler`` raises ``ModelLoadError``.
    """
    from diffusers import CMStochasticIterativeScheduler, UNet2DModel

    source = resolve_model(model)
    path = Path(source)
    looks_local = path.exists() or source.startswith((".", "/", "~")) or os.sep in source.strip("/")
    try:
        if path.is_dir():
            for config in ("unet/config.json", "scheduler/scheduler_config.json"):
                if not (path / config).is_file():
                    raise ModelLoadError(f"{source}: not a consistency model folder (no {config})")
            scheduler_class = _config_class(path / "scheduler" / "scheduler_config.json")
            if scheduler_class != "CMStochasticIterativeScheduler":
                raise ModelLoadError(f"{source}: scheduler is {scheduler_class}, not a consistency model scheduler")
            unet = UNet2DModel.from_pretrained(source, subfolder="unet")
            scheduler = CMStochasticIterativeScheduler.from_pretrained(source, subfolder="scheduler")
            pipe = ConsistencyEditPipeline(unet=unet, scheduler=scheduler)
        elif looks_local:
            raise ModelLoadError(f"{source}: no such model folder")
        else:
            pipe = ConsistencyEditPipeline.from_pretrained(source)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{source}: cannot load model ({first_line})") from error
    if not isinstance(pipe.unet, UNet2DModel) or not isinstance(pipe.scheduler, CMStochasticIterativeScheduler):
        raise ModelLoadError(f"{source}: not a UNet2DModel with a CMStochasticIterativeScheduler")
    if device is not None or dtype is not None:
        pipe.to(device=device, dtype=dtype)
    return pipe


def _config_class(config_path: Path) -> str | None:
    import json

    try:
        return json.loads(config_path.read_text()).get("_class_name")
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{config_path}: unreadable config ({error})") from None
