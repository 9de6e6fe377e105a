"""The seven consistency models released with the paper (openai/consistency_models), as a table.

Each preset names the original ``.pt`` file, its diffusers conversion on the Hugging Face hub
(``openai/diffusers-<name>``), the scheduler's ``num_train_timesteps`` and the 2-step ``timesteps``
published in the paper's ``scripts/launch.sh`` (``--ts 0,22,39`` there is ``timesteps=[22, 0]`` here:
the same indices into the Karras grid of ``num_train_timesteps`` sigmas, docs/design.md section 2).
No torch import: the CLI reads this table for its help and defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_URL = "https://openaipublic.blob.core.windows.net/consistency/{name}.pt"
HUB_ID = "openai/diffusers-{name}"


@dataclass(frozen=True)
class Family:
    """The UNet of a group of released models (cm/unet.py ``UNetModel`` hyper-parameters, launch.sh)."""

    name: str
    resolution: int
    num_classes: int | None
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]  # feature-map sizes in pixels that have self-attention
    num_head_channels: int
    use_scale_shift_norm: bool

    @property
    def block_channels(self) -> tuple[int, ...]:
        """Channels of each UNet level (diffusers' ``block_out_channels``)."""
        return tuple(self.model_channels * mult for mult in self.channel_mult)

    @property
    def attention_levels(self) -> tuple[bool, ...]:
        """Whether each level has attention: level ``l`` works at ``resolution / 2**l`` pixels."""
        return tuple(self.resolution >> level in self.attention_resolutions for level in range(len(self.channel_mult)))


IMAGENET64 = Family("ImageNet 64x64, class-conditional", resolution=64, num_classes=1000, model_channels=192,
                    channel_mult=(1, 2, 3, 4), num_res_blocks=3, attention_resolutions=(32, 16, 8),
                    num_head_channels=64, use_scale_shift_norm=True)
LSUN256 = Family("LSUN 256x256, unconditional", resolution=256, num_classes=None, model_channels=256,
                 channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attention_resolutions=(32, 16, 8),
                 num_head_channels=64, use_scale_shift_norm=False)
FAMILIES = (IMAGENET64, LSUN256)


@dataclass(frozen=True)
class Preset:
    """One released model: where to get it and how it samples best in two steps."""

    name: str
    family: Family
    dataset: str
    training: str  # "CD" (consistency distillation) or "CT" (consistency training)
    num_train_timesteps: int
    timesteps: tuple[int, ...]  # the paper's 2-step schedule, descending indices into the Karras grid

    @property
    def resolution(self) -> int:
        return self.family.resolution

    @property
    def num_classes(self) -> int | None:
        return self.family.num_classes

    @property
    def hub_id(self) -> str:
        return HUB_ID.format(name=self.name)

    @property
    def url(self) -> str:
        """Where the original ``.pt`` checkpoint is published."""
        return CHECKPOINT_URL.format(name=self.name)

    def local_paths(self) -> tuple[Path, Path]:
        """Where a local copy is looked for, in order: ``<name>.pt``, then a diffusers folder ``<name>/``."""
        folder = checkpoint_dir()
        return folder / f"{self.name}.pt", folder / self.name

    def local_copy(self) -> Path | None:
        """The first local copy that exists, or ``None``."""
        pt_file, folder = self.local_paths()
        if pt_file.is_file():
            return pt_file
        if (folder / "unet").is_dir():
            return folder
        return None


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("cd_imagenet64_l2", IMAGENET64, "ImageNet", "CD", 40, (22, 0)),
        Preset("cd_imagenet64_lpips", IMAGENET64, "ImageNet", "CD", 40, (22, 0)),
        Preset("ct_imagenet64", IMAGENET64, "ImageNet", "CT", 201, (106, 0)),
        Preset("cd_bedroom256_l2", LSUN256, "LSUN Bedroom", "CD", 40, (18, 0)),
        Preset("cd_bedroom256_lpips", LSUN256, "LSUN Bedroom", "CD", 40, (17, 0)),
        Preset("ct_bedroom256", LSUN256, "LSUN Bedroom", "CT", 151, (67, 0)),
        Preset("ct_cat256", LSUN256, "LSUN Cat", "CT", 151, (62, 0)),
    )
}


def checkpoint_dir() -> Path:
    """The folder searched for local copies of the released models: ``$XDG_CACHE_HOME/cmedit`` or ``~/.cache/cmedit``."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cmedit"


def preset_for(model: str | os.PathLike | None) -> Preset | None:
    """The preset that ``model`` names, if any.

    Recognised: the preset name itself (``cd_imagenet64_l2``), its hub id
    (``openai/diffusers-cd_imagenet64_l2``), and a file or folder named after it
    (``.../cd_imagenet64_l2.pt``, ``.../cd_imagenet64_l2/``, ``.../diffusers-cd_imagenet64_l2/``).
    """
    if model is None:
        return None
    text = str(model).rstrip("/\\")
    name = Path(text).name
    if name.endswith((".pt", ".pth")):
        name = name.rsplit(".", 1)[0]
    return PRESETS.get(name.removeprefix("diffusers-"))


def preset_table() -> str:
    """The table of presets as Markdown (README and ``cmedit convert --help``)."""
    rows = ["| name | data | training | resolution | classes | num_train_timesteps | 2-step timesteps |",
            "|---|---|---|---|---|---|---|"]
    for p in PRESETS.values():
        classes = str(p.num_classes) if p.num_classes else "-"
        rows.append(f"| `{p.name}` | {p.dataset} | {p.training} | {p.resolution} | {classes} | "
                    f"{p.num_train_timesteps} | `{list(p.timesteps)}` |")
    return "\n".join(rows)
