"""UNet factory for consistency models on small images (diffusers `UNet2DModel`).

The network is the `F` of the consistency parameterisation (Song et al. 2023,
Appendix C); it receives `c_in * x` and `c_noise = 250 ln(sigma)` as timestep.
"""
from __future__ import annotations

import torch
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


# Blocks whose resnets see the path (and, going up, one skip concatenated after it) and nothing else.
_DEEPENABLE_BLOCKS = {"DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D",
                      "UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"}


@torch.no_grad()
def deepen_unet(unet: UNet2DModel) -> UNet2DModel:
    """A `UNet2DModel` with one more layer per block that computes the same function as `unet`.

    Net2Net-style growth (Chen et al. 2016), to go on training a model in a larger network: training starts in
    the deeper network from exactly where the shallow one stood. Every old tensor is copied; the new layers
    start as identities, their last convolution (and a new attention's output projection) zero:

    - each down block gets a last resnet (and attention) that passes its input through, so its skip output
      repeats the one before it;
    - each up block gets a second resnet (and attention) that passes the upsampled path through and ignores
      its skip (its 1x1 shortcut is `[I | 0]`); the old first layer reads the new repeated skip, which equals
      its old one, and the old later layers read the same skips as before.
    """
    cfg = dict(unet.config)
    blocks = set(cfg["down_block_types"]) | set(cfg["up_block_types"])
    if not blocks <= _DEEPENABLE_BLOCKS:
        raise ValueError(f"cannot deepen {', '.join(sorted(blocks - _DEEPENABLE_BLOCKS))} blocks; "
                         f"supported: {', '.join(sorted(_DEEPENABLE_BLOCKS))}")
    layers = cfg["layers_per_block"]
    deep = UNet2DModel.from_config({**cfg, "layers_per_block": layers + 1})
    if unet.dtype != deep.dtype:
        deep = deep.to(unet.dtype)
    old = unet.state_dict()
    new = {}
    for name in deep.state_dict():
        parts = name.split(".")
        if parts[0] in ("down_blocks", "up_blocks") and parts[2] in ("resnets", "attentions"):
            j = int(parts[3])
            if parts[0] == "down_blocks":
                src = j if j < layers else None
            else:
                src = 0 if j == 0 else (None if j == 1 else j - 1)
            if src is None:
                continue
            name_old = ".".join(parts[:3] + [str(src)] + parts[4:])
            new[name] = old[name_old]
        else:
            new[name] = old[name]
    deep.load_state_dict(new, strict=False)  # the new layers keep their initialisation but for the zeros below
    for block in deep.down_blocks:
        _make_identity(block, layers, skip_channels=0)
    for block in deep.up_blocks:
        _make_identity(block, 1, skip_channels=block.resnets[1].conv1.in_channels - block.resnets[1].conv2.out_channels)
    return deep


def _make_identity(block, j: int, skip_channels: int) -> None:
    """Zero the last convolution of `block.resnets[j]` (and the output of its attention), leaving the residual;
    with `skip_channels`, the shortcut passes the first (path) channels through and drops the skip's."""
    resnet = block.resnets[j]
    resnet.conv2.weight.zero_()
    resnet.conv2.bias.zero_()
    if skip_channels:
        out = resnet.conv2.out_channels
        resnet.conv_shortcut.weight.zero_()
        resnet.conv_shortcut.weight[:, :out, 0, 0] = torch.eye(out)
        resnet.conv_shortcut.bias.zero_()
    if getattr(block, "attentions", None) is not None:
        block.attentions[j].to_out[0].weight.zero_()
        block.attentions[j].to_out[0].bias.zero_()
