"""Mirrored windows, canvas extension for outpainting, and masks from transparency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cmedit.core.arguments import EditOptions
from cmedit.io.tensors import tensor_to_uint8
from cmedit.fullres.canvas import outpaint_canvas, reflect_crop, reflect_indices, rgba_to_mask
from cmedit.fullres.crops import inpaint_regions


def image(h=7, w=5, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (1, 3, h, w), generator=torch.Generator().manual_seed(seed)).float() / 127.5 - 1


@pytest.mark.parametrize("length,before,after", [(5, 3, 2), (5, 11, 17), (2, 3, 4), (6, 0, 0)])
def test_reflect_indices_match_numpy_reflect_padding(length, before, after):
    expected = np.pad(np.arange(length), (before, after), mode="reflect")
    assert reflect_indices(-before, length + after, length).tolist() == expected.tolist()


def test_reflect_indices_of_a_one_pixel_axis_are_zero():
    assert reflect_indices(-3, 4, 1).tolist() == [0] * 7


def test_reflect_crop_is_slicing_inside_and_mirrors_outside():
    x = image()
    assert torch.equal(reflect_crop(x, 2, 1, 3, 4), x[..., 2:5, 1:5])
    window = reflect_crop(x, -2, -1, 12, 9)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 3), (1, 3)), mode="reflect")
    assert np.array_equal(window.numpy(), expected)


@pytest.mark.parametrize("left,right,top,bottom", [(3, 0, 0, 0), (0, 2, 4, 1), (9, 11, 8, 10)])
def test_outpaint_canvas_sizes_mask_and_centre(left, right, top, bottom):
    x = image(7, 5)
    canvas, mask = outpaint_canvas(x, left=left, right=right, top=top, bottom=bottom)
    assert canvas.shape == (1, 3, 7 + top + bottom, 5 + left + right)
    assert mask.shape == (1, 1, 7 + top + bottom, 5 + left + right)
    assert torch.equal(canvas[..., top:top + 7, left:left + 5], x)
    inner = torch.zeros_like(mask, dtype=torch.bool)
    inner[..., top:top + 7, left:left + 5] = True
    assert (mask[inner] == 0).all() and (mask[~inner] == 1).all()
    assert canvas.min() >= -1 and canvas.max() <= 1
    if left:  # the border mirrors the image (edge pixel not repeated)
        assert torch.equal(canvas[..., top:top + 7, left - 1], x[..., 1])


def test_outpaint_canvas_rejects_negative_borders():
    with pytest.raises(ValueError, match="border"):
        outpaint_canvas(image(), left=-1)


def test_outpainting_by_region_inpainting_keeps_the_original_and_fills_the_border(pipe):
    x = image(12, 10, seed=1)
    canvas, mask = outpaint_canvas(x, left=4, right=2, top=3, bottom=0)
    out = inpaint_regions(pipe, canvas, mask, EditOptions(num_inference_steps=2, generator=torch.Generator().manual_seed(0)), feather=0)
    assert out.shape == canvas.shape
    assert np.array_equal(tensor_to_uint8(out[..., 3:15, 4:14]), tensor_to_uint8(x))
    border = mask[0, 0] > 0.5
    assert (out - canvas).abs()[..., border].mean() > 0.1  # the mirrored fill was replaced


def test_rgba_to_mask_from_pil_numpy_and_tensor():
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, :, 3] = 0
    rgba[1, 0, 3] = 127  # just under 50%: transparent
    rgba[1, 1, 3] = 128  # just over: opaque
    expected = np.zeros((4, 6), dtype=np.float32)
    expected[0] = 1
    expected[1, 0] = 1
    for source in (Image.fromarray(rgba, "RGBA"), rgba, torch.from_numpy(rgba).permute(2, 0, 1).float() / 255):
        mask = rgba_to_mask(source)
        assert mask.shape == (1, 1, 4, 6)
        assert np.array_equal(mask[0, 0].numpy(), expected), type(source)


def test_rgba_to_mask_needs_an_alpha_channel():
    with pytest.raises(ValueError, match="alpha"):
        rgba_to_mask(Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError):
        rgba_to_mask(np.zeros((4, 4, 3), dtype=np.uint8))
