"""The weights of the original OpenAI UNet (openai/consistency_models, ``cm/unet.py``) and their diffusers names.

``read_architecture`` reads the hyper-parameters that the weights determine from the keys and shapes
alone; ``convert_state_dict`` renames (and splits ``qkv``) for diffusers' ``UNet2DModel`` built from
``unet_config``. What the weights cannot tell (the image size, the channels per attention head) is
passed in. Supported: the layout of the released models, ``resblock_updown=True`` (residual blocks
that down/upsample) and the (three, heads, channels) order of ``qkv`` that ``QKVFlashAttention`` uses.
No diffusers import here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

GROUPS = 32  # cm/nn.py normalization(): GroupNorm32(32, channels), eps 1e-5

# ResBlock sub-modules (cm/unet.py) -> ResnetBlock2D sub-modules.
RESNET_KEYS = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.0": "norm2", "out_layers.3": "conv2"}
RES_PARTS = ("in_layers", "emb_layers", "out_layers", "skip_connection")
RES, ATTN, OTHER = "ResBlock", "AttentionBlock", "other layer"
_BLOCK_KEY = re.compile(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)\.([A-Za-z_]+)")


class CheckpointError(ValueError):
    """A file that is not a usable OpenAI consistency-model checkpoint; the message is one line."""


@dataclass(frozen=True)
class UNetArchitecture:
    """The hyper-parameters of a ``cm/unet.py`` ``UNetModel`` that its weights determine."""

    in_channels: int
    out_channels: int
    model_channels: int  # width of the sinusoidal timestep embedding
    block_channels: tuple[int, ...]  # channels of each level, ``model_channels * channel_mult``
    num_res_blocks: int
    attention_levels: tuple[bool, ...]  # whether each level has self-attention
    num_classes: int | None
    use_scale_shift_norm: bool

    def describe(self) -> str:
        """One line for messages, e.g. ``class-conditional (1000 classes), channels 192-384-576-768, ...``."""
        kind = f"class-conditional ({self.num_classes} classes)" if self.num_classes else "unconditional"
        attention = ",".join(str(level) for level, has in enumerate(self.attention_levels) if has) or "none"
        return (f"{kind}, channels {'-'.join(map(str, self.block_channels))}, {self.num_res_blocks} res blocks "
                f"per level, attention at levels {attention}, scale-shift norm {self.use_scale_shift_norm}")


def _shape(shapes: Mapping[str, Sequence[int]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"no weight {key!r}: not an OpenAI consistency-model UNet checkpoint")
    return tuple(shapes[key])


def _layouts(keys, prefix: str) -> list[list[str]]:
    """For each block ``prefix.N``, the kinds of its sub-modules ``prefix.N.M`` in order of ``M``."""
    kinds: dict[int, dict[int, str]] = {}
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match is None or match.group(1) != prefix:
            continue
        block, sub, name = int(match.group(2)), int(match.group(3)), match.group(4)
        kind = RES if name in RES_PARTS else ATTN if name in ("qkv", "proj_out", "norm") else OTHER
        kinds.setdefault(block, {})[sub] = kind
    count = max(kinds, default=-1) + 1
    for block in range(count):
        if block not in kinds:
            raise CheckpointError(f"{prefix}.{block} has no weights: not a UNet with residual up/downsampling "
                                  "(resblock_updown), as the released models are")
    return [[kinds[block][sub] for sub in sorted(kinds[block])] for block in range(count)]


def read_architecture(shapes: Mapping[str, Sequence[int]]) -> UNetArchitecture:
    """The architecture of a ``cm/unet.py`` state dict, from its keys and shapes (``{key: shape}``).

    The layout (cm/unet.py ``UNetModel.__init__``): ``input_blocks.0`` is the input convolution;
    each level has ``num_res_blocks`` blocks ``[ResBlock(, AttentionBlock)]`` and, but the last, one
    downsampling ``[ResBlock]``; ``output_blocks`` mirror them with ``num_res_blocks + 1`` blocks per
    level, the last of each level but level 0 ending with an upsampling ``ResBlock``.
    Raises ``CheckpointError`` when the keys do not have that layout.
    """
    for key in ("time_embed.0.weight", "input_blocks.0.0.weight", "middle_block.0.in_layers.2.weight", "out.2.weight"):
        _shape(shapes, key)
    inputs, outputs = _layouts(shapes, "input_blocks"), _layouts(shapes, "output_blocks")
    if inputs[0] != [OTHER]:
        raise CheckpointError("input_blocks.0 is not the input convolution: not an OpenAI consistency-model UNet")
    if any(OTHER in layout for layout in inputs[1:] + outputs):
        raise CheckpointError("convolution up/downsampling layers found: only UNets with residual up/downsampling "
                              "(resblock_updown), as the released models, are supported")
    num_levels = 1 + sum(len(layout) > 1 and layout[-1] == RES for layout in outputs)
    per_level = len(outputs) // num_levels
    num_res_blocks = per_level - 1
    if (len(outputs) % num_levels or num_res_blocks < 1
            or len(inputs) != 1 + num_levels * num_res_blocks + num_levels - 1):
        raise CheckpointError(f"{len(inputs)} input blocks and {len(outputs)} output blocks do not form "
                              f"a UNet of {num_levels} levels")

    attention, channels, block = [], [], 1
    for level in range(num_levels):
        level_layouts = inputs[block:block + num_res_blocks]
        if any(layout not in ([RES], [RES, ATTN]) for layout in level_layouts) or len(
                {len(layout) for layout in level_layouts}) != 1:
            raise CheckpointError(f"input_blocks.{block}-{block + num_res_blocks - 1} (level {level}) are not "
                                  "all ResBlocks, or all ResBlocks with attention")
        attention.append(level_layouts[0] == [RES, ATTN])
        channels.append(_shape(shapes, f"input_blocks.{block}.0.in_layers.2.weight")[0])
        block += num_res_blocks
        if level < num_levels - 1:
            if inputs[block] != [RES]:
                raise CheckpointError(f"input_blocks.{block} is not a downsampling ResBlock")
            block += 1
    for index, layout in enumerate(outputs):
        level = num_levels - 1 - index // per_level
        expected = [RES] + [ATTN] * attention[level] + [RES] * (index % per_level == num_res_blocks and level > 0)
        if layout != expected:
            raise CheckpointError(f"output_blocks.{index} holds {' + '.join(layout)}, expected "
                                  f"{' + '.join(expected)} for the input blocks' layout")

    middle = _shape(shapes, "middle_block.0.in_layers.2.weight")[0]
    emb_out = _shape(shapes, "middle_block.0.emb_layers.1.weight")[0]
    if emb_out not in (middle, 2 * middle):
        raise CheckpointError(f"middle_block.0.emb_layers.1.weight has {emb_out} outputs for {middle} channels")
    conv_in = _shape(shapes, "input_blocks.0.0.weight")
    if len(conv_in) != 4:
        raise CheckpointError(f"input_blocks.0.0.weight has shape {conv_in}, expected a 2-d convolution")
    return UNetArchitecture(
        in_channels=conv_in[1],
        out_channels=_shape(shapes, "out.2.weight")[0],
        model_channels=_shape(shapes, "time_embed.0.weight")[-1],
        block_channels=tuple(channels),
        num_res_blocks=num_res_blocks,
        attention_levels=tuple(attention),
        num_classes=_shape(shapes, "label_emb.weight")[0] if "label_emb.weight" in shapes else None,
        use_scale_shift_norm=emb_out == 2 * middle,
    )


def unet_config(arch: UNetArchitecture, sample_size: int, num_head_channels: int) -> dict:
    """The ``UNet2DModel`` config of the same network (as the ``openai/diffusers-*`` conversions)."""
    for level, has_attention in enumerate(arch.attention_levels):
        if has_attention and arch.block_channels[level] % num_head_channels:
            raise CheckpointError(f"{arch.block_channels[level]} channels at level {level} do not split into "
                                  f"heads of {num_head_channels} channels: pass the right num_head_channels")
    if arch.block_channels[-1] % num_head_channels:
        raise CheckpointError(f"{arch.block_channels[-1]} channels of the middle block do not split into heads of "
                              f"{num_head_channels} channels: pass the right num_head_channels")
    if any(c % GROUPS for c in arch.block_channels):
        raise CheckpointError(f"channels {arch.block_channels} are not multiples of {GROUPS} (group normalization)")
    if arch.out_channels != arch.in_channels:
        raise CheckpointError(f"{arch.out_channels} output channels for {arch.in_channels} input channels: "
                              "a diffusion model with learned variance, not a consistency model")
    return {
        "sample_size": sample_size,
        "in_channels": arch.in_channels,
        "out_channels": arch.out_channels,
        "block_out_channels": list(arch.block_channels),
        "layers_per_block": arch.num_res_blocks,
        "down_block_types": ["AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in arch.attention_levels],
        "up_block_types": ["AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in arch.attention_levels][::-1],
        "downsample_type": "resnet",
        "upsample_type": "resnet",
        "attention_head_dim": num_head_channels,
        "norm_num_groups": GROUPS,
        "attn_norm_num_groups": GROUPS,  # else the middle attention of a scale-shift UNet has no norm
        "norm_eps": 1e-5,
        "resnet_time_scale_shift": "scale_shift" if arch.use_scale_shift_norm else "default",
        "num_class_embeds": arch.num_classes,
        "time_embedding_type": "positional",
        "flip_sin_to_cos": True,  # timestep_embedding(): [cos, sin]
        "freq_shift": 0,
    }


def _as_linear(weight: torch.Tensor, key: str) -> torch.Tensor:
    """A 1x1 convolution's weight ``(out, in, 1[, 1])`` as a linear layer's ``(out, in)``."""
    if weight.ndim not in (2, 3, 4) or any(size != 1 for size in weight.shape[2:]):
        raise CheckpointError(f"{key} has shape {tuple(weight.shape)}, expected a 1x1 convolution")
    return weight.reshape(weight.shape[0], weight.shape[1])


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], arch: UNetArchitecture
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state_dict`` renamed for ``UNet2DModel(**unet_config(arch, ...))``, and each new key's original key.

    Every original weight must be used exactly once; shapes are checked against the model by the caller.
    """
    new: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}

    def need(old: str) -> torch.Tensor:
        if old not in state_dict:
            raise CheckpointError(f"no weight {old!r}: not an OpenAI consistency-model UNet checkpoint")
        return state_dict[old]

    def take(old: str, new_key: str, tensor: torch.Tensor | None = None) -> None:
        new[new_key] = need(old) if tensor is None else tensor
        origin[new_key] = old

    def resnet(old: str, new_prefix: str) -> None:
        for old_name, new_name in RESNET_KEYS.items():
            for kind in ("weight", "bias"):
                take(f"{old}.{old_name}.{kind}", f"{new_prefix}.{new_name}.{kind}")
        if f"{old}.skip_connection.weight" in state_dict:  # a 1x1 convolution where the channels change
            for kind in ("weight", "bias"):
                take(f"{old}.skip_connection.{kind}", f"{new_prefix}.conv_shortcut.{kind}")

    def attention(old: str, new_prefix: str) -> None:
        take(f"{old}.norm.weight", f"{new_prefix}.group_norm.weight")
        take(f"{old}.norm.bias", f"{new_prefix}.group_norm.bias")
        # QKVFlashAttention splits qkv as (three, heads, channels): q, k, v are the three thirds.
        qkv_weight = _as_linear(need(f"{old}.qkv.weight"), f"{old}.qkv.weight")
        qkv_bias = need(f"{old}.qkv.bias")
        if qkv_weight.shape[0] % 3 or tuple(qkv_bias.shape) != (qkv_weight.shape[0],):
            raise CheckpointError(f"{old}.qkv has shapes {tuple(qkv_weight.shape)} and {tuple(qkv_bias.shape)}, "
                                  "expected (3C, C) and (3C,)")
        for name, weight, bias in zip(("to_q", "to_k", "to_v"), qkv_weight.chunk(3), qkv_bias.chunk(3)):
            take(f"{old}.qkv.weight", f"{new_prefix}.{name}.weight", weight)
            take(f"{old}.qkv.bias", f"{new_prefix}.{name}.bias", bias)
        proj_weight = _as_linear(need(f"{old}.proj_out.weight"), f"{old}.proj_out.weight")
        take(f"{old}.proj_out.weight", f"{new_prefix}.to_out.0.weight", proj_weight)
        take(f"{old}.proj_out.bias", f"{new_prefix}.to_out.0.bias")

    for old, new_key in (("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
                         ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out")):
        take(f"{old}.weight", f"{new_key}.weight")
        take(f"{old}.bias", f"{new_key}.bias")
    if arch.num_classes is not None:
        take("label_emb.weight", "class_embedding.weight")

    levels, blocks = len(arch.block_channels), 1
    for level in range(levels):
        for j in range(arch.num_res_blocks):
            resnet(f"input_blocks.{blocks}.0", f"down_blocks.{level}.resnets.{j}")
            if arch.attention_levels[level]:
                attention(f"input_blocks.{blocks}.1", f"down_blocks.{level}.attentions.{j}")
            blocks += 1
        if level < levels - 1:
            resnet(f"input_blocks.{blocks}.0", f"down_blocks.{level}.downsamplers.0")
            blocks += 1

    resnet("middle_block.0", "mid_block.resnets.0")
    attention("middle_block.1", "mid_block.attentions.0")
    resnet("middle_block.2", "mid_block.resnets.1")

    blocks = 0
    for up, level in enumerate(reversed(range(levels))):
        has_attention = arch.attention_levels[level]
        for j in range(arch.num_res_blocks + 1):
            resnet(f"output_blocks.{blocks}.0", f"up_blocks.{up}.resnets.{j}")
            if has_attention:
                attention(f"output_blocks.{blocks}.1", f"up_blocks.{up}.attentions.{j}")
            if j == arch.num_res_blocks and level > 0:
                resnet(f"output_blocks.{blocks}.{2 if has_attention else 1}", f"up_blocks.{up}.upsamplers.0")
            blocks += 1

    unused = sorted(set(state_dict) - set(origin.values()))
    if unused:
        raise CheckpointError(f"unexpected weight {unused[0]!r} ({len(unused)} in all): not the layout of an "
                              "OpenAI consistency-model UNet")
    return new, origin
