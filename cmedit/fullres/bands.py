"""The full-size ends of a whole-image edit, a band of pixels at a time (docs/design.md, section 8).

A whole-image edit (colorize, img2img, an inpainting resized to the model) reads the input at full
size twice: its known part, resized down to the model's resolution, and, after sampling, the final
steps at full size: the model-size result resized up, projected onto the input's known part (the
luminance for colorize), fitted into range and converted to the output type. Done on whole images
these make several float32 copies of every pixel and candidate; here they are made a band at a time,
so the memory beyond the input and output arrays is bounded by :data:`BAND_PIXELS`, not by the image.

The results are the same bits as the whole-image computation (``tests/test_pipeline.py``):

- the bicubic antialiased resize (``torch.nn.functional.interpolate``) is separable and runs its
  width pass first, then its height pass, each output line from the whole input line. Going down,
  bands of rows take the width pass (a row needs only itself), the height pass then runs on the
  ``(H, R)`` result of all bands; going up, the width pass runs on the model-size image and bands of
  columns take the height pass. The intermediate images are ``R`` pixels by the image's side;
- projection, range fit and clamping act per pixel (``Colorization``, ``Inpainting``) or per
  ``p x p`` patch (``SuperResolution``, bands aligned to ``p``): :meth:`~cmedit.core.operators.Operator.window`
  gives the operator of a band; an operator without one (a user's ``Operator`` with a global range
  fit) gets a single band, the whole image.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..core.operators import Operator

# Pixels per band, all images and candidates together: a band holds a few float32 RGB copies of
# these, 12 bytes per pixel each (about 0.1 GB at this size). Much smaller bands cost time: every
# band is some 40 tensor operations, each a parallel region of torch's threads, and on a CPU shared
# with other work those regions wait for descheduled threads (BENCHMARKS.md, whole-image colorize).
BAND_PIXELS = 1 << 20
# The narrowest band, in lines: torch's height pass over a band one or two columns wide does not give
# those columns of the whole resize (measured on the CPU; from three columns on they agree exactly).
MIN_LINES = 8


def band_starts(length: int, line: int, multiple: int = 1, band_pixels: int | None = None) -> list[int]:
    """Band boundaries along an axis of ``length`` lines of ``line`` pixels each: about ``band_pixels``
    (default :data:`BAND_PIXELS`) per band, at least :data:`MIN_LINES` lines, starts multiples of ``multiple``."""
    budget = BAND_PIXELS if band_pixels is None else band_pixels
    least = -(-MIN_LINES // multiple) * multiple
    step = max(least, budget // max(line, 1) // multiple * multiple)
    starts = list(range(0, length, step))
    if len(starts) > 1 and length - starts[-1] < least:  # no thin last band: merged into the one before
        starts.pop()
    return starts + [length]


class FullSizeImages:
    """``(B, C, H, W)`` images in ``[-1, 1]`` read a window at a time.

    Either a tensor already in ``[-1, 1]``, or the ``[0, 1]`` pieces that
    ``cmedit.io.tensors.images_to_tensor`` concatenates and scales (``image_parts``), scaled here
    window by window by the same operations, so a window has the bits of the same window of the
    whole tensor without the whole tensor ever being made.
    """

    def __init__(self, images: torch.Tensor | Sequence[torch.Tensor], scaled: bool = True) -> None:
        self.parts = [images] if isinstance(images, torch.Tensor) else list(images)
        self.scaled = scaled
        first = self.parts[0]
        self.shape = torch.Size((sum(len(p) for p in self.parts), *first.shape[1:]))
        self.device = first.device

    def window(self, rows: slice = slice(None), cols: slice = slice(None)) -> torch.Tensor:
        """Rows ``rows`` and columns ``cols`` of every image, ``(B, C, h, w)`` in ``[-1, 1]``."""
        pieces = [part[..., rows, cols] for part in self.parts]
        x = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return x if self.scaled else x * 2 - 1

    def whole(self) -> torch.Tensor:
        return self.window()


def resize_down(images: FullSizeImages, size: tuple[int, int], k: int = 1,
                transform: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
                multiple: int = 1) -> torch.Tensor:
    """``cmedit.io.tensors.resize(transform(images), size)``, each image repeated ``k`` times, in bands of rows.

    ``transform(window, rows)`` (e.g. an operator's known part) acts on a band of rows of the
    repeated images; bands start at multiples of ``multiple``. Same bits as the whole-image resize.
    """
    height, width = images.shape[-2:]
    if (height, width) == tuple(size):
        x = repeat(images.whole(), k)
        return x if transform is None else transform(x, slice(None))
    starts = band_starts(height, width * k * images.shape[0], multiple)
    passes = []
    for top, bottom in zip(starts, starts[1:]):
        rows = slice(top, bottom)
        band = repeat(images.window(rows), k)
        if transform is not None:
            band = transform(band, rows)
        passes.append(_interpolate(band, (bottom - top, size[1])))  # the width pass
    x = torch.cat(passes, dim=2)
    del passes
    return _interpolate(x, tuple(size)).clamp(-1, 1)  # the height pass


def upsample_columns(x: torch.Tensor, size: tuple[int, int], multiple: int = 1
                     ) -> list[tuple[slice, Callable[[], torch.Tensor]]]:
    """``cmedit.io.tensors.resize(x, size)`` in bands of columns: ``(columns, band)`` pairs, where
    ``band()`` computes those columns of the resized ``x``. Same bits as the whole resize."""
    height, width = size
    wide = _interpolate(x, (x.shape[-2], width))  # the width pass, model-size rows at full width
    starts = band_starts(width, height * len(x), multiple)

    def band(cols: slice) -> Callable[[], torch.Tensor]:
        return lambda: _interpolate(wide[..., cols], (height, cols.stop - cols.start)).clamp(-1, 1)

    return [(slice(a, b), band(slice(a, b))) for a, b in zip(starts, starts[1:])]


def repeat(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each image ``k`` times in a row (``repeat_interleave``); ``x`` itself, not a copy, for ``k = 1``."""
    return x if k == 1 else x.repeat_interleave(k, dim=0)


def _interpolate(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)

