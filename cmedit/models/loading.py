"""Finding and loading a consistency model: a local diffusers folder, a hub id, or the embedded default."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

from ..pipeline import ConsistencyEditPipeline
from .errors import ModelLoadError  # defined apart, so that code which only catches it stays cheap to import
from .presets import PRESETS

logger = logging.getLogger(__name__)

# The one place that names the model used when none is given: the embedded model (MODEL_CARD.md).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_model"
DEFAULT_MODEL_NOTE = ("the embedded default model is a 32x32 emoji model (MODEL_CARD.md): edits of photos come out "
                      "wrong; pass --model (a released OpenAI model such as cd_imagenet64_l2 or cd_bedroom256_lpips, "
                      "or your own folder) for other images")


def resolve_model(model: str | os.PathLike | None) -> str:
    """The path or hub id to load.

    ``None``: the embedded default model. A released model's name (``cd_imagenet64_l2``, see
    ``cmedit.models.presets``) that is not a local path: its local copy (``<checkpoint_dir>/<name>.pt`` or
    ``<checkpoint_dir>/<name>/``) when there is one, else its hub id ``openai/diffusers-<name>``.
    Anything else: ``model`` itself.
    """
    if model is None:
        if not (DEFAULT_MODEL_DIR / "unet").is_dir():
            raise ModelLoadError("no embedded default model in this installation: pass --model PATH")
        return str(DEFAULT_MODEL_DIR)
    source = str(model)
    preset = PRESETS.get(source)
    if preset is not None and not Path(source).exists():
        local = preset.local_copy()
        return str(local) if local is not None else preset.hub_id
    return source


def load_pipeline(
    model: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    lora: str | None = None,
    config: str | None = None,
) -> ConsistencyEditPipeline:
    """Load a ``ConsistencyEditPipeline`` from a diffusers folder (``unet/`` + ``scheduler/``), an original
    OpenAI ``.pt`` checkpoint (converted in memory, ``cmedit.models.openai_checkpoints``), a released model's name
    (``cd_imagenet64_l2``: its local copy or its hub id, see :func:`resolve_model`) or a hub id.

    ``model=None`` loads the embedded default model. A local folder needs no ``model_index.json``
    (its two subfolders suffice); its ``cmedit.json``, if any, gives the default schedules
    (``ConsistencyEditPipeline.edit_timesteps``, ``generate_timesteps``). Anything that is not a
    ``UNet2DModel`` with a ``CMStochasticIterativeScheduler`` raises ``ModelLoadError``; so does a hub
    model that cannot be downloaded (the message says where a local copy goes).

    Latent consistency models (``cmedit.latent``): a folder or hub id whose ``model_index.json`` names a
    ``vae`` and a ``text_encoder``, or a single Stable Diffusion ``.safetensors`` file, loads as a
    ``LatentEditPipeline`` with the same methods; ``lora`` adds an LCM-LoRA to a Stable Diffusion base,
    ``config`` names a local diffusers folder with a single file's configs (else fetched from the hub).
    """
    from diffusers import CMStochasticIterativeScheduler, UNet2DModel

    source = resolve_model(model)
    path = Path(source)
    # A hub id is "owner/name"; anything else that does not exist is a missing local path.
    looks_local = (path.exists() or source.startswith((".", "/", "~")) or "\\" in source
                   or source.strip("/").count("/") > 1 or path.suffix in (".pt", ".pth"))
    latent = _load_if_latent(source, path, looks_local, lora=lora, config=config, device=device, dtype=dtype)
    if latent is not None:
        return latent
    if lora is not None:
        raise ModelLoadError(f"{source}: --lora adds an LCM-LoRA to a Stable Diffusion model; this is a pixel "
                             "consistency model")
    try:
        if path.is_file():
            from .openai_checkpoints import CheckpointError, load_checkpoint

            try:
                pipe = load_checkpoint(path)
            except CheckpointError as error:
                raise ModelLoadError(str(error)) from None
        elif path.is_dir():
            for name in ("unet/config.json", "scheduler/scheduler_config.json"):
                if not (path / name).is_file():
                    raise ModelLoadError(f"{source}: not a consistency model folder (no {name})")
            check_model_folder(path)
            scheduler_class = _config_class(path / "scheduler" / "scheduler_config.json")
            if scheduler_class != "CMStochasticIterativeScheduler":
                raise ModelLoadError(f"{source}: scheduler is {scheduler_class}, not a consistency model scheduler")
            unet = UNet2DModel.from_pretrained(source, subfolder="unet")
            scheduler = CMStochasticIterativeScheduler.from_pretrained(source, subfolder="scheduler")
            pipe = ConsistencyEditPipeline(unet=unet, scheduler=scheduler)
            try:
                pipe.read_schedules(path)
            except ValueError as error:
                raise ModelLoadError(str(error)) from None
        elif looks_local:
            raise ModelLoadError(f"{source}: no such model folder or checkpoint file")
        else:
            try:
                pipe = ConsistencyEditPipeline.from_pretrained(source)
            except OSError as error:
                raise ModelLoadError(_hub_error(model, source, error)) from error
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{source}: cannot load model ({first_line})") from error
    if not isinstance(pipe.unet, UNet2DModel) or not isinstance(pipe.scheduler, CMStochasticIterativeScheduler):
        raise ModelLoadError(f"{source}: not a UNet2DModel with a CMStochasticIterativeScheduler")
    if not path.is_dir():  # a folder's configs were checked before anything was built from them
        _check_sample_size(pipe.unet.config.sample_size, len(pipe.unet.config.down_block_types), source)
    if model is None:
        pipe.domain_note = DEFAULT_MODEL_NOTE
    if device is not None or dtype is not None:
        pipe.to(device=device, dtype=dtype)
    return pipe


def _load_if_latent(source: str, path: Path, looks_local: bool, **kwargs):
    """A ``LatentEditPipeline`` if ``source`` holds a latent model (by its contents, not its name), else None."""
    from ..latent import loading as latent

    if any(source == preset.hub_id for preset in PRESETS.values()):
        return None  # a released pixel model: no hub request to find out
    try:
        if path.is_file():
            if not latent.is_sd_single_file(path):
                return None
            return latent.load_latent_pipeline(source, single_file=True, **kwargs)
        if path.is_dir():
            index = latent.read_model_index(source)
        elif looks_local:
            return None
        else:
            try:
                index = latent.read_model_index(source)
            except (OSError, ValueError):  # offline or not a pipeline: the pixel path reports it
                return None
        if latent.index_kind(index) == "pixel":
            return None
        return latent.load_latent_pipeline(source, **kwargs)
    except latent.LatentModelError as error:
        raise ModelLoadError(str(error)) from None
    except Exception as error:  # diffusers' loaders raise many types (e.g. SingleFileComponentError): one line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{source}: cannot load latent model ({first_line})") from error


# Bounds on a model folder's configuration, checked before anything is built from it: the largest
# released consistency models are 256x256 with 201 noise levels.
MAX_SAMPLE_SIZE = 2048
MAX_TRAIN_TIMESTEPS = 10_000
PIPELINE_CLASSES = ("ConsistencyModelPipeline", "ConsistencyEditPipeline")


def check_model_folder(path: Path) -> None:
    """Refuse a model folder whose configuration cmedit cannot use, with one line naming the file and the
    value: ``model_index.json``'s ``_class_name`` (another pipeline's model), the UNet's ``sample_size``
    (an int in ``[1, MAX_SAMPLE_SIZE]`` divisible by its downsampling factor ``2**(len(down_block_types)
    - 1)``), the scheduler's ``num_train_timesteps`` (an int in ``[2, MAX_TRAIN_TIMESTEPS]``) and its
    sigmas (finite, ``0 < sigma_min < sigma_max``)."""
    index = path / "model_index.json"
    if index.is_file():
        name = _read_config(index).get("_class_name")
        if name not in PIPELINE_CLASSES:
            raise ModelLoadError(f"{index}: _class_name {name!r} is not a consistency model pipeline "
                                 f"({' or '.join(PIPELINE_CLASSES)})")
    unet = _read_config(path / "unet" / "config.json")
    blocks = unet.get("down_block_types", ("DownBlock2D",) * 4)
    _check_sample_size(unet.get("sample_size"), len(blocks) if isinstance(blocks, list) else 4,
                       path / "unet" / "config.json")
    scheduler_path = path / "scheduler" / "scheduler_config.json"
    scheduler = _read_config(scheduler_path)
    steps = scheduler.get("num_train_timesteps", 40)
    if not _is_int(steps) or not 2 <= steps <= MAX_TRAIN_TIMESTEPS:
        raise ModelLoadError(f"{scheduler_path}: num_train_timesteps {steps!r} is not usable "
                             f"(an integer from 2 to {MAX_TRAIN_TIMESTEPS:,})")
    low, high = scheduler.get("sigma_min", 0.002), scheduler.get("sigma_max", 80.0)
    for key, value in (("sigma_min", low), ("sigma_max", high)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise ModelLoadError(f"{scheduler_path}: {key} {value!r} is not usable (a positive number)")
    if low >= high:
        raise ModelLoadError(f"{scheduler_path}: sigma_min {low!r} is not below sigma_max {high!r}")


def _check_sample_size(size, num_down_blocks: int, where) -> None:
    factor = 2 ** max(num_down_blocks - 1, 0)
    if not _is_int(size) or not 1 <= size <= MAX_SAMPLE_SIZE or size % factor:
        raise ModelLoadError(f"{where}: sample_size {size!r} is not usable (an integer from 1 to {MAX_SAMPLE_SIZE} "
                             f"that the UNet's {num_down_blocks} levels can halve {num_down_blocks - 1} times: "
                             f"a multiple of {factor})")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_config(config_path: Path) -> dict:
    import json

    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{config_path}: unreadable config ({error})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path}: unreadable config (not a JSON object)")
    return config


def _hub_error(model, source: str, error: OSError) -> str:
    """One line for a hub model that did not load; for a released model, where to put a local copy."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    preset = PRESETS.get(str(model))
    if preset is None:
        return f"{source}: no such local folder or file, and it cannot be loaded from the Hugging Face hub ({reason})"
    pt_file, folder = preset.local_paths()
    return (f"{preset.name}: cannot load {source} from the Hugging Face hub (it needs the network, or the hub "
            f"cache); offline, download {preset.url} and put it at {pt_file} (or a converted folder at {folder}/), "
            f"or pass --model PATH/TO/{preset.name}.pt")


def _config_class(config_path: Path) -> str | None:
    return _read_config(config_path).get("_class_name")
