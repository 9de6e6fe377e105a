"""Region inpainting at full resolution: every masked region is edited in its own square crop.

A model works at one square resolution ``R``; photos are far larger. Resizing a whole photo to
``R`` would replace a small hole by a blurred patch. Here each connected region of the mask, grown
by a margin of context, is cut out as a square crop, resized to ``R`` (bicubic, antialiased),
inpainted, resized back, and only its masked pixels are written into the original:

- the crop's side is ``max((1 + 2 context) s, s + 2 MIN_MARGIN, min_crop_size)`` for a region whose
  bounding box has the larger side ``s`` (so ``context = 0.5`` shows as much context around the
  region as the region's own size), at most the image's larger side. By default
  ``min_crop_size = R``: a region that fits into ``R`` with its context is edited at the image's
  own scale, pixel for pixel. A larger region is handled the same way, but its crop is downscaled
  to ``R``: the generated content then has ``R / side`` of the image's detail (it is enlarged);
- crops whose squares would overlap are merged into one (the union of their regions), so no pixel
  is generated twice and neighbouring regions see each other as "to generate";
- where the square does not fit into the image (a side longer than the image's shorter side), the
  missing part is mirrored in (``cmedit.fullres.canvas.reflect_crop``), mask included;
- the model never sees the masked content: masked pixels of a crop are set to the mean of its kept
  pixels before the resize, and the mask is resized with "any covered pixel is generated"
  (``Inpainting.resized``);
- all crops of all images and candidates are edited in one batch: one forward pass per step.

The seam is softened only *inside* the mask: a masked pixel at Euclidean distance ``d`` (pixels)
from the nearest kept pixel takes ``min(1, d / (feather + 1))`` of the generated content and the
rest from the original, so the ``feather`` outermost rings of the mask (next to kept pixels) are
blends and every pixel outside the mask is returned bit-identical. A blend keeps some of what the
mask covered: grow the mask by ``feather`` pixels to remove an object entirely.

Images are ``(B, 3, H, W)`` float tensors in ``[-1, 1]``; masks ``(B or 1, 1, H, W)``, 1 = generate,
0 = keep. ``scipy`` (``ndimage``, ``sparse.csgraph``) labels the regions and measures the feather.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from typing import Protocol

from ..core.arguments import EditOptions, Generators
from ..core.operators import Inpainting, Operator
from ..io.tensors import resize
from .budget import check_pixels
from .canvas import reflect_crop

# Context always added around a region, in pixels, whatever ``context`` is.
MIN_MARGIN = 4


class TensorEditor(Protocol):
    """What crops and tiles need of a pipeline (``cmedit.ConsistencyEditPipeline`` is one)."""

    @property
    def resolution(self) -> int: ...

    def edit_tensor(self, y: torch.Tensor, operator: Operator, options: EditOptions) -> torch.Tensor: ...

    def class_labels_for(self, class_labels, batch_size: int, generator: Generators) -> torch.Tensor | None: ...


@dataclass(frozen=True)
class Crop:
    """A square window of image ``image``: rows ``top .. top + size - 1``, columns ``left .. left + size - 1``.

    The window may reach beyond the image (negative ``top``/``left`` or past the far edge); those
    pixels are mirrored in.
    """

    image: int
    top: int
    left: int
    size: int

    def inside(self, height: int, width: int) -> tuple[slice, slice, slice, slice]:
        """Slices (rows, columns) of the window's part inside the image, in image and in crop coordinates."""
        r0, r1 = max(self.top, 0), min(self.top + self.size, height)
        c0, c1 = max(self.left, 0), min(self.left + self.size, width)
        return (slice(r0, r1), slice(c0, c1),
                slice(r0 - self.top, r1 - self.top), slice(c0 - self.left, c1 - self.left))


def region_boxes(mask: np.ndarray) -> np.ndarray:
    """Bounding boxes ``(n, 4)`` as ``[row0, row1, col0, col1)`` of the 8-connected regions of a 2-D 0/1 mask."""
    from scipy import ndimage

    labels, count = ndimage.label(mask > 0.5, structure=np.ones((3, 3), dtype=bool))
    boxes = [(rows.start, rows.stop, cols.start, cols.stop) for rows, cols in ndimage.find_objects(labels)]
    return np.asarray(boxes, dtype=np.int64).reshape(count, 4)


def _window_start(lo: int, hi: int, size: int, length: int) -> int:
    """Start of a window of ``size`` around ``[lo, hi)``: inside ``[0, length)`` if it fits, else centred on it."""
    if size > length:
        return -((size - length) // 2)
    start = round((lo + hi - size) / 2)
    return min(max(start, 0), length - size)


def crop_windows(
    boxes: np.ndarray, height: int, width: int, *, context: float, min_crop_size: int
) -> list[tuple[int, int, int]]:
    """Square windows ``(top, left, size)`` around region boxes, merging regions whose windows overlap.

    ``boxes``: ``(n, 4)`` from :func:`region_boxes`. Each window contains its regions' boxes; the
    parts of different windows inside the image are disjoint. Sizes as in the module docstring.
    """
    from scipy.sparse.csgraph import connected_components

    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    while True:
        windows = []
        for r0, r1, c0, c1 in boxes.tolist():
            s = max(r1 - r0, c1 - c0)
            size = max(math.ceil((1 + 2 * context) * s), s + 2 * MIN_MARGIN, min_crop_size)
            size = min(size, max(height, width))
            windows.append((_window_start(r0, r1, size, height), _window_start(c0, c1, size, width), size))
        if len(windows) < 2:
            return windows
        top, left, size = (np.array(v) for v in zip(*windows))
        r0, r1 = np.maximum(top, 0), np.minimum(top + size, height)
        c0, c1 = np.maximum(left, 0), np.minimum(left + size, width)
        overlap = ((np.minimum(r1[:, None], r1[None]) > np.maximum(r0[:, None], r0[None]))
                   & (np.minimum(c1[:, None], c1[None]) > np.maximum(c0[:, None], c0[None])))
        count, group = connected_components(overlap, directed=False)
        if count == len(boxes):
            return windows
        # Merged regions need a larger window, which may overlap others: repeat until none do.
        merged = []
        for g in range(count):
            members = boxes[group == g]
            merged.append([members[:, 0].min(), members[:, 1].max(), members[:, 2].min(), members[:, 3].max()])
        boxes = np.asarray(merged, dtype=np.int64)


def plan_crops(mask: torch.Tensor, *, context: float = 0.5, min_crop_size: int = 0) -> list[Crop]:
    """The crops that cover every masked pixel of ``mask`` ``(B, 1, H, W)`` (1 = generate), image by image."""
    crops = []
    height, width = mask.shape[-2:]
    for b, plane in enumerate(mask[:, 0].cpu().numpy()):
        for top, left, size in crop_windows(region_boxes(plane), height, width,
                                            context=context, min_crop_size=min_crop_size):
            crops.append(Crop(b, top, left, size))
    return crops


def feather_weights(mask: torch.Tensor, feather: int) -> torch.Tensor:
    """Blend weight of the generated content, ``(B, 1, H, W)`` in ``[0, 1]``: 0 outside the mask, ramping up inside.

    A masked pixel at Euclidean distance ``d`` from the nearest kept pixel gets ``min(1, d / (feather + 1))``;
    ``feather = 0`` gives the mask itself. An image with no kept pixel is generated everywhere.
    """
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    mask = (mask > 0.5).to(torch.float32)
    if feather == 0:
        return mask
    from scipy import ndimage

    weights = []
    for plane in mask[:, 0].cpu().numpy():
        if plane.all():
            weights.append(plane)
            continue
        distance = ndimage.distance_transform_edt(plane)  # 0 on kept pixels
        weights.append(np.minimum(distance / (feather + 1), 1.0).astype(np.float32))
    return torch.from_numpy(np.stack(weights))[:, None].to(mask.device)


def edit_crops(
    pipe: TensorEditor,
    crops: torch.Tensor,
    operator: Operator,
    owners: torch.Tensor,
    num_images: int,
    options: EditOptions,
) -> torch.Tensor:
    """Edit ``N`` model-size pieces of ``num_images`` images in one batch (one forward pass per step).

    Args:
        crops: ``(N, 3, R, R)`` in ``[-1, 1]``, ``R`` the model's resolution.
        operator: the edit, acting on the batch after each piece is repeated ``K`` times
            (``K = options.num_images_per_prompt``; ``(N * K, ...)``, candidates adjacent).
        owners: ``(N,)`` long, the image each piece was cut from. A class label belongs to an image:
            ``options.class_labels`` (one or one per image; random per image when omitted) is repeated
            over its pieces. So is a generator: with a list of one generator per image and candidate
            (``num_images * K``), the pieces of candidate ``j`` of image ``i`` all draw, in turn, from
            generator ``i * K + j``, and an image's result does not depend on the other images; one
            generator draws for the whole batch.

    Returns ``(N * K, 3, R, R)`` in ``[-1, 1]``, candidates of a piece adjacent.
    """
    k = options.num_images_per_prompt
    options.check_batch(num_images)
    generator = options.generator
    labels = pipe.class_labels_for(options.class_labels, num_images, generator)
    if labels is not None:
        labels = labels[owners.to(labels.device)]
    if isinstance(generator, (list, tuple)):
        generator = generator[0] if len(generator) == 1 else [generator[int(owner) * k + j]
                                                              for owner in owners for j in range(k)]
    piece_options = EditOptions(options.num_inference_steps, options.timesteps, options.strength, labels, k,
                                generator, options.noise_level)
    return pipe.edit_tensor(crops, operator, piece_options)


@torch.inference_mode()
def inpaint_regions(
    pipe: TensorEditor,
    image: torch.Tensor,
    mask: torch.Tensor,
    options: EditOptions,
    *,
    context: float = 0.5,
    feather: int = 3,
    min_crop_size: int | None = None,
    max_pixels: int | None = None,
) -> torch.Tensor:
    """Inpaint every masked region of ``image`` at the image's own resolution, in crops (see the module docstring).

    Args:
        pipe: the pipeline; its model's resolution ``R`` is the crops' working size.
        image: ``(B, 3, H, W)`` in ``[-1, 1]``, any size.
        mask: ``(B or 1, 1, H, W)``, 1 = generate, 0 = keep.
        context: margin on each side of a region, as a fraction of the larger side of its bounding box.
        feather: rings of the mask, counted from its border inwards, that blend generated and
            original content (0: hard edge). Never outside the mask.
        min_crop_size: smallest crop side (default ``R``: small regions are edited at native scale).
        max_pixels: the largest crop window and the result, times the candidates, may not exceed this
            (default ``pipe.max_pixels``, else ``DEFAULT_MAX_PIXELS``): refused up front, before anything
            is allocated (``cmedit.fullres.budget.MemoryBudgetError``, one line).
        options: schedule, strength, labels, candidates and generator(s) as for ``pipe.edit``
            (see :func:`edit_crops` for a list of generators). With ``strength < 1`` the masked
            content guides the fill, so the crops keep it.

    Returns:
        ``(B * K, 3, H, W)`` in ``[-1, 1]``, ``K = num_images_per_prompt`` candidates per image,
        adjacent. Pixels outside the mask equal ``image`` exactly. An empty mask returns the input
        (repeated ``K`` times) without running the model.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got shape {tuple(image.shape)}")
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"mask must be (B or 1, 1, H, W) with the image's size, got shape {tuple(mask.shape)}")
    if len(mask) not in (1, len(image)):
        raise ValueError(f"got {len(mask)} masks for {len(image)} images: give one mask or one per image")
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    k, size, strength = options.num_images_per_prompt, pipe.resolution, options.strength
    mask = (mask > 0.5).to(image.dtype).expand(len(image), -1, -1, -1)
    height, width = image.shape[-2:]

    crops = plan_crops(mask, context=context, min_crop_size=size if min_crop_size is None else min_crop_size)
    limit = getattr(pipe, "max_pixels", None) if max_pixels is None else max_pixels
    side = max((crop.size for crop in crops), default=0)
    if side:
        check_pixels("the crop window around the masked region", side, side, k, limit)
    check_pixels("the result", height, width, k, limit)
    result = image.repeat_interleave(k, dim=0)
    if not crops:
        return result

    pieces, piece_masks = [], []
    for crop in crops:
        y = reflect_crop(image[crop.image:crop.image + 1], crop.top, crop.left, crop.size, crop.size)
        omega = reflect_crop(mask[crop.image:crop.image + 1], crop.top, crop.left, crop.size, crop.size)
        if strength == 1:
            # Hide the masked content from the model: the bicubic resize would blur it into kept pixels.
            keep = 1 - omega
            fill = (y * keep).sum(dim=(2, 3), keepdim=True) / keep.sum().clamp(min=1)
            y = y * keep + fill * omega
        pieces.append(resize(y, (size, size)))
        piece_masks.append(Inpainting(omega).resized((size, size)).mask(omega.shape, omega.device, omega.dtype))
    operator = Inpainting(torch.cat(piece_masks).repeat_interleave(k, dim=0))
    owners = torch.tensor([crop.image for crop in crops])
    edited = edit_crops(pipe, torch.cat(pieces), operator, owners, len(image), options).to(image.device, image.dtype)

    generated = result.clone()
    for i, crop in enumerate(crops):
        rows, cols, crop_rows, crop_cols = crop.inside(height, width)
        back = resize(edited[i * k:(i + 1) * k], (crop.size, crop.size))
        generated[crop.image * k:(crop.image + 1) * k, :, rows, cols] = back[:, :, crop_rows, crop_cols]
    weight = feather_weights(mask, feather).to(image.dtype).repeat_interleave(k, dim=0)
    # lerp returns ``generated`` exactly where the weight is 1; ``where`` keeps unmasked pixels bit-identical.
    return torch.where(weight > 0, torch.lerp(result, generated, weight), result)
