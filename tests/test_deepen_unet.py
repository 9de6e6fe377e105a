"""``deepen_unet`` and ``scripts/deepen_unet.py``: one more layer per block, the same function."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

from cmedit import ConsistencyEditPipeline, load_pipeline
from cmedit.training.model import deepen_unet, make_preset
from conftest import run_script, tiny_scheduler, tiny_unet

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "deepen_unet.py"


def randomised(unet: UNet2DModel, seed: int = 0) -> UNet2DModel:
    """Every tensor random (a fresh UNet zeroes some), so that no layer's contribution can hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return unet.eval()


@pytest.mark.parametrize("unet", [
    pytest.param(lambda: randomised(tiny_unet()), id="tiny, attention at the low level"),
    pytest.param(lambda: randomised(tiny_unet(num_class_embeds=5)), id="class-conditional"),
    pytest.param(lambda: randomised(UNet2DModel(
        sample_size=16, block_out_channels=(8, 16, 16), layers_per_block=2, norm_num_groups=4, attention_head_dim=8,
        down_block_types=("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"))), id="two layers, attention at 0 and 2"),
    pytest.param(lambda: randomised(UNet2DModel(
        sample_size=16, block_out_channels=(16, 16), layers_per_block=1, norm_num_groups=4, attention_head_dim=8,
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"))), id="resnet up- and downsampling, as OpenAI's"),
])
def test_deepened_unet_computes_the_same_function(unet):
    unet = unet()
    deep = deepen_unet(unet).eval()
    assert deep.config.layers_per_block == unet.config.layers_per_block + 1
    assert all(len(b.resnets) == deep.config.layers_per_block for b in deep.down_blocks)
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in unet.parameters())
    x = torch.randn(3, 3, unet.config.sample_size, unet.config.sample_size, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([-400.0, 10.0, 1000.0])
    labels = None if unet.config.num_class_embeds is None else torch.tensor([0, 3, 4])
    with torch.no_grad():
        want = unet(x, t, class_labels=labels).sample
        got = deep(x, t, class_labels=labels).sample
    assert want.abs().mean() > 0.01
    torch.testing.assert_close(got, want, atol=1e-5 * want.abs().max().item(), rtol=1e-5)


def test_new_layers_learn():
    deep = deepen_unet(randomised(tiny_unet())).train()
    x = torch.randn(2, 3, 16, 16)
    deep(x, torch.tensor([5.0, 50.0])).sample.square().mean().backward()
    # The zeroed last convolutions of the new identity layers get gradients, so training moves them.
    assert deep.down_blocks[0].resnets[1].conv2.weight.grad.abs().sum() > 0
    assert deep.up_blocks[0].resnets[1].conv2.weight.grad.abs().sum() > 0
    assert deep.up_blocks[0].attentions[1].to_out[0].weight.grad.abs().sum() > 0


def test_skip_blocks_are_refused():
    unet = UNet2DModel(sample_size=16, block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=4,
                       attention_head_dim=8, down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
                       up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"))
    with pytest.raises(ValueError, match="cannot deepen"):
        deepen_unet(unet)


def test_small_preset_deepens_to_base():
    deep, base = deepen_unet(make_preset("small")), make_preset("base")
    deep.load_state_dict(base.state_dict())  # the same tensor names and shapes
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        assert list(deep.config[key]) == list(base.config[key]), key
    for key in ("layers_per_block", "norm_num_groups", "attention_head_dim"):
        assert deep.config[key] == base.config[key], key


def run(*args) -> subprocess.CompletedProcess:
    return run_script(SCRIPT, *args)


def test_script_writes_a_loadable_deeper_folder_and_refuses_to_overwrite(tmp_path):
    src = tmp_path / "model"
    ConsistencyEditPipeline(unet=tiny_unet(), scheduler=tiny_scheduler()).save_pretrained(src)
    (src / "cmedit.json").write_text('{"edit_timesteps": [30, 20]}')
    out = tmp_path / "deep"
    result = run(src, "-o", out)
    assert result.returncode == 0, result.stderr
    pipe = load_pipeline(str(out))
    assert pipe.unet.config.layers_per_block == 2
    assert (out / "cmedit.json").read_text() == (src / "cmedit.json").read_text()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        want = tiny_unet()(x, 7.0).sample
        torch.testing.assert_close(pipe.unet(x, 7.0).sample, want, atol=1e-5 * want.abs().max().item(), rtol=1e-5)

    before = (out / "unet" / "config.json").read_text()
    result = run(out, "-o", out)
    assert result.returncode != 0 and "--overwrite" in result.stderr and "Traceback" not in result.stderr
    assert (out / "unet" / "config.json").read_text() == before
    result = run(tmp_path / "missing", "-o", tmp_path / "x")
    assert result.returncode != 0 and "not found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()
