"""Super-resolution of any size: overlapping tiles, each super-resolved at the model's resolution, blended.

A model of resolution ``R`` super-resolves by ``factor`` a tile of ``t = R / factor`` low-resolution
pixels. A larger image is covered by overlapping tiles of ``t x t`` (evenly spaced, each pair of
neighbours overlapping by at least ``overlap`` low-resolution pixels); an image smaller than a tile
in a direction is mirrored out to the tile's size (``cmedit.fullres.canvas.reflect_crop``). Every tile is
edited with ``SuperResolution(factor)`` (or colorization and super-resolution composed) on its
nearest-upsampled pixels, all tiles in one batch (one forward pass per step), and the results are
blended with a window that tapers (``sin^2``) across the overlap.

The window is constant over each ``factor x factor`` output block (it is a window on the
low-resolution grid, upsampled by repetition). So at any block the blend is a convex combination,
with the same weights for all its pixels, of tiles that each average to the input pixel there:
the blend averages to it too, to within float rounding. The last step projects onto the known part
at full size, as ``pipe.edit`` does, which makes the block means exact.

Images are ``(B, 3, H, W)`` float tensors in ``[-1, 1]``.
"""

from __future__ import annotations

import math

import torch

from ..core.arguments import EditOptions
from ..core.operators import Colorization, PatchOperator, SuperResolution, compose
from .canvas import reflect_crop
from .crops import TensorEditor, edit_crops


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of ``tile`` pixels covering ``length`` pixels, neighbours overlapping by ``>= overlap``.

    Evenly spaced from ``0`` to ``length - tile``; a single tile centred on the axis (reaching beyond
    both ends, negative start) when ``length <= tile``.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, {tile - 1}] for tiles of {tile} pixels, got {overlap}")
    if length <= tile:
        return [-((tile - length) // 2)]
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_window(tile: int, factor: int, overlap: int) -> torch.Tensor:
    """Blend weights ``(tile * factor, tile * factor)`` in ``(0, 1]``, constant over each ``factor x factor`` block.

    On the low-resolution grid, ``sin^2`` ramps from near 0 to 1 across the ``overlap`` outer pixels of
    each side (all ones when ``overlap = 0``), separable; then repeated ``factor`` times per axis.
    """
    position = torch.arange(tile, dtype=torch.float64)
    edge = torch.minimum(position, tile - 1 - position)  # distance to the nearer end, in low-res pixels
    ramp = torch.sin(math.pi / 2 * (edge + 1) / (overlap + 1)) ** 2
    ramp = torch.where(edge < overlap, ramp, torch.ones_like(ramp))
    window = ramp[:, None] * ramp[None, :]
    return window.repeat_interleave(factor, dim=0).repeat_interleave(factor, dim=1).float()


def blend_candidates(edited: torch.Tensor, count: int, k: int, starts: list[tuple[int, int]], size: tuple[int, int],
                     window: torch.Tensor) -> torch.Tensor:
    """:func:`blend_tiles` for ``count`` images of ``k`` candidates each: ``edited`` holds every image's tiles in
    order, the ``k`` candidates of a tile adjacent. Returns ``(count * k, C, H, W)``, candidates adjacent."""
    per_image = len(starts)
    blended = [blend_tiles(edited[b * per_image * k + j:(b + 1) * per_image * k:k], starts, size, window)
               for b in range(count) for j in range(k)]  # candidate j of each of image b's tiles
    return torch.cat(blended)


def blend_tiles(
    tiles: torch.Tensor, starts: list[tuple[int, int]], size: tuple[int, int], window: torch.Tensor
) -> torch.Tensor:
    """Weighted average of overlapping ``tiles`` ``(N, C, T, T)`` at ``starts`` (top, left) on a canvas of ``size``.

    ``window`` ``(T, T)`` weighs every tile; tile parts outside the canvas are dropped. Every canvas
    pixel must be covered by a tile. Returns ``(1, C, H, W)``.
    """
    height, width = size
    total = tiles.new_zeros(1, tiles.shape[1], height, width)
    weight = tiles.new_zeros(1, 1, height, width)
    window = window.to(tiles)
    side = tiles.shape[-1]
    for tile, (top, left) in zip(tiles, starts):
        r0, r1 = max(top, 0), min(top + side, height)
        c0, c1 = max(left, 0), min(left + side, width)
        w = window[r0 - top:r1 - top, c0 - left:c1 - left]
        total[0, :, r0:r1, c0:c1] += w * tile[:, r0 - top:r1 - top, c0 - left:c1 - left]
        weight[0, 0, r0:r1, c0:c1] += w
    if not (weight > 0).all():
        raise ValueError("the tiles do not cover the canvas")
    return total / weight


@torch.inference_mode()
def super_resolve_tiled(
    pipe: TensorEditor,
    low: torch.Tensor,
    factor: int,
    options: EditOptions,
    *,
    overlap: int | None = None,
    colorize: bool = False,
) -> torch.Tensor:
    """Upscale ``low`` of any size by ``factor`` in tiles (see the module docstring).

    Args:
        pipe: the pipeline; ``factor`` must divide its model's resolution ``R``.
        low: ``(B, 3, h, w)`` in ``[-1, 1]``.
        factor: integer ``>= 2``.
        overlap: low-resolution pixels shared by neighbouring tiles, in ``[0, R / factor)``
            (default ``R / factor // 4``).
        colorize: also colorize (then only each block's mean luminance is known).
        options: schedule, strength, labels, candidates and generator(s) as for ``pipe.edit``
            (see ``cmedit.fullres.crops.edit_crops`` for a list of generators).

    Returns:
        ``(B * K, 3, h * factor, w * factor)`` in ``[-1, 1]``, ``K = num_images_per_prompt``
        candidates per image, adjacent; each ``factor x factor`` block averages to the input pixel
        (its luminance, with ``colorize``).
    """
    if not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an integer >= 2, got {factor!r}")
    size = pipe.resolution
    if size % factor:
        raise ValueError(f"factor {factor} does not divide the model resolution {size}")
    if low.ndim != 4 or low.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, h, w), got shape {tuple(low.shape)}")
    k = options.num_images_per_prompt
    tile = size // factor
    overlap = tile // 4 if overlap is None else overlap
    height, width = low.shape[-2:]
    row_starts, col_starts = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)

    def upsample(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)

    # Mirror on the low-resolution grid, then upsample: every tile stays blockwise constant.
    pieces = [upsample(reflect_crop(low[b:b + 1], top, left, tile, tile))
              for b in range(len(low)) for top in row_starts for left in col_starts]
    owners = torch.arange(len(low)).repeat_interleave(len(row_starts) * len(col_starts))
    operator: PatchOperator = SuperResolution(factor, channels=3)
    if colorize:
        operator = compose(Colorization(), operator)
    edited = edit_crops(pipe, torch.cat(pieces), operator, owners, len(low), options).to(low.device, torch.float32)

    starts = [(top * factor, left * factor) for top in row_starts for left in col_starts]
    window = tile_window(tile, factor, overlap)
    high_size = (height * factor, width * factor)
    x = blend_candidates(edited, len(low), k, starts, high_size, window)

    # The final projection at full size, as ``pipe.edit_tensor`` does after its resize.
    y = upsample(low.float()).repeat_interleave(k, dim=0)
    x = operator.project(x, operator.known_part(y))
    return operator.fit_range(x, y).to(low.dtype)
