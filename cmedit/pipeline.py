"""``ConsistencyEditPipeline``: generation and zero-shot editing with one consistency model.

A diffusers ``DiffusionPipeline`` with the components of ``ConsistencyModelPipeline``
(``unet``, ``scheduler``), so it loads and saves the same folders. Generation reproduces
``ConsistencyModelPipeline`` exactly; edits run Algorithm 4 of the Consistency Models paper
(arXiv 2303.01469) through ``MaskedProjectionScheduler`` (docs/design.md, section 3).

Images whose size differs from the model's resolution are resized to it (bicubic, antialiased),
edited, resized back to their own size, and projected once more at that size onto the known part
of the original, so the known pixels / luminance / block means of the input hold at full size.
Inpainting of images larger than the model runs in crops around the masked regions and
super-resolution of large images in tiles (``cmedit.fullres``); the pipeline chooses.

``strength < 1`` starts an edit part-way down the noise grid from the whole input plus noise
(SDEdit, Meng et al. 2022; the paper's stroke-guided editing) instead of from the known part plus
noise at the top of the schedule: the unknown part's current content then guides the result.

Without a schedule, edits take the model's own (``edit_timesteps``, from ``cmedit.json`` in its
folder), else ``DEFAULT_EDIT_STEPS`` equally spaced steps; generation takes ``generate_timesteps``
from the same file, else one step (as ``ConsistencyModelPipeline``). Schedules: ``cmedit.core.schedules``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import CMStochasticIterativeScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .core.arguments import ClassLabels, EditOptions, Generators, check_int, check_number, draw_class_labels
from .core.operators import Colorization, Inpainting, Operator, SuperResolution, compose
from .core.linear import LinearOperator
from .core.noise import resolve_noise_level, step_eta
from .core.projection import MaskedProjectionScheduler
from .core.sampler import sample
from .core.schedules import (DEFAULT_EDIT_STEPS, EDIT_CONFIG_NAME, SCHEDULE_KEYS, check_schedule,  # noqa: F401
                             edit_schedule, read_schedule_file, set_timesteps, sigma_timesteps, strength_timesteps)
from .fullres.budget import DEFAULT_MAX_PIXELS, check_pixels
from .fullres.crops import inpaint_regions
from .fullres.tiles import super_resolve_tiled
from .fullres.bands import FullSizeImages, repeat, resize_down, upsample_columns
from .io.tensors import ImageBatchInput, image_parts, images_to_tensor, masks_to_tensor, resize

logger = logging.getLogger(__name__)

EDIT_ARGS = """num_inference_steps (`int`, *optional*): equally spaced steps. Default: the model's own
                schedule (:attr:`edit_timesteps`, from its ``cmedit.json``), else ``DEFAULT_EDIT_STEPS``.
            timesteps (`list[int]`, *optional*): descending indices into the model's noise grid,
                instead of ``num_inference_steps`` (e.g. ``[22, 0]``; docs/design.md, section 2).
            strength (`float`, defaults to {strength}): in ``(0, 1]``. Below 1 the steps start at that
                fraction of the noise grid from the whole input plus noise, so what lies in the unknown
                part (under the mask, say) guides the result; lower keeps more of it. Takes
                ``num_inference_steps``, not ``timesteps``.
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*): class-conditional models
                only; one for all images or one per image. Random (from the generator's seed) if omitted.
            num_images_per_prompt (`int`, defaults to 1): candidates per input image, adjacent in the output.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): one for the batch, or
                one per output image (images x candidates), which makes each image's result independent
                of the batch it is edited in.
            output_type (`str`, defaults to ``"pil"``): ``"pil"``, ``"np"`` (float ``HWC`` in ``[0, 1]``)
                or ``"pt"`` (float ``BCHW`` in ``[0, 1]``), as in diffusers.
            return_dict (`bool`, defaults to True): an ``ImagePipelineOutput``, else a tuple."""


def _edit_args(strength: str = "1.0") -> Callable:
    """Put the shared Args entries (:data:`EDIT_ARGS`) into a method's docstring at ``{edit_args}``."""
    def decorate(method: Callable) -> Callable:
        method.__doc__ = method.__doc__.replace("{edit_args}", EDIT_ARGS.format(strength=strength))
        return method
    return decorate


class ConsistencyEditPipeline(DiffusionPipeline):
    """Generation, inpainting, colorization and super-resolution with a consistency model.

    Args:
        unet: a ``UNet2DModel`` trained as a consistency model (docs/design.md, section 1 scalings).
        scheduler: a ``CMStochasticIterativeScheduler``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: CMStochasticIterativeScheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.max_batch_size = None
        self.max_pixels = DEFAULT_MAX_PIXELS
        # The schedules used when none is given (from the model folder's cmedit.json). None: edits
        # take DEFAULT_EDIT_STEPS equally spaced steps, generation one step.
        self.edit_timesteps: list[int] | None = None
        self.generate_timesteps: list[int] | None = None
        # What the model is for, said once (a logging warning) when it is given a larger image than
        # its own: set for the embedded 32x32 emoji model, whose edits of photos come out wrong.
        self.domain_note: str | None = None
        self._domain_noted = False

    @property
    def max_batch_size(self) -> int | None:
        """The most images the UNet runs at once (``None``: the whole batch).

        Crops, tiles, candidates and batched files all add to one batch; a bound keeps large edits
        within memory without changing their result (``cmedit.core.sampler.sample``).
        """
        return self._max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int | None) -> None:
        self._max_batch_size = None if value is None else check_int("max_batch_size", value, low=1)

    @property
    def max_pixels(self) -> int:
        """The most pixels a full-resolution buffer may hold, times the candidates (default ``DEFAULT_MAX_PIXELS``,
        64 MP, as ``--max-pixels``): a result, an inpainting crop window, a super-resolved output.

        An edit that needs more is refused before anything is allocated, with
        ``cmedit.fullres.budget.MemoryBudgetError`` (a ``ValueError``, one line; docs/guarantees.md).
        """
        return self._max_pixels

    @max_pixels.setter
    def max_pixels(self, value: int | None) -> None:
        self._max_pixels = DEFAULT_MAX_PIXELS if value is None else check_int("max_pixels", value, low=1)

    def _check_result(self, what: str, height: int, width: int, candidates: int) -> None:
        check_pixels(what, height, width, candidates, self.max_pixels)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "ConsistencyEditPipeline":
        """As diffusers' ``from_pretrained``; a local folder's ``cmedit.json`` also sets the default schedules
        (:attr:`edit_timesteps`, :attr:`generate_timesteps`)."""
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if Path(pretrained_model_name_or_path).is_dir():
            pipe.read_schedules(pretrained_model_name_or_path)
        return pipe

    def read_schedules(self, folder) -> None:
        """Set :attr:`edit_timesteps` and :attr:`generate_timesteps` from ``folder/cmedit.json``
        (``cmedit.core.schedules.read_schedule_file``; a missing key or file leaves ``None``)."""
        config = read_schedule_file(folder, self.scheduler.config.num_train_timesteps)
        for key in SCHEDULE_KEYS:
            setattr(self, key, config.get(key))

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Save as diffusers does, naming ``ConsistencyModelPipeline`` in ``model_index.json``.

        The folder then loads with ``DiffusionPipeline.from_pretrained`` on machines without
        cmedit too; ``ConsistencyEditPipeline.from_pretrained`` loads it all the same.
        """
        super().save_pretrained(save_directory, **kwargs)
        index_path = Path(save_directory) / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = "ConsistencyModelPipeline"
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        config = {key: [int(t) for t in getattr(self, key)] for key in SCHEDULE_KEYS if getattr(self, key) is not None}
        if config:
            (Path(save_directory) / EDIT_CONFIG_NAME).write_text(json.dumps(config) + "\n")

    @property
    def resolution(self) -> int:
        """The model's square working resolution in pixels."""
        size = self.unet.config.sample_size
        return size if isinstance(size, int) else size[0]

    # ----------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(
        self,
        batch_size: int = 1,
        class_labels: ClassLabels = None,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        generator: Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Sample ``batch_size`` images (Algorithm 1); the same draws and result as ``ConsistencyModelPipeline``.

        Args:
            batch_size (`int`, defaults to 1): how many images.
            class_labels: class-conditional models only; random (from the generator's seed) if omitted.
            num_inference_steps, timesteps: the schedule. Default: the model's
                :attr:`generate_timesteps`, else one step (``ConsistencyModelPipeline``'s default).
            generator: one ``torch.Generator``, or one per image.
            output_type, return_dict: as for diffusers pipelines.
        """
        batch_size = check_int("batch_size", batch_size, low=1)
        if num_inference_steps is None and timesteps is None:
            if self.generate_timesteps is None:
                num_inference_steps = 1
            else:
                timesteps = list(self.generate_timesteps)
        check_schedule(self.scheduler.config.num_train_timesteps, num_inference_steps, timesteps)
        options = EditOptions(num_inference_steps, timesteps, class_labels=class_labels, generator=generator)
        options.check_batch(batch_size)
        check_output_type(output_type)
        device, dtype, size = self._execution_device, self.unet.dtype, self.resolution
        shape = (batch_size, self.unet.config.in_channels, size, size)
        x = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        labels = self.class_labels_for(class_labels, batch_size, generator)
        set_timesteps(self.scheduler, num_inference_steps, timesteps, device)
        x = self._run(self.scheduler, x, labels, generator)
        return self._output(x, output_type, return_dict)

    # ----------------------------------------------------------------- editing

    @_edit_args()
    def edit(
        self,
        image: ImageBatchInput,
        operator: Operator,
        *,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        strength: float | None = None,
        class_labels: ClassLabels = None,
        num_images_per_prompt: int = 1,
        generator: Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
        noise_level: float | str = 0.0,
        overlap: int | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Zero-shot edit of ``image`` with any ``operator`` (Algorithm 4).

        Returns images at the input's size in which the operator's known components equal the input's.

        A general ``cmedit.core.linear.LinearOperator`` (``Downsample``, ``Blur``, ...) takes ``image``
        as its measurement ``y`` (the small image, the blurred image) and returns the restored ``x``
        (``cmedit.restoration``; larger than the model: in tiles overlapping by ``overlap`` measurement
        pixels); without ``strength`` or ``timesteps`` it takes the operator's restoration schedule
        (``LinearOperator.default_sigmas``, ``num_inference_steps`` levels; docs/design.md, section 12).

        Args:
            image: one image or a list (a batch edited in one forward pass per step): PIL images,
                arrays or tensors, see ``cmedit.io.tensors``.
            operator (`cmedit.Operator`): ``A``, ``A^T`` and the mask (1 = generate, 0 = known); it acts
                on the batch after each input is repeated ``num_images_per_prompt`` times.
            {edit_args}
            noise_level (`float` or ``"auto"``, defaults to 0): the standard deviation of Gaussian noise on
                ``image`` in ``[0, 1]`` pixel units, or ``"auto"`` (estimated from it); it regularises every
                step's projection instead of copying the noise (``cmedit.core.noise``; docs/design.md, section 11).
        """
        check_output_type(output_type)
        images = FullSizeImages(image_parts(image), scaled=False)
        noise_level = resolve_noise_level(noise_level, images.whole() if isinstance(noise_level, str) else None)
        if isinstance(operator, LinearOperator):
            y = images.whole()
            if strength is None and timesteps is None:
                steps = DEFAULT_EDIT_STEPS if num_inference_steps is None else num_inference_steps
                timesteps = sigma_timesteps(self.scheduler.config, steps, *operator.default_sigmas)
                num_inference_steps = None
            strength = 1.0 if strength is None else strength
            options = EditOptions(num_inference_steps, timesteps, strength, class_labels, num_images_per_prompt,
                                  generator, noise_level)
            self._check_result("the result", *operator.image_size(tuple(y.shape[-2:])), options.num_images_per_prompt)
            from .restoration import restore

            self._note_domain(*operator.image_size(tuple(y.shape[-2:])))
            with torch.inference_mode():
                x = restore(self, y, operator, options, overlap=overlap)
            return self._output(x, output_type, return_dict)
        options = EditOptions(num_inference_steps, timesteps, 1.0 if strength is None else strength, class_labels,
                              num_images_per_prompt, generator, noise_level)
        self._check_result("the result", *images.shape[-2:], options.num_images_per_prompt)
        self._note_domain(*images.shape[-2:])
        return self._output_bands(images, operator, options, output_type, return_dict)

    def deblur(self, image: ImageBatchInput, kernel, noise_level: float | str = 0.0, **kwargs
               ) -> ImagePipelineOutput | tuple:
        """Undo a blur of ``image``: ``kernel`` a ``Blur`` (``GaussianBlur(3.0)``, ...), a 2-D array or a kernel file.

        The blur is ``scipy.ndimage.convolve(mode="reflect")`` with the kernel normalised to sum 1
        (``cmedit.core.degradations``); ``noise_level``, ``overlap`` and the rest as :meth:`edit`.
        Without ``strength`` or ``timesteps`` the steps follow the blur's restoration schedule from the
        regularised ``A^+_eta y`` (``Blur.default_sigmas``; docs/design.md, section 12).
        """
        from .restoration import blur_operator

        return self.edit(image, blur_operator(kernel), noise_level=noise_level, **kwargs)

    @torch.inference_mode()
    def edit_tensor(self, y: torch.Tensor, operator: Operator, options: EditOptions,
                    start_image: torch.Tensor | None = None) -> torch.Tensor:
        """Algorithm 4 on a tensor: the library's edit entry point for code that holds tensors (crops, tiles).

        Args:
            y: ``(B, C, H, W)`` in ``[-1, 1]``, any size (resized to the model's and back).
            operator: acts on ``(B * K, C, H, W)``, ``K = options.num_images_per_prompt`` candidates per
                input, adjacent.
            options: schedule, strength, labels (one or one per input), candidates, generator, noise level
                (which sets the regularised projection of every step, ``cmedit.core.noise``; the output is
                then clipped, not fitted).
            start_image: start from this image (the model's size) plus noise instead of ``y`` (at any
                strength) (a restoration starts from the regularised ``A^+_eta y``, ``cmedit.restoration``).

        Returns:
            ``(B * K, C, H, W)`` float32 in ``[-1, 1]``, on the pipeline's device, whose known components
            (through ``operator``) equal ``y``'s.
        """
        sink = _TensorSink(y.shape[-1])
        self._edit_bands(FullSizeImages(y), operator, options, sink, start_image=start_image)
        return sink.out

    def _edit_bands(self, images: FullSizeImages, operator: Operator, options: EditOptions,
                    write: Callable[[slice, torch.Tensor], None], start_image: torch.Tensor | None = None) -> None:
        """:meth:`edit_tensor` with the full-size steps in bands (``cmedit.fullres.bands``): ``write(columns, x)``
        receives the result, ``(B * K, C, H, w)`` float32 in ``[-1, 1]``, a band of columns at a time."""
        k = options.num_images_per_prompt
        options.check_batch(images.shape[0])
        num_inference_steps, timesteps = self.edit_schedule(options.num_inference_steps, options.timesteps,
                                                            options.strength)
        shape = torch.Size((images.shape[0] * k, *images.shape[1:]))
        size, full = self.resolution, tuple(images.shape[-2:])
        model_operator = operator.resized((size, size)) if full != (size, size) else operator
        operator.check_shape(shape)
        model_operator.check_shape((shape[0], shape[1], size, size))
        whole = slice(None)
        banded = full != (size, size) and operator.window(whole, whole) is not None
        multiple = getattr(operator, "patch", 1)

        device, dtype, generator = self._execution_device, self.unet.dtype, options.generator
        # Only the known part reaches the model: resizing y itself would blur unknown content into it.
        if banded:
            y_model = resize_down(images, (size, size), k, multiple=multiple,
                                  transform=lambda band, rows: operator.window(rows, whole).known_part(band))
        else:
            y = images.whole().repeat_interleave(k, dim=0)
            y_model = resize(operator.known_part(y), (size, size))
        y_model = y_model.to(device=device, dtype=dtype)
        # The noise on the operator's known components (pixel noise times its gain), step by step.
        eta = step_eta(options.noise_level * getattr(operator, "noise_gain", 1.0), self.scheduler.config.sigma_data)
        wrapper = MaskedProjectionScheduler(self.scheduler, model_operator, y_model, eta=eta,
                                            fresh_noise=getattr(operator, "fresh_noise", 1.0))
        set_timesteps(wrapper, num_inference_steps, timesteps, device)
        # docs/design.md, section 5: the initial noise is the first draw, then one draw per step.
        noise = randn_tensor(y_model.shape, generator=generator, device=device, dtype=dtype)
        start = None
        if options.strength != 1 or start_image is not None:
            start = (resize(start_image, (size, size)) if start_image is not None
                     else resize_down(images, (size, size), k) if banded else resize(y, (size, size)))
            start = start.to(device=device, dtype=dtype)
        x = wrapper.initial_sample(noise, start)
        labels = self.class_labels_for(options.class_labels, shape[0] // k, generator)
        if labels is not None:
            labels = labels.repeat_interleave(k, dim=0)
        x = self._run(wrapper, x, labels, generator)

        # The final projection and range fit run in float32 at the input's size.
        x = x.float()
        eta = wrapper._etas[-1]  # the final projection at full size regularised as the last step's
        if not banded:
            y = y.to(x.device)
            if full != (size, size):
                x = resize(x, full)
                x = operator.project_noisy(x, operator.known_part(y), eta) if eta else operator.project(
                    x, operator.known_part(y))
            write(whole, x.clamp(-1, 1) if eta else operator.fit_range(x, y))
            return
        for cols, band in upsample_columns(x, full, multiple):
            part = operator.window(whole, cols)
            y = repeat(images.window(cols=cols), k).to(x.device)
            x_band = band()
            x_band = part.project_noisy(x_band, part.known_part(y), eta) if eta else part.project(
                x_band, part.known_part(y))
            write(cols, x_band.clamp(-1, 1) if eta else part.fit_range(x_band, y))

    @_edit_args()
    def inpaint(
        self,
        image: ImageBatchInput,
        mask: ImageBatchInput,
        *,
        context: float = 0.5,
        feather: int = 3,
        full_resolution: bool | None = None,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        strength: float = 1.0,
        class_labels: ClassLabels = None,
        num_images_per_prompt: int = 1,
        generator: Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
        noise_level: float | str = 0.0,
    ) -> ImagePipelineOutput | tuple:
        """Fill the white pixels of ``mask`` in ``image``; pixels outside the mask are returned unchanged.

        Pixels outside the mask are byte-identical for 8-bit outputs. An image larger than the model
        (or ``full_resolution=True``) is edited in square crops around its masked regions at its own
        scale (``cmedit.fullres.crops``); a smaller one is resized to the model's resolution and back.

        Args:
            image: one image or a list of them (see :meth:`edit`).
            mask: one mask for all images or one per image, at the images' size: white (>= 0.5) =
                generate, black = keep (docs/design.md, section 6).
            context (`float`, defaults to 0.5): crops only: the margin around a region, as a fraction of
                its size.
            feather (`int`, defaults to 3): crops only: pixel rings inside the mask that blend into the
                original (0: hard edge).
            full_resolution (`bool`, *optional*): force (True) or forbid (False) the crops. Default:
                crops when the image is larger than the model in either dimension.
            {edit_args}
            noise_level (`float` or ``"auto"``, defaults to 0): noise on the kept pixels: the fill follows
                them through the regularised projection instead of copying them (:meth:`edit`); with the
                crops the kept pixels are returned as they are.
        """
        noise_level = resolve_noise_level(noise_level, images_to_tensor(image))
        options = EditOptions(num_inference_steps, timesteps, strength, class_labels, num_images_per_prompt,
                              generator, noise_level)
        context = check_number("context", context, low=0)
        feather = check_int("feather", feather, low=0)
        check_output_type(output_type)
        masks = masks_to_tensor(mask)
        images = images_to_tensor(image)
        if masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"mask size {masks.shape[-1]}x{masks.shape[-2]} does not match image size "
                f"{images.shape[-1]}x{images.shape[-2]}"
            )
        if len(masks) not in (1, len(images)):
            raise ValueError(f"got {len(masks)} masks for {len(images)} images: give one mask or one per image")
        self._note_domain(*images.shape[-2:])
        if full_resolution is None:
            full_resolution = max(images.shape[-2:]) > self.resolution
        if full_resolution:
            with torch.inference_mode():
                x = inpaint_regions(self, images, masks, options, context=context, feather=feather)
        else:
            self._check_result("the result", *images.shape[-2:], options.num_images_per_prompt)
            masks = masks.repeat_interleave(num_images_per_prompt, dim=0) if len(masks) > 1 else masks
            x = self.edit_tensor(images, Inpainting(masks), options)
        return self._output(x, output_type, return_dict)

    @_edit_args(strength="0.4")
    def img2img(
        self,
        image: ImageBatchInput,
        strength: float = 0.4,
        *,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        class_labels: ClassLabels = None,
        num_images_per_prompt: int = 1,
        generator: Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """A model sample that keeps the layout and colours of ``image`` (SDEdit): nothing is known exactly.

        The image (resized to the model's resolution and the result back to its size) plus noise
        at ``strength`` of the noise grid is denoised in ``num_inference_steps`` steps: a rough
        painting or a sketch of strokes becomes an image of the model's kind (the paper's
        stroke-guided generation). Lower ``strength`` keeps more of the input; 1 ignores it.

        Args:
            image: one image or a list of them (see :meth:`edit`).
            {edit_args}
        """
        images = FullSizeImages(image_parts(image), scaled=False)
        self._note_domain(*images.shape[-2:])
        options = EditOptions(num_inference_steps, timesteps, strength, class_labels, num_images_per_prompt,
                              generator)
        self._check_result("the result", *images.shape[-2:], options.num_images_per_prompt)
        everything = Inpainting(torch.ones(1, 1, *images.shape[-2:]))
        check_output_type(output_type)
        return self._output_bands(images, everything, options, output_type, return_dict)

    @_edit_args()
    def colorize(
        self,
        image: ImageBatchInput,
        *,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        strength: float = 1.0,
        class_labels: ClassLabels = None,
        num_images_per_prompt: int = 1,
        generator: Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
        noise_level: float | str = 0.0,
    ) -> ImagePipelineOutput | tuple:
        """Colorize greyscale ``image`` (an RGB image's luminance is used); the output keeps its luminance.

        Args:
            image: one image or a list of them (see :meth:`edit`).
            {edit_args}
            noise_level (`float` or ``"auto"``, defaults to 0): as :meth:`edit`; with noise the luminance
                follows the input's only as far as the noise allows.
        """
        return self.edit(image, Colorization(), num_inference_steps=num_inference_steps, timesteps=timesteps,
                         strength=strength, class_labels=class_labels, num_images_per_prompt=num_images_per_prompt,
                         generator=generator, output_type=output_type, return_dict=return_dict,
                         noise_level=noise_level)

    @_edit_args()
    def super_resolve(
        self,
        image: ImageBatchInput,
        factor: int = 4,
        colorize: bool = False,
        *,
        kernel: str | None = None,
        noise_level: float | str = 0.0,
        overlap: int | None = None,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        strength: float | None = None,
        class_labels: ClassLabels = None,
        num_images_per_prompt: int = 1,
        generator: Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Upscale ``image`` by ``factor`` so that shrinking the result as ``kernel`` does gives the input back.

        ``kernel``: the filter the small image was made with, as PIL's ``Image.resize`` shrinks
        (``"bicubic"``, the default, ``"bilinear"``, ``"lanczos"``; ``cmedit.core.degradations.Downsample``;
        restored by :meth:`edit`, with the restoration schedule unless ``strength`` or ``timesteps`` is given),
        or ``"box"`` (the default with
        ``colorize``): each ``factor x factor`` block of the output averages to the input pixel (the
        orthogonal operator of Algorithm 4). An input larger than ``resolution / factor`` is super-resolved in overlapping tiles of that
        size (``cmedit.fullres.tiles``), blended with block-constant weights, so the output is exactly
        ``factor`` times the input's size at full detail.

        Args:
            image: one image or a list of them (see :meth:`edit`), the low-resolution input.
            factor (`int`, defaults to 4): an integer >= 2 that divides the model's resolution.
            colorize (`bool`, defaults to False): also colorize (only the luminance block means are known).
            overlap (`int`, *optional*): tiles only: overlap of neighbouring tiles in input pixels
                (default: a quarter of a tile).
            kernel (`str`, *optional*): ``"bicubic"``, ``"bilinear"``, ``"lanczos"`` or ``"box"`` (above).
            noise_level (`float` or ``"auto"``, defaults to 0): noise on the small image, as :meth:`edit`.
            {edit_args}
        """
        check_int("factor", factor, low=2)
        check_int("num_images_per_prompt", num_images_per_prompt, low=1)
        low_size = image_parts(image)[0].shape[-2:]  # the small input; its checks, once more below
        self._check_result(f"the x{factor} result", low_size[0] * factor, low_size[1] * factor, num_images_per_prompt)
        if kernel is None:
            kernel = "box" if colorize else "bicubic"
        if kernel != "box":
            from .core.degradations import Downsample

            if colorize:
                raise ValueError("colorize is only available with kernel='box'")
            if self.resolution % factor:
                raise ValueError(f"factor {factor} does not divide the model resolution {self.resolution}")
            return self.edit(image, Downsample(factor, kernel), num_inference_steps=num_inference_steps,
                             timesteps=timesteps, strength=strength, class_labels=class_labels,
                             num_images_per_prompt=num_images_per_prompt, generator=generator,
                             output_type=output_type, return_dict=return_dict, noise_level=noise_level,
                             overlap=overlap)
        if self.resolution % factor:
            raise ValueError(f"factor {factor} does not divide the model resolution {self.resolution}")
        if overlap is not None:
            check_int("overlap", overlap, low=0)
        check_output_type(output_type)
        low = images_to_tensor(image)
        noise_level = resolve_noise_level(noise_level, low)
        if noise_level and max(low.shape[-2:]) * factor > self.resolution:  # noisy tiles: the general path
            from .core.degradations import Downsample

            return self.edit(image, Downsample(factor, "box"), num_inference_steps=num_inference_steps,
                             timesteps=timesteps, strength=strength, class_labels=class_labels,
                             num_images_per_prompt=num_images_per_prompt, generator=generator,
                             output_type=output_type, return_dict=return_dict, noise_level=noise_level,
                             overlap=overlap)
        options = EditOptions(num_inference_steps, timesteps, 1.0 if strength is None else strength, class_labels,
                              num_images_per_prompt, generator, noise_level)
        self._note_domain(low.shape[-2] * factor, low.shape[-1] * factor)
        if max(low.shape[-2:]) * factor > self.resolution:
            with torch.inference_mode():
                x = super_resolve_tiled(self, low, factor, options, overlap=overlap, colorize=colorize)
        else:
            high = low.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
            operator = SuperResolution(factor, channels=3)
            if colorize:
                operator = compose(Colorization(), operator)
            x = self.edit_tensor(high, operator, options)
        return self._output(x, output_type, return_dict)

    # ----------------------------------------------------------------- shared steps

    def _note_domain(self, height: int, width: int) -> None:
        """Warn once (``domain_note``) when an edit's image is larger than the model's resolution."""
        if self.domain_note and not self._domain_noted and max(height, width) > self.resolution:
            self._domain_noted = True
            logger.warning(self.domain_note)

    def _run(self, scheduler, x: torch.Tensor, labels: torch.Tensor | None, generator) -> torch.Tensor:
        with self.progress_bar(total=len(scheduler.timesteps)) as bar:
            return sample(self.unet, scheduler, x, class_labels=labels, generator=generator,
                          callback=lambda *_: bar.update(), max_batch=self.max_batch_size)

    def edit_schedule(self, num_inference_steps: int | None, timesteps: list[int] | None,
                      strength: float = 1.0) -> tuple[int | None, list[int] | None]:
        """An edit's checked ``(num_inference_steps, timesteps)`` for this model
        (``cmedit.core.schedules.edit_schedule`` with its grid and its own :attr:`edit_timesteps`)."""
        return edit_schedule(self.scheduler.config.num_train_timesteps, num_inference_steps, timesteps, strength,
                             self.edit_timesteps)

    def _check_schedule(self, num_inference_steps: int | None, timesteps: list[int] | None) -> None:
        check_schedule(self.scheduler.config.num_train_timesteps, num_inference_steps, timesteps)

    def class_labels_for(self, class_labels: ClassLabels, batch_size: int, generator: Generators
                         ) -> torch.Tensor | None:
        """``(batch_size,)`` labels on the pipeline's device for a class-conditional UNet, else ``None``
        (``cmedit.core.arguments.draw_class_labels``: random ones drawn reproducibly when none are given)."""
        return draw_class_labels(self.unet.config.num_class_embeds, class_labels, batch_size, generator,
                                 self._execution_device)

    @torch.inference_mode()
    def _output_bands(self, images: FullSizeImages, operator: Operator, options: EditOptions, output_type: str,
                      return_dict: bool) -> ImagePipelineOutput | tuple:
        """:meth:`edit_tensor` then :meth:`_output`, the full-size steps and the conversion a band at a time:
        beyond the input, only the output (and the ``uint8`` array a PIL output is made from) is held whole."""
        count, channels = images.shape[0] * options.num_images_per_prompt, images.shape[1]
        height, width = images.shape[-2:]
        if output_type == "pt":
            sink = _TensorSink(width, lambda x: (x / 2 + 0.5).clamp(0, 1))
        else:
            dtype = np.uint8 if output_type == "pil" else np.float32
            out = np.empty((count, height, width, channels), dtype=dtype)

            def sink(cols: slice, x: torch.Tensor) -> None:
                # x / 2 + 0.5, clamped, then round(255 v): in place on this band's own copies, the same values
                band = (x / 2).add_(0.5).clamp_(0, 1).float().cpu().permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    band = np.round(np.multiply(band, 255, out=band), out=band).astype("uint8")
                out[:, :, cols] = band
        self._edit_bands(images, operator, options, sink)
        if output_type == "pt":
            result = sink.out
        elif output_type == "pil":  # as diffusers' numpy_to_pil, from the same uint8 values
            result = [Image.fromarray(image.squeeze(), mode="L") if channels == 1 else Image.fromarray(image)
                      for image in out]
        else:
            result = out
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=result) if return_dict else (result,)

    def _output(self, x: torch.Tensor, output_type: str, return_dict: bool) -> ImagePipelineOutput | tuple:
        """Postprocess as ``ConsistencyModelPipeline`` does: ``[-1, 1]`` to ``[0, 1]``, then np or PIL."""
        images = (x / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            images = images.float().cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)


class _TensorSink:
    """Gathers the bands of :meth:`ConsistencyEditPipeline._edit_bands` into one tensor of ``width`` columns,
    each through ``postprocess``; a single band that is the whole image is kept as it is."""

    def __init__(self, width: int | None = None, postprocess: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> None:
        self.width, self.postprocess, self.out = width, postprocess, None

    def __call__(self, cols: slice, x: torch.Tensor) -> None:
        if self.postprocess is not None:
            x = self.postprocess(x)
        if cols == slice(None):
            self.out = x
            return
        if self.out is None:
            self.out = torch.empty((*x.shape[:-1], self.width), dtype=x.dtype, device=x.device)
        self.out[..., cols] = x


def check_output_type(output_type: str) -> None:
    """Accept the output types of diffusers' image pipelines."""
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
