"""UNet factory for consistency models on small images (diffusers `UNet2DModel`).

The network is the `F` of the consistency parameterisation (Song et al. 2023,
Appendix C); it receives `c_in * x` and `c_noise = 250 ln(sigma)` as timestep.
"""
from __future__ import annotations

from diffusers import UNet2DModel

# name -> (block_out_channels, attention flags per resolution level, layers_per_block)
PRESETS: dict[str, tuple[tuple[int, ...], tuple[bool, ...], int]] = {
    "tiny": ((32, 64, 64), (False, False, True), 1),  # 1.1M params
    "small": ((64, 128, 128), (False, False, True), 1),  # 4.4M params, ~48 img/s bf16 on 2 CPU cores
    "base": ((64, 128, 128), (False, False, True), 2),  # 6.5M params, ~33 img/s
}


def make_unet(
    sample_size: int = 32,
    channels: tuple[int, ...] = (64, 128, 128),
    attention: tuple[bool, ...] = (False, False, True),
    layers_per_block: int = 2,
    in_channels: int = 3,
    dropout: float = 0.0,
) -> UNet2DModel:
    """Build an unconditional `UNet2DModel`; `attention[i]` puts self-attention at level i (level 0 = full size)."""
    if len(channels) != len(attention):
        raise ValueError("channels and attention must have the same length")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=layers_per_block,
        attention_head_dim=32,
        norm_num_groups=min(32, min(channels)),
        dropout=dropout,
    )


def make_preset(name: str, sample_size: int = 32, dropout: float = 0.0) -> UNet2DModel:
    """Build one of the named `PRESETS`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    channels, attention, layers = PRESETS[name]
    return make_unet(sample_size, channels, attention, layers, dropout=dropout)


def count_parameters(model: UNet2DModel) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
