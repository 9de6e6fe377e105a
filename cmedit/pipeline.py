"""``ConsistencyEditPipeline``: generation and zero-shot editing with one consistency model.

A diffusers ``DiffusionPipeline`` with the components of ``ConsistencyModelPipeline``
(``unet``, ``scheduler``), so it loads and saves the same folders. Generation reproduces
``ConsistencyModelPipeline`` exactly; edits run Algorithm 4 through ``MaskedProjectionScheduler``.

Images whose size differs from the model's resolution are resized to it (bicubic, antialiased),
edited, resized back to their own size, and projected once more at that size onto the known part
of the original, so the known pixels / luminance / block means of the input hold at full size.

``strength < 1`` starts an edit part-way down the noise grid from the whole input plus noise
(SDEdit, Meng et al. 2022; the paper's stroke-guided editing) instead of from the known part plus
noise at the top of the schedule: the unknown part's current content then guides the result.

Without a schedule, edits take the model's own (``edit_timesteps``, from ``cmedit.json`` in its
folder), else ``DEFAULT_EDIT_STEPS`` equally spaced steps; generation takes ``generate_timesteps``
from the same file, else one step (as ``ConsistencyModelPipeline``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import CMStochasticIterativeScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from .io.tensors import ImageBatchInput, images_to_tensor, masks_to_tensor
from .core.operators import Colorization, Inpainting, Operator, SuperResolution, compose
from .core.projection import MaskedProjectionScheduler
from .core.sampler import sample

ClassLabels = int | Sequence[int] | torch.Tensor | None

DEFAULT_EDIT_STEPS = 4
# A model folder may recommend its own schedules in this file, each key optional:
# {"edit_timesteps": [26, 22, 18, 14], "generate_timesteps": [14, 0]}.
EDIT_CONFIG_NAME = "cmedit.json"
SCHEDULE_KEYS = ("edit_timesteps", "generate_timesteps")


def strength_timesteps(num_train_timesteps: int, num_inference_steps: int, strength: float) -> list[int]:
    """Descending grid indices for ``num_inference_steps`` steps that start at ``strength`` of the noise grid.

    The first step is at index ``round((1 - strength) * (num_train_timesteps - 1))`` (index 0 is
    ``sigma_max``, the last index ``sigma_min``); the steps are spaced as diffusers'
    ``CMStochasticIterativeScheduler.set_timesteps`` spaces them over the whole grid, so
    ``strength=1`` gives exactly its schedule.
    """
    if not 0 < strength <= 1:  # also refuses NaN
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    start = round((1 - strength) * (num_train_timesteps - 1))
    step = (num_train_timesteps - start) // num_inference_steps
    if step < 1:
        raise ValueError(f"strength {strength} leaves {num_train_timesteps - start} of the model's "
                         f"{num_train_timesteps} noise levels, fewer than {num_inference_steps} steps: raise the "
                         "strength or lower the steps")
    return [start + n * step for n in reversed(range(num_inference_steps))]


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize of ``(B, C, H, W)`` in ``[-1, 1]``; the result is clipped to ``[-1, 1]``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)


class ConsistencyEditPipeline(DiffusionPipeline):
    """Generation, inpainting, colorization and super-resolution with a consistency model.

    Args:
        unet: a ``UNet2DModel`` trained as a consistency model (design.md, section 1 scalings).
        scheduler: a ``CMStochasticIterativeScheduler``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: CMStochasticIterativeScheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        # The most images the UNet runs at once (None: the whole batch). Crops, tiles, candidates and
        # batched files all add to one batch; a bound keeps large edits within memory without
        # changing their result (``cmedit.core.sampler.sample``).
        self.max_batch_size: int | None = None
        # The schedules used when none is given (from the model folder's cmedit.json). None: edits
        # take DEFAULT_EDIT_STEPS equally spaced steps, generation one step.
        self.edit_timesteps: list[int] | None = None
        self.generate_timesteps: list[int] | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "ConsistencyEditPipeline":
        """As diffusers' ``from_pretrained``; a local folder's ``cmedit.json`` also sets the default schedules
        (:attr:`edit_timesteps`, :attr:`generate_timesteps`)."""
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if Path(pretrained_model_name_or_path).is_dir():
            pipe.read_schedules(pretrained_model_name_or_path)
        return pipe

    def read_schedules(self, folder) -> None:
        """Set :attr:`edit_timesteps` and :attr:`generate_timesteps` from ``folder/cmedit.json``.

        Each key is optional (a missing one, or a missing file, leaves None); each is checked against
        this model's noise grid, and anything else in the file is refused, with ``ValueError``.
        """
        path = Path(folder) / EDIT_CONFIG_NAME
        if not path.is_file():
            self.edit_timesteps = self.generate_timesteps = None
            return
        try:
            config = json.loads(path.read_text())
            if not isinstance(config, dict) or not config or set(config) - set(SCHEDULE_KEYS):
                raise ValueError(f"expected an object with some of {', '.join(SCHEDULE_KEYS)}")
            for key, timesteps in config.items():
                if not isinstance(timesteps, list):
                    raise TypeError(f"{key} must be a list of integers, got {timesteps!r}")
                self._check_schedule(None, timesteps)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"{path}: not a valid schedule file ({error})") from None
        for key in SCHEDULE_KEYS:
            setattr(self, key, None if key not in config else [int(t) for t in config[key]])

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
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Sample ``batch_size`` images (Algorithm 1); the same draws and result as ``ConsistencyModelPipeline``.

        Without ``num_inference_steps`` and ``timesteps``: the model's :attr:`generate_timesteps`, else
        one step (``ConsistencyModelPipeline``'s default).
        """
        if num_inference_steps is None and timesteps is None:
            if self.generate_timesteps is None:
                num_inference_steps = 1
            else:
                timesteps = list(self.generate_timesteps)
        self._check_schedule(num_inference_steps, timesteps)
        check_output_type(output_type)
        device, dtype, size = self._execution_device, self.unet.dtype, self.resolution
        shape = (batch_size, self.unet.config.in_channels, size, size)
        x = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        labels = self._class_labels(class_labels, batch_size, generator, device)
        self._set_timesteps(self.scheduler, num_inference_steps, timesteps, device)
        x = self._run(self.scheduler, x, labels, generator)
        return self._output(x, output_type, return_dict)

    # ----------------------------------------------------------------- editing

    def edit(self, image: ImageBatchInput, operator: Operator, **kwargs) -> ImagePipelineOutput | tuple:
        """Zero-shot edit of ``image`` with any ``operator`` (Algorithm 4).

        ``image``: one image or a list (a batch edited in one forward pass per step), see
        ``cmedit.io.tensors``. ``operator`` acts on the batch after each input is repeated
        ``num_images_per_prompt`` times (candidates are adjacent).

        Keyword arguments: ``num_inference_steps`` or ``timesteps`` (default: :attr:`edit_timesteps`,
        the model's recommended schedule, else ``DEFAULT_EDIT_STEPS`` equally spaced steps),
        ``strength``, ``class_labels``, ``num_images_per_prompt``, ``generator``, ``output_type``
        ("pil", "np", "pt") and ``return_dict``, as for diffusers pipelines.
        Returns images at the input's size in which the operator's known components equal the input's.

        ``strength`` in ``(0, 1]`` (default 1: Algorithm 4 as it is): below 1, the steps start at that
        fraction of the noise grid (:func:`strength_timesteps`) from the whole input plus noise, so
        the content of the unknown part (the masked pixels, say) guides the result; lower keeps
        more of it. It takes ``num_inference_steps``, not ``timesteps``.
        """
        return self._edit(images_to_tensor(image), operator, **kwargs)

    @torch.inference_mode()
    def _edit(
        self,
        y: torch.Tensor,
        operator: Operator,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        strength: float = 1.0,
        class_labels: ClassLabels = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """:meth:`edit` on ``y``, a ``(B, 3, H, W)`` tensor in ``[-1, 1]``."""
        num_inference_steps, timesteps = self.edit_schedule(num_inference_steps, timesteps, strength)
        check_output_type(output_type)
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        y = y.repeat_interleave(num_images_per_prompt, dim=0)
        size = self.resolution
        model_operator = operator.resized((size, size)) if tuple(y.shape[-2:]) != (size, size) else operator
        operator.check_shape(y.shape)
        model_operator.check_shape((y.shape[0], y.shape[1], size, size))

        device, dtype = self._execution_device, self.unet.dtype
        # Only the known part reaches the model: resizing y itself would blur unknown content into it.
        y_model = resize(operator.known_part(y), (size, size)).to(device=device, dtype=dtype)
        wrapper = MaskedProjectionScheduler(self.scheduler, model_operator, y_model)
        self._set_timesteps(wrapper, num_inference_steps, timesteps, device)
        # Design.md, section 5: the initial noise is the first draw, then one draw per step.
        noise = randn_tensor(y_model.shape, generator=generator, device=device, dtype=dtype)
        start = None if strength == 1 else resize(y, (size, size)).to(device=device, dtype=dtype)
        x = wrapper.initial_sample(noise, start)
        labels = self._class_labels(class_labels, len(y) // num_images_per_prompt, generator, device)
        if labels is not None:
            labels = labels.repeat_interleave(num_images_per_prompt, dim=0)
        x = self._run(wrapper, x, labels, generator)

        # The final projection and range fit run in float32 at the input's size.
        x, y = x.float(), y.to(x.device)
        if tuple(y.shape[-2:]) != (size, size):
            x = resize(x, tuple(y.shape[-2:]))
            x = operator.project(x, operator.known_part(y))
        x = operator.fit_range(x, y)
        return self._output(x, output_type, return_dict)

    def inpaint(
        self,
        image: ImageBatchInput,
        mask: ImageBatchInput,
        *,
        context: float = 0.5,
        feather: int = 3,
        full_resolution: bool | None = None,
        **kwargs,
    ) -> ImagePipelineOutput | tuple:
        """Fill the white pixels of ``mask`` (1 = generate, 0 = keep; design.md, section 6) in ``image``.

        ``mask`` is one mask for all images or one per image, at the images' size. Pixels outside
        the mask are returned unchanged (byte-identical for 8-bit outputs). Other arguments as :meth:`edit`.

        ``full_resolution`` (default: when the image is larger than the model in either dimension)
        edits each masked region in its own square crop at the image's scale (``cmedit.fullres.crops``):
        ``context`` is the margin around a region as a fraction of its size, ``feather`` the number
        of pixel rings inside the mask that blend into the original (0: hard edge). Otherwise the
        whole image is resized to the model's resolution and back.
        """
        masks = masks_to_tensor(mask)
        images = images_to_tensor(image)
        if masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"mask size {masks.shape[-1]}x{masks.shape[-2]} does not match image size "
                f"{images.shape[-1]}x{images.shape[-2]}"
            )
        if len(masks) not in (1, len(images)):
            raise ValueError(f"got {len(masks)} masks for {len(images)} images: give one mask or one per image")
        if full_resolution is None:
            full_resolution = max(images.shape[-2:]) > self.resolution
        if full_resolution:
            from .fullres.crops import inpaint_regions

            return self._run_outside(inpaint_regions, images, masks, context=context, feather=feather, **kwargs)
        masks = masks.repeat_interleave(kwargs.get("num_images_per_prompt", 1), dim=0) if len(masks) > 1 else masks
        return self._edit(images, Inpainting(masks), **kwargs)

    def img2img(self, image: ImageBatchInput, strength: float = 0.4, **kwargs) -> ImagePipelineOutput | tuple:
        """A model sample that keeps the layout and colours of ``image`` (SDEdit): nothing is known exactly.

        The image (resized to the model's resolution and the result back to its size) plus noise
        at ``strength`` of the noise grid is denoised in ``num_inference_steps`` steps: a rough
        painting or a sketch of strokes becomes an image of the model's kind (the paper's
        stroke-guided generation). Lower ``strength`` keeps more of the input; 1 ignores it.
        Other arguments as :meth:`edit`.
        """
        images = images_to_tensor(image)
        everything = Inpainting(torch.ones(1, 1, *images.shape[-2:]))
        return self._edit(images, everything, strength=strength, **kwargs)

    def colorize(self, image: ImageBatchInput, **kwargs) -> ImagePipelineOutput | tuple:
        """Colorize greyscale ``image`` (an RGB image's luminance is used); the output keeps its luminance."""
        return self.edit(image, Colorization(), **kwargs)

    def super_resolve(
        self,
        image: ImageBatchInput,
        factor: int = 4,
        colorize: bool = False,
        *,
        overlap: int | None = None,
        **kwargs,
    ) -> ImagePipelineOutput | tuple:
        """Upscale ``image`` by ``factor``; each ``factor x factor`` block of the output averages to the input pixel.

        ``colorize=True`` also colorizes (only the luminance block means are then known). An input
        larger than ``resolution / factor`` is super-resolved in overlapping tiles of that size
        (``cmedit.fullres.tiles``; ``overlap`` in input pixels), blended with block-constant weights, so the
        output is exactly ``factor`` times the input's size at full detail.
        """
        if not isinstance(factor, int) or factor < 2:
            raise ValueError(f"factor must be an integer >= 2, got {factor!r}")
        if self.resolution % factor:
            raise ValueError(f"factor {factor} does not divide the model resolution {self.resolution}")
        low = images_to_tensor(image)
        if max(low.shape[-2:]) * factor > self.resolution:
            from .fullres.tiles import super_resolve_tiled

            return self._run_outside(super_resolve_tiled, low, factor, overlap=overlap, colorize=colorize, **kwargs)
        high = low.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        operator = SuperResolution(factor, channels=3)
        if colorize:
            operator = compose(Colorization(), operator)
        return self._edit(high, operator, **kwargs)

    # ----------------------------------------------------------------- shared steps

    def _run_outside(self, function, *args, output_type: str = "pil", return_dict: bool = True, **kwargs):
        """Run a crop- or tile-based editor (which calls :meth:`_edit` itself) and postprocess its output."""
        check_output_type(output_type)
        with torch.inference_mode():
            x = function(self, *args, **kwargs)
        return self._output(x, output_type, return_dict)

    def _run(self, scheduler, x: torch.Tensor, labels: torch.Tensor | None, generator) -> torch.Tensor:
        with self.progress_bar(total=len(scheduler.timesteps)) as bar:
            return sample(self.unet, scheduler, x, class_labels=labels, generator=generator,
                          callback=lambda *_: bar.update(), max_batch=self.max_batch_size)

    def edit_schedule(self, num_inference_steps: int | None, timesteps: list[int] | None,
                      strength: float = 1.0) -> tuple[int | None, list[int] | None]:
        """An edit's checked ``(num_inference_steps, timesteps)``: the defaults, and ``strength`` as timesteps."""
        if strength != 1:
            if timesteps is not None:
                raise ValueError("give strength or timesteps, not both (strength sets where the timesteps start)")
            steps = DEFAULT_EDIT_STEPS if num_inference_steps is None else num_inference_steps
            self._check_schedule(steps, None)
            return None, strength_timesteps(self.scheduler.config.num_train_timesteps, steps, strength)
        if num_inference_steps is None and timesteps is None:
            if self.edit_timesteps is None:
                num_inference_steps = DEFAULT_EDIT_STEPS
            else:
                timesteps = list(self.edit_timesteps)
        self._check_schedule(num_inference_steps, timesteps)
        return num_inference_steps, timesteps

    def _check_schedule(self, num_inference_steps: int | None, timesteps: list[int] | None) -> None:
        n_train = self.scheduler.config.num_train_timesteps
        if timesteps is not None:
            timesteps = list(timesteps)
            if not timesteps or any(int(t) != t for t in timesteps):
                raise ValueError(f"timesteps must be a non-empty list of integers, got {timesteps}")
            if any(b >= a for a, b in zip(timesteps, timesteps[1:])):
                raise ValueError(f"timesteps must be strictly descending, got {timesteps}")
            if timesteps[0] >= n_train or timesteps[-1] < 0:
                raise ValueError(f"timesteps must lie in [0, {n_train - 1}] for this model, got {timesteps}")
        elif num_inference_steps is None or not 1 <= num_inference_steps <= n_train:
            raise ValueError(f"num_inference_steps must be between 1 and {n_train}, got {num_inference_steps}")

    @staticmethod
    def _set_timesteps(scheduler, num_inference_steps, timesteps, device) -> None:
        if timesteps is not None:
            scheduler.set_timesteps(timesteps=list(timesteps), device=device)
        else:
            scheduler.set_timesteps(num_inference_steps, device=device)

    def _class_labels(
        self, class_labels: ClassLabels, batch_size: int, generator, device: torch.device
    ) -> torch.Tensor | None:
        """Labels for a class-conditional UNet; random ones drawn reproducibly when none are given.

        Random labels come from a generator seeded with ``generator.initial_seed()``, not from
        ``generator`` itself, so they do not shift the noise draws of design.md, section 5.
        """
        num_classes = self.unet.config.num_class_embeds
        if num_classes is None:
            if class_labels is not None:
                raise ValueError("this model is not class-conditional: do not pass class labels")
            return None
        if class_labels is None:
            label_generator = None
            if generator is not None:
                first = generator[0] if isinstance(generator, list) else generator
                label_generator = torch.Generator().manual_seed(first.initial_seed())
            labels = torch.randint(0, num_classes, (batch_size,), generator=label_generator)
        else:
            labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
            if len(labels) == 1:
                labels = labels.expand(batch_size)
            if len(labels) != batch_size:
                raise ValueError(f"got {len(labels)} class labels for a batch of {batch_size}")
            if labels.min() < 0 or labels.max() >= num_classes:
                raise ValueError(f"class labels must lie in [0, {num_classes - 1}], got {labels.tolist()}")
        return labels.to(device)

    def _output(self, x: torch.Tensor, output_type: str, return_dict: bool) -> ImagePipelineOutput | tuple:
        """Postprocess as ``ConsistencyModelPipeline`` does: ``[-1, 1]`` to ``[0, 1]``, then np or PIL."""
        images = (x / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            images = images.float().cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)


def check_output_type(output_type: str) -> None:
    """Accept the output types of diffusers' image pipelines."""
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
