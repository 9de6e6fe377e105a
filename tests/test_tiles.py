"""Tiled super-resolution of any size: tile layout, a block-constant blend window, exact block means, one batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmedit.core.arguments import EditOptions
from cmedit.core.operators import LUMINANCE
from cmedit.fullres.tiles import blend_tiles, super_resolve_tiled, tile_starts, tile_window
from conftest import RESOLUTION
from test_regions import ForwardCounter


def low_image(h=9, w=13, seed=0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seed(n=0):
    return torch.Generator().manual_seed(n)


@pytest.mark.parametrize("length,tile,overlap", [(13, 4, 1), (9, 4, 1), (100, 16, 4), (17, 16, 0), (4, 4, 2)])
def test_tile_starts_cover_the_axis_with_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile
    assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:]))
    assert all(b > a for a, b in zip(starts, starts[1:]))


def test_tile_starts_centre_one_tile_on_a_short_axis():
    assert tile_starts(3, 8, 2) == [-2]  # covers -2 .. 5, the axis 0 .. 2 in the middle


@pytest.mark.parametrize("tile,factor,overlap", [(4, 4, 1), (8, 2, 3), (16, 4, 0)])
def test_tile_window_is_positive_symmetric_and_constant_per_block(tile, factor, overlap):
    window = tile_window(tile, factor, overlap)
    assert window.shape == (tile * factor, tile * factor)
    assert (window > 0).all() and window.max() == 1
    assert torch.equal(window, window.flip(0)) and torch.equal(window, window.T)
    blocks = window.reshape(tile, factor, tile, factor)
    assert torch.equal(blocks, blocks[:, :1, :, :1].expand_as(blocks))
    if overlap:  # it does taper towards the edges
        assert window[0, 0] < window[tile * factor // 2, tile * factor // 2]


def test_blending_block_consistent_tiles_keeps_the_block_means():
    factor, tile = 4, 4
    low = low_image()
    high = low.repeat_interleave(factor, 2).repeat_interleave(factor, 3)
    rows, cols = tile_starts(9, tile, 1), tile_starts(13, tile, 1)
    starts = [(r * factor, c * factor) for r in rows for c in cols]
    side = tile * factor
    tiles = []
    for r, c in starts:  # each tile: the right block means, its own zero-mean detail
        detail = torch.randn(1, 3, side, side)
        detail -= F.avg_pool2d(detail, factor).repeat_interleave(factor, 2).repeat_interleave(factor, 3)
        tiles.append(high[..., r:r + side, c:c + side] + detail)
    tiles = torch.cat(tiles)
    window = tile_window(tile, factor, 1)
    blended = blend_tiles(tiles, starts, (36, 52), window)
    assert (F.avg_pool2d(blended, factor) - low).abs().max() < 1e-5
    # the same blend with a window that varies inside a block loses the block means
    smooth = F.interpolate(window[None, None, ::factor, ::factor], scale_factor=factor, mode="bilinear")[0, 0] + 0.1
    assert (F.avg_pool2d(blend_tiles(tiles, starts, (36, 52), smooth), factor) - low).abs().max() > 1e-3


def test_super_resolve_13x9_by_4_keeps_block_means_in_one_batch(pipe):
    low = low_image()
    counter = ForwardCounter(pipe.unet)
    high = super_resolve_tiled(pipe, low, 4, EditOptions(num_inference_steps=2, generator=seed()))
    assert high.shape == (1, 3, 36, 52)
    assert (F.avg_pool2d(high, 4) - low).abs().max() < 1e-4
    nearest = low.repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert (high - nearest).abs().mean() > 0.05  # detail was generated
    tiles = len(tile_starts(9, RESOLUTION // 4, 1)) * len(tile_starts(13, RESOLUTION // 4, 1))
    assert counter.batches == [tiles, tiles]


def test_super_resolve_with_colorization_and_candidates(pipe):
    low = low_image(5, 7, seed=1)
    high = super_resolve_tiled(pipe, low, 2, EditOptions(num_inference_steps=2, num_images_per_prompt=2, generator=seed()), colorize=True, overlap=3)
    assert high.shape == (2, 3, 10, 14)
    luma = torch.tensor(LUMINANCE).view(1, 3, 1, 1)
    target = (low * luma).sum(1, keepdim=True)
    assert (F.avg_pool2d((high * luma).sum(1, keepdim=True), 2) - target).abs().max() < 1e-4
    assert not torch.equal(high[0], high[1])


def test_bad_factor_and_overlap(pipe):
    with pytest.raises(ValueError, match="divide"):
        super_resolve_tiled(pipe, low_image(), 3, EditOptions())
    with pytest.raises(ValueError, match="overlap"):
        super_resolve_tiled(pipe, low_image(), 4, EditOptions(), overlap=4)
