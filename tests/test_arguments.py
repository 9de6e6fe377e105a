"""Library arguments are checked in one place (cmedit.core.arguments): a clear TypeError / ValueError naming
the argument, before any work, for the values that used to fail deep in torch or run silently."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import RESOLUTION

IMAGE = torch.rand(3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0))
MASK = torch.ones(RESOLUTION, RESOLUTION)


def seed(n=0):
    return torch.Generator().manual_seed(n)


@pytest.mark.parametrize("call, error, name", [
    (lambda p: p.generate(batch_size=0), ValueError, "batch_size"),
    (lambda p: p.generate(batch_size=-1), ValueError, "batch_size"),
    (lambda p: p.generate(batch_size=2.0), TypeError, "batch_size"),
    (lambda p: p.generate(num_inference_steps=2.5), TypeError, "num_inference_steps"),
    (lambda p: p.generate(num_inference_steps=True), TypeError, "num_inference_steps"),
    (lambda p: p.generate(num_inference_steps="2"), TypeError, "num_inference_steps"),
    (lambda p: p.generate(generator=0), TypeError, "generator"),
    (lambda p: p.inpaint(IMAGE, MASK, num_images_per_prompt=2.0), TypeError, "num_images_per_prompt"),
    (lambda p: p.inpaint(IMAGE, MASK, context=math.nan), ValueError, "context"),
    (lambda p: p.inpaint(IMAGE, MASK, feather=1.5), TypeError, "feather"),
    (lambda p: p.inpaint(IMAGE, MASK, generator=[seed(), seed(1), seed(2)]), ValueError, "3 generators"),
    (lambda p: p.colorize(IMAGE, strength=math.nan), ValueError, "strength"),
    (lambda p: p.super_resolve(IMAGE[:, :8, :8], factor=4.0), TypeError, "factor"),
    (lambda p: p.edit(IMAGE, None, num_inference_steps=0), ValueError, "num_inference_steps"),
])
def test_bad_arguments_name_themselves(pipe, call, error, name):
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(error, match=name):
            call(pipe)
    finally:
        handle.remove()
    assert calls == []  # refused before the network ran


def test_good_arguments_still_run(pipe):
    out = pipe.inpaint(IMAGE, MASK, num_inference_steps=1, num_images_per_prompt=2, generator=[seed(), seed(1)],
                       output_type="pt").images
    assert out.shape == (2, 3, RESOLUTION, RESOLUTION)
    pipe.max_batch_size = 1
    assert pipe.max_batch_size == 1
    pipe.max_batch_size = None
