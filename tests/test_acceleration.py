"""Speed without changing results: ``accelerate_pipeline`` and the once-per-edit work of the sampling loop."""

from __future__ import annotations

import pytest
import torch
from diffusers import ConsistencyModelPipeline

from cmedit import (Colorization, ConsistencyEditPipeline, Inpainting, MaskedProjectionScheduler, PatchOperator,
                    SuperResolution, compose)
from cmedit.models.acceleration import accelerate_pipeline
from conftest import RESOLUTION, tiny_scheduler, tiny_unet


def seed(n=0):
    return torch.Generator().manual_seed(n)


def test_channels_last_changes_the_memory_format_not_the_results(pipe):
    reference = pipe.inpaint(torch.rand(2, 3, RESOLUTION, RESOLUTION, generator=seed(1)),
                             torch.ones(RESOLUTION, RESOLUTION), num_inference_steps=2, generator=seed(),
                             output_type="pt").images
    generated = pipe.generate(batch_size=2, num_inference_steps=2, generator=seed(), output_type="pt").images
    assert accelerate_pipeline(pipe, channels_last=True) is pipe
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not pipe.unet.conv_in.weight.is_contiguous()
    again = pipe.inpaint(torch.rand(2, 3, RESOLUTION, RESOLUTION, generator=seed(1)),
                         torch.ones(RESOLUTION, RESOLUTION), num_inference_steps=2, generator=seed(),
                         output_type="pt").images
    assert torch.allclose(again, reference, atol=1e-4)
    assert torch.allclose(pipe.generate(batch_size=2, num_inference_steps=2, generator=seed(),
                                        output_type="pt").images, generated, atol=1e-4)


def test_channels_last_generation_still_matches_diffusers():
    unet = tiny_unet()
    theirs = ConsistencyModelPipeline(unet=tiny_unet(), scheduler=tiny_scheduler())
    ours = accelerate_pipeline(ConsistencyEditPipeline(unet=unet, scheduler=tiny_scheduler()), channels_last=True)
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    a = ours.generate(batch_size=2, num_inference_steps=None, timesteps=[22, 0], generator=seed(3),
                      output_type="np").images
    b = theirs(batch_size=2, num_inference_steps=None, timesteps=[22, 0], generator=seed(3), output_type="np").images
    assert abs(a - b).max() < 1e-4  # float rounding only: far below one 8-bit level


def test_compile_compiles_the_unet_in_place(pipe, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: calls.append((self, kwargs)))
    unet = pipe.unet
    accelerate_pipeline(pipe, compile=True, compile_mode="max-autotune")
    assert calls == [(unet, {"mode": "max-autotune"})]
    assert pipe.unet is unet  # still the UNet2DModel: config, save_pretrained and .to() keep working


@pytest.mark.slow
def test_compiled_unet_gives_the_same_images(pipe):
    reference = pipe.generate(batch_size=1, num_inference_steps=2, generator=seed(), output_type="pt").images
    accelerate_pipeline(pipe, compile=True)
    compiled = pipe.generate(batch_size=1, num_inference_steps=2, generator=seed(), output_type="pt").images
    assert torch.allclose(compiled, reference, atol=1e-4)


def test_accelerate_rejects_what_it_cannot_do(pipe):
    with pytest.raises(ValueError, match="compile=True"):
        accelerate_pipeline(pipe, compile_mode="max-autotune")
    with pytest.raises(TypeError, match="no unet"):
        accelerate_pipeline(object())


@pytest.mark.parametrize("operator", [Colorization(), SuperResolution(2), SuperResolution(4),
                                      compose(Colorization(), SuperResolution(4))], ids=["color", "sr2", "sr4",
                                                                                         "color+sr4"])
def test_one_product_projection_equals_the_two_transform_form(operator):
    """PatchOperator.project uses Q Omega Q^T; it must be the P of docs/design.md, section 3."""
    g = seed(4)
    x, y = (torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(2))
    y0 = operator.known_part(y)
    omega = operator.mask(x.shape, x.device, x.dtype)
    expected = y0 + operator.AT(operator.A(x) * omega)
    assert torch.allclose(operator.project(x, y0), expected, atol=1e-12)


def test_a_subclass_with_its_own_transform_gets_the_general_projection():
    class Negated(PatchOperator):  # A x = -Q^T x: still orthogonal, not the matrix the fast path uses
        def A(self, x):
            return -super().A(x)

        def AT(self, a):
            return super().AT(-a)

    operator = Negated(torch.eye(3, dtype=torch.float64), torch.tensor([True, False, False]))
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    assert torch.allclose(operator.project(x, torch.zeros_like(x)), x * torch.tensor([0.0, 1, 1])[:, None, None])


def test_operators_cast_their_mask_once_per_device_and_dtype():
    for operator in (Inpainting(torch.ones(8, 8)), Colorization(), SuperResolution(4)):
        first = operator.mask((1, 3, 8, 8), torch.device("cpu"), torch.bfloat16)
        assert first.dtype == torch.bfloat16
        assert operator.mask((1, 3, 8, 8), torch.device("cpu"), torch.bfloat16) is first
        assert operator.mask((1, 3, 8, 8), torch.device("cpu"), torch.float64).dtype == torch.float64


def test_cast_made_during_inference_stays_usable_with_autograd():
    operator = Colorization()
    with torch.inference_mode():
        operator.project(torch.zeros(1, 3, 4, 4, dtype=torch.float64), torch.zeros(1, 3, 4, 4, dtype=torch.float64))
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    operator.project(x, torch.zeros_like(x)).sum().backward()  # would raise on an inference tensor
    assert x.grad is not None


def test_the_projection_scheduler_precomputes_its_scalings_bit_identically():
    """Per-step scalars are computed at set_timesteps with diffusers' own operations."""
    scheduler = tiny_scheduler()
    wrapped = MaskedProjectionScheduler(tiny_scheduler(), Inpainting(torch.ones(4, 4)), torch.zeros(1, 3, 4, 4))
    scheduler.set_timesteps(timesteps=[30, 12, 0])
    wrapped.set_timesteps(timesteps=[30, 12, 0])
    x = torch.rand(1, 3, 4, 4)
    for t in scheduler.timesteps:
        assert torch.equal(wrapped.scale_model_input(x, t), scheduler.scale_model_input(x, t))
        torch.manual_seed(0)
        expected = scheduler.step(x, t, x, generator=seed(7), return_dict=False)[0]
        assert torch.equal(wrapped.step(x, t, x, generator=seed(7), return_dict=False)[0], expected)
