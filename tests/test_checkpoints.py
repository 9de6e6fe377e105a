"""Original OpenAI consistency-model checkpoints: reading them safely and converting them to diffusers.

The checkpoints here are built in the test with the key names and shapes of openai/consistency_models
``cm/unet.py`` (``UNetModel`` with ``resblock_updown=True``, as every released model), at a small width
and with random weights. The converted ``UNet2DModel`` is checked against ``reference_forward``, a
re-implementation of the original UNet's forward pass written here from ``cm/unet.py`` and ``cm/nn.py``,
which reads the original state dict directly (nothing of cmedit's conversion is used by it).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from diffusers import ConsistencyModelPipeline, UNet2DModel

from cmedit import ConsistencyEditPipeline, load_pipeline
from cmedit.models.openai_keys import read_architecture, unet_config
from cmedit.models.openai_checkpoints import (CheckpointError, convert_checkpoint, load_checkpoint, matches_family,
                                read_state_dict, unet_from_state_dict)
from cmedit.cli import main
from cmedit.models.loading import ModelLoadError
from cmedit.models.presets import IMAGENET64, LSUN256

# Two small UNets shaped like the released families: ImageNet-64 (class-conditional, scale-shift
# norm, attention below the top level) and LSUN-256 (unconditional, attention at the bottom only).
IMAGENET_LIKE = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=2, attention_ds=(2,),
                     num_classes=10, use_scale_shift_norm=True)
LSUN_LIKE = dict(model_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1, attention_ds=(4,),
                 num_classes=None, use_scale_shift_norm=False)
HEAD_CHANNELS = 16  # 2 to 4 heads per attention layer, so that the head order matters
SIZE = 16


# ----------------------------------------------------------------- the original format, built in the test

def openai_layout(model_channels, channel_mult, num_res_blocks, attention_ds, in_channels=3, out_channels=3):
    """The layers of cm/unet.py ``UNetModel.__init__`` (resblock_updown=True), as specs per block.

    Specs: ``("conv", in, out)``, ``("res", in, out, None | "down" | "up")``, ``("attn", channels)``.
    """
    ch = input_ch = channel_mult[0] * model_channels
    inputs, chans, ds = [[("conv", in_channels, ch)]], [ch], 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers = [("res", ch, mult * model_channels, None)]
            ch = mult * model_channels
            if ds in attention_ds:
                layers.append(("attn", ch))
            inputs.append(layers)
            chans.append(ch)
        if level != len(channel_mult) - 1:
            inputs.append([("res", ch, ch, "down")])
            chans.append(ch)
            ds *= 2
    middle = [("res", ch, ch, None), ("attn", ch), ("res", ch, ch, None)]
    outputs = []
    for level, mult in list(enumerate(channel_mult))[::-1]:
        for i in range(num_res_blocks + 1):
            layers = [("res", ch + chans.pop(), model_channels * mult, None)]
            ch = model_channels * mult
            if ds in attention_ds:
                layers.append(("attn", ch))
            if level and i == num_res_blocks:
                layers.append(("res", ch, ch, "up"))
                ds //= 2
            outputs.append(layers)
    return {"inputs": inputs, "middle": middle, "outputs": outputs, "out": (ch, input_ch, out_channels)}


def openai_state_dict(model_channels, channel_mult, num_res_blocks, attention_ds, num_classes, use_scale_shift_norm,
                      attention_conv_dims=2, seed=0, device="cpu"):
    """Random weights with the keys and shapes of a cm/unet.py state dict, and the layout they follow."""
    layout = openai_layout(model_channels, channel_mult, num_res_blocks, attention_ds)
    generator = torch.Generator().manual_seed(seed)
    emb = 4 * model_channels
    shapes = {"time_embed.0.weight": (emb, model_channels), "time_embed.0.bias": (emb,),
              "time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,)}
    if num_classes is not None:
        shapes["label_emb.weight"] = (num_classes, emb)
    one_by_one = (1,) * attention_conv_dims

    def add(prefix, spec):
        if spec[0] == "conv":
            shapes.update({f"{prefix}.weight": (spec[2], spec[1], 3, 3), f"{prefix}.bias": (spec[2],)})
        elif spec[0] == "res":
            i, o = spec[1], spec[2]
            shapes.update({
                f"{prefix}.in_layers.0.weight": (i,), f"{prefix}.in_layers.0.bias": (i,),
                f"{prefix}.in_layers.2.weight": (o, i, 3, 3), f"{prefix}.in_layers.2.bias": (o,),
                f"{prefix}.emb_layers.1.weight": ((2 if use_scale_shift_norm else 1) * o, emb),
                f"{prefix}.emb_layers.1.bias": ((2 if use_scale_shift_norm else 1) * o,),
                f"{prefix}.out_layers.0.weight": (o,), f"{prefix}.out_layers.0.bias": (o,),
                f"{prefix}.out_layers.3.weight": (o, o, 3, 3), f"{prefix}.out_layers.3.bias": (o,)})
            if i != o:
                shapes.update({f"{prefix}.skip_connection.weight": (o, i, 1, 1),
                               f"{prefix}.skip_connection.bias": (o,)})
        else:
            c = spec[1]
            shapes.update({f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,),
                           f"{prefix}.qkv.weight": (3 * c, c, *one_by_one), f"{prefix}.qkv.bias": (3 * c,),
                           f"{prefix}.proj_out.weight": (c, c, *one_by_one), f"{prefix}.proj_out.bias": (c,)})

    for n, layers in enumerate(layout["inputs"]):
        for m, spec in enumerate(layers):
            add(f"input_blocks.{n}.{m}", spec)
    for m, spec in enumerate(layout["middle"]):
        add(f"middle_block.{m}", spec)
    for n, layers in enumerate(layout["outputs"]):
        for m, spec in enumerate(layers):
            add(f"output_blocks.{n}.{m}", spec)
    ch, input_ch, out_channels = layout["out"]
    shapes.update({"out.0.weight": (ch,), "out.0.bias": (ch,), "out.2.weight": (out_channels, input_ch, 3, 3),
                   "out.2.bias": (out_channels,)})

    if device == "meta":
        return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}, layout
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        if key.endswith("bias"):
            state[key] = 0.1 * noise
        elif len(shape) == 1:  # group-norm gains
            state[key] = 1 + 0.1 * noise
        elif key == "label_emb.weight":
            state[key] = noise
        else:  # unlike zero_module() in cm/unet.py, nothing is zero, so that every weight matters
            state[key] = noise / math.sqrt(math.prod(shape[1:]))
    return state, layout


# ----------------------------------------------------------------- the oracle: the original forward pass

def reference_forward(sd, layout, x, t, y, head_channels, scale_shift):
    """cm/unet.py ``UNetModel.forward`` on state dict ``sd`` (cm/nn.py ``timestep_embedding``, GroupNorm32)."""
    def norm(h, p):
        return F.group_norm(h, 32, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-5)

    def conv(h, p, padding=1):
        w = sd[f"{p}.weight"]
        return F.conv2d(h, w.reshape(w.shape[0], w.shape[1], *w.shape[2:], *(1,) * (4 - w.ndim)),
                        sd[f"{p}.bias"], padding=padding)

    def res(h, p, updown):
        x_in = h
        h = F.silu(norm(h, f"{p}.in_layers.0"))
        if updown == "down":
            h, x_in = F.avg_pool2d(h, 2), F.avg_pool2d(x_in, 2)
        elif updown == "up":
            h, x_in = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x_in, scale_factor=2, mode="nearest")
        h = conv(h, f"{p}.in_layers.2")
        e = F.linear(F.silu(emb), sd[f"{p}.emb_layers.1.weight"], sd[f"{p}.emb_layers.1.bias"])[..., None, None]
        if scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = norm(h, f"{p}.out_layers.0") * (1 + scale) + shift
        else:
            h = norm(h + e, f"{p}.out_layers.0")
        h = conv(F.silu(h), f"{p}.out_layers.3")
        skip = conv(x_in, f"{p}.skip_connection", padding=0) if f"{p}.skip_connection.weight" in sd else x_in
        return skip + h

    def attention(h, p):
        b, c, height, width = h.shape
        heads = c // head_channels
        qkv = conv(norm(h, f"{p}.norm"), f"{p}.qkv", padding=0).reshape(b, 3, heads, head_channels, height * width)
        q, k, v = qkv.unbind(1)  # QKVFlashAttention: "b (three h d) s"
        weight = torch.softmax(torch.einsum("bhdt,bhds->bhts", q, k) / math.sqrt(head_channels), dim=-1)
        a = torch.einsum("bhts,bhds->bhdt", weight, v).reshape(b, c, height, width)
        return h + conv(a, f"{p}.proj_out", padding=0)

    def block(h, p, layers):
        for m, spec in enumerate(layers):
            h = conv(h, f"{p}.{m}") if spec[0] == "conv" else (
                res(h, f"{p}.{m}", spec[3]) if spec[0] == "res" else attention(h, f"{p}.{m}"))
        return h

    half = sd["time_embed.0.weight"].shape[1] // 2  # in float32, as cm/nn.py computes it
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(x.dtype)
    emb = F.linear(F.silu(F.linear(emb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])),
                   sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    if y is not None:
        emb = emb + sd["label_emb.weight"][y]
    hs, h = [], x
    for n, layers in enumerate(layout["inputs"]):
        h = block(h, f"input_blocks.{n}", layers)
        hs.append(h)
    h = block(h, "middle_block", layout["middle"])
    for n, layers in enumerate(layout["outputs"]):
        h = block(torch.cat([h, hs.pop()], dim=1), f"output_blocks.{n}", layers)
    return conv(F.silu(norm(h, "out.0")), "out.2")


# ----------------------------------------------------------------- conversion against the oracle

@pytest.mark.parametrize("params, conv_dims", [(IMAGENET_LIKE, 2), (LSUN_LIKE, 2), (IMAGENET_LIKE, 1)],
                         ids=["imagenet-like", "lsun-like", "conv1d-attention"])
def test_converted_unet_matches_the_original_forward(params, conv_dims):
    state, layout = openai_state_dict(**params, attention_conv_dims=conv_dims)
    unet = unet_from_state_dict(state, sample_size=SIZE, num_head_channels=HEAD_CHANNELS).double()
    state64 = {key: value.double() for key, value in state.items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    # c_noise = 250 ln(sigma) for sigma in [0.002, 80] (docs/design.md, section 1)
    t = 250 * torch.log(torch.tensor([0.002, 0.7, 80.0], dtype=torch.float64))
    y = torch.tensor([0, 3, 9]) if params["num_classes"] else None
    with torch.no_grad():
        ours = unet(x, t, class_labels=y).sample
        reference = reference_forward(state64, layout, x, t, y, HEAD_CHANNELS, params["use_scale_shift_norm"])
    assert reference.abs().mean() > 0.1  # the network's output is not negligible
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9)
    # the oracle is sensitive to the details the conversion must get right: here, the head order
    with torch.no_grad():
        wrong = reference_forward(state64, layout, x, t, y, 2 * HEAD_CHANNELS, params["use_scale_shift_norm"])
    assert (wrong - reference).abs().max() > 1e-4


def test_architecture_is_read_from_the_weights():
    state, _ = openai_state_dict(**IMAGENET_LIKE)
    arch = read_architecture({k: v.shape for k, v in state.items()})
    assert (arch.block_channels, arch.num_res_blocks, arch.attention_levels) == ((32, 64), 2, (False, True))
    assert (arch.num_classes, arch.use_scale_shift_norm, arch.model_channels, arch.in_channels) == (10, True, 32, 3)
    state, _ = openai_state_dict(**LSUN_LIKE)
    arch = read_architecture({k: v.shape for k, v in state.items()})
    assert (arch.block_channels, arch.num_res_blocks, arch.attention_levels) == ((32, 32, 64), 1, (False, False, True))
    assert (arch.num_classes, arch.use_scale_shift_norm) == (None, False)


@pytest.mark.parametrize("family, expected", [
    (IMAGENET64, {"block_out_channels": [192, 384, 576, 768], "layers_per_block": 3, "num_class_embeds": 1000,
                  "resnet_time_scale_shift": "scale_shift", "sample_size": 64,
                  "down_block_types": ["ResnetDownsampleBlock2D"] + ["AttnDownBlock2D"] * 3}),
    (LSUN256, {"block_out_channels": [256, 256, 512, 512, 1024, 1024], "layers_per_block": 2,
               "num_class_embeds": None, "resnet_time_scale_shift": "default", "sample_size": 256,
               "down_block_types": ["ResnetDownsampleBlock2D"] * 3 + ["AttnDownBlock2D"] * 3}),
], ids=["imagenet64", "lsun256"])
def test_released_architectures_at_full_size(family, expected):
    """The full-size layouts (shapes only, on the meta device) are recognised and fit UNet2DModel exactly."""
    state, _ = openai_state_dict(family.model_channels, family.channel_mult, family.num_res_blocks,
                                 tuple(family.resolution // r for r in family.attention_resolutions),
                                 family.num_classes, family.use_scale_shift_norm, device="meta")
    arch = read_architecture({k: v.shape for k, v in state.items()})
    assert matches_family(arch, family) and not matches_family(arch, LSUN256 if family is IMAGENET64 else IMAGENET64)
    config = unet_config(arch, family.resolution, family.num_head_channels)
    assert {key: config[key] for key in expected} == expected
    assert config["attention_head_dim"] == 64
    unet = unet_from_state_dict(state, family.resolution, family.num_head_channels)  # every key and shape fits
    assert sum(p.numel() for p in unet.parameters()) == sum(v.numel() for v in state.values())


# ----------------------------------------------------------------- files: round trips

def save_checkpoint(tmp_path, name="tiny.pt", params=IMAGENET_LIKE, **kwargs):
    state, layout = openai_state_dict(**params, **kwargs)
    path = tmp_path / name
    torch.save(state, path)
    return path, state, layout


def test_convert_round_trip_through_save_pretrained_and_diffusers(tmp_path):
    path, state, layout = save_checkpoint(tmp_path)
    convert_checkpoint(path, tmp_path / "out", resolution=SIZE, num_head_channels=HEAD_CHANNELS,
                       num_train_timesteps=40)
    assert json.loads((tmp_path / "out" / "model_index.json").read_text())["_class_name"] == "ConsistencyModelPipeline"
    assert (tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    ours = load_pipeline(tmp_path / "out")
    theirs = ConsistencyModelPipeline.from_pretrained(tmp_path / "out")
    assert isinstance(theirs.unet, UNet2DModel) and theirs.scheduler.config.num_train_timesteps == 40
    # the saved UNet is the original network
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([-100.0, 500.0]), torch.tensor([1, 7])
    with torch.no_grad():
        reference = reference_forward(state, layout, x, t, y, HEAD_CHANNELS, True)
        torch.testing.assert_close(theirs.unet(x, t, class_labels=y).sample, reference, rtol=1e-4, atol=1e-4)
    # diffusers' pipeline and cmedit's sample the same images from the converted folder
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=2, class_labels=[3, 4], num_inference_steps=None, timesteps=[22, 0], output_type="np")
    a = ours.generate(generator=torch.Generator().manual_seed(3), **kwargs).images
    b = theirs(generator=torch.Generator().manual_seed(3), **kwargs).images
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_pt_file_loads_in_memory_like_its_converted_folder(tmp_path):
    path, _, _ = save_checkpoint(tmp_path, params=LSUN_LIKE)
    in_memory = load_checkpoint(path, resolution=SIZE, num_head_channels=HEAD_CHANNELS, num_train_timesteps=151)
    convert_checkpoint(path, tmp_path / "out", resolution=SIZE, num_head_channels=HEAD_CHANNELS,
                       num_train_timesteps=151)
    saved = ConsistencyEditPipeline.from_pretrained(tmp_path / "out")
    assert saved.scheduler.config.num_train_timesteps == in_memory.scheduler.config.num_train_timesteps == 151
    for key, value in in_memory.unet.state_dict().items():
        assert torch.equal(value, saved.unet.state_dict()[key]), key


def test_the_preset_named_by_the_file_must_fit_the_weights(tmp_path, caplog):
    path, _, _ = save_checkpoint(tmp_path, name="ct_cat256.pt")
    with pytest.raises(CheckpointError, match="the weights are not those of ct_imagenet64"):
        load_checkpoint(path, preset="ct_imagenet64")
    with pytest.raises(CheckpointError, match="give resolution and num_head_channels"):
        load_checkpoint(path)  # the name is ignored (with a warning): a tiny model is no released one
    assert "ignoring the name" in caplog.text
    pipe = load_checkpoint(path, resolution=SIZE, num_head_channels=HEAD_CHANNELS)
    assert pipe.scheduler.config.num_train_timesteps == 40 and "num_train_timesteps=40" in caplog.text


# ----------------------------------------------------------------- untrusted and broken files

class RunsCode:
    """Unpickling this creates a file: a stand-in for any code a malicious checkpoint would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path, zip_format):
    marker = tmp_path / "code_ran"
    state, _ = openai_state_dict(**LSUN_LIKE)
    path = tmp_path / "evil.pt"
    torch.save({**state, "extra": RunsCode(marker)}, path, _use_new_zipfile_serialization=zip_format)
    marker.unlink(missing_ok=True)  # (pickling the stand-in does not call it; be sure all the same)

    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    with pytest.raises(ModelLoadError, match="refused"):
        load_pipeline(path)
    result = CliRunner().invoke(main, ["convert", str(path), str(tmp_path / "out")])
    assert result.exit_code == 1 and "refused" in result.output and "Traceback" not in result.output
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    # the payload is real: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_truncated_and_foreign_files_give_one_clear_line(tmp_path):
    path, _, _ = save_checkpoint(tmp_path)
    data = path.read_bytes()
    cases = {"truncated.pt": data[: len(data) // 2], "empty.pt": b"", "text.pt": b"hello, I am not weights\n",
             "junk.pt": b"notatorch"}  # junk that the unpickler reads as an unsupported opcode, not a global
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as info:
            read_state_dict(tmp_path / name)
        assert "\n" not in str(info.value)
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state dict of named tensors"):
        read_state_dict(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_state_dict(tmp_path / "missing.pt")


def broken(change):
    state, _ = openai_state_dict(**IMAGENET_LIKE)
    change(state)
    return state


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("time_embed.0.weight"), "no weight 'time_embed.0.weight'"),
    (lambda s: s.pop("output_blocks.2.1.qkv.bias"), "no weight 'output_blocks.2.1.qkv.bias'"),
    (lambda s: s.pop("input_blocks.1.0.out_layers.3.weight"), "no weight 'input_blocks.1.0.out_layers.3.weight'"),
    (lambda s: s.update({"ema.step": torch.zeros(1)}), "unexpected weight 'ema.step'"),
    (lambda s: s.update({"input_blocks.1.0.out_layers.3.weight": torch.zeros(32, 32, 1, 1)}),
     "input_blocks.1.0.out_layers.3.weight has shape (32, 32, 1, 1)"),
    (lambda s: s.update({"middle_block.1.qkv.weight": torch.zeros(192, 64, 3, 3)}), "expected a 1x1 convolution"),
    (lambda s: s.update({"label_emb.weight": torch.zeros(10, 64)}), "label_emb.weight has shape (10, 64)"),
    (lambda s: s.update({"out.2.weight": torch.zeros(6, 32, 3, 3), "out.2.bias": torch.zeros(6)}),
     "learned variance"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("input_blocks.3.")], "input_blocks.3 has no weights"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("output_blocks.2.2.")],
     "are not all ResBlocks"),  # without its upsampler the UNet reads as one level of 5 blocks
], ids=["missing-time-embed", "missing-qkv-bias", "missing-conv", "extra-key", "wrong-conv-shape",
        "qkv-not-1x1", "wrong-label-emb", "learned-sigma", "missing-block", "missing-upsampler"])
def test_wrong_keys_and_shapes_are_refused_with_one_line(tmp_path, change, message):
    torch.save(broken(change), tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_checkpoint(tmp_path / "bad.pt", resolution=SIZE, num_head_channels=HEAD_CHANNELS)
    assert "\n" not in str(info.value) and str(tmp_path / "bad.pt") in str(info.value)


def test_a_diffusers_state_dict_is_not_taken_for_an_original_checkpoint(tmp_path):
    from conftest import tiny_unet

    torch.save(tiny_unet().state_dict(), tmp_path / "diffusers.pt")
    with pytest.raises(CheckpointError, match="not an OpenAI consistency-model UNet"):
        load_checkpoint(tmp_path / "diffusers.pt", resolution=SIZE, num_head_channels=8)


# ----------------------------------------------------------------- the convert command

def test_convert_command(tmp_path):
    path, _, _ = save_checkpoint(tmp_path)
    args = ["convert", str(path), str(tmp_path / "out"), "--resolution", str(SIZE),
            "--num-head-channels", str(HEAD_CHANNELS), "--num-train-timesteps", "201"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "16x16, 10 classes" in result.output and "201 timesteps" in result.output
    pipe = load_pipeline(tmp_path / "out")
    assert pipe.unet.config.num_class_embeds == 10 and pipe.scheduler.config.num_train_timesteps == 201
    result = CliRunner().invoke(main, args)  # the folder is not empty now
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert CliRunner().invoke(main, [*args, "--overwrite", "-q"]).exit_code == 0
    result = CliRunner().invoke(main, ["convert", str(path), str(tmp_path / "out2")])
    assert result.exit_code == 1 and "give resolution and num_head_channels" in result.output
    assert "Traceback" not in result.output


def test_convert_help_lists_the_released_models():
    result = CliRunner().invoke(main, ["convert", "--help"])
    assert result.exit_code == 0
    for name in ("cd_imagenet64_l2", "ct_imagenet64", "cd_bedroom256_lpips", "ct_cat256"):
        assert name in result.output
