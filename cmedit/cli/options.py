"""Options and steps shared by the subcommands: model loading, schedules, seeds, outputs, errors."""

from __future__ import annotations

import contextlib
import functools
import secrets
from typing import Callable, Iterator

import click

DTYPES = ("auto", "float32", "float16", "bfloat16")


def parse_timesteps(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """``"22,0"`` -> ``[22, 0]``."""
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 22,0, got {value!r}") from None


class ClassLabel(click.ParamType):
    """A class index (``145``) or an ImageNet class name (``"king penguin"``), as an index."""

    name = "class label"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        try:
            index = int(text)
        except ValueError:
            from ..models.imagenet_classes import imagenet_class_index

            try:
                return imagenet_class_index(text)
            except ValueError as error:
                self.fail(str(error), param, ctx)
        if index < 0:
            self.fail(f"class index must be >= 0, got {index}", param, ctx)
        return index


def model_options(command: Callable) -> Callable:
    """The options every model-running subcommand takes.

    With a released model (``--model cd_imagenet64_l2``, its hub id or a file named after it) and
    neither ``--steps`` nor ``--timesteps`` (nor ``--strength`` below 1, which sets its own
    timesteps), the command gets the paper's 2-step ``timesteps``.
    """

    @functools.wraps(command)
    def with_preset_schedule(*args, model=None, steps=None, timesteps=None, quiet=False, num_processes=1, **kwargs):
        from ..batch.distributed import launched

        if num_processes > 1 and not launched():  # before anything slow: this process only waits
            from .launch import relaunch

            relaunch(num_processes, click.get_current_context().meta["cmedit.args"], kwargs.get("device", "auto"))
        remember_text_options(kwargs)
        strength = kwargs.get("strength", 1.0)
        strength = 1.0 if strength is None else strength  # None: the library's default (restorations)
        check_strength(strength, timesteps)
        timesteps = preset_timesteps(model, steps, timesteps, strength, quiet)
        return command(*args, model=model, steps=steps, timesteps=timesteps, quiet=quiet, **kwargs)

    options = [
        click.option("--model", "-m", metavar="PATH|NAME|ID", default=None,
                     help="Consistency model: a diffusers folder (unet/ + scheduler/), an original OpenAI .pt "
                          "checkpoint, a released model's name (cd_imagenet64_l2, cd_imagenet64_lpips, "
                          "ct_imagenet64, cd_bedroom256_l2, cd_bedroom256_lpips, ct_bedroom256, ct_cat256: "
                          "its local copy, else its hub id) or a hub id (needs the network). "
                          "Default: the embedded model."),
        click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Number of equally spaced sampling steps (network evaluations)."),
        click.option("--timesteps", callback=parse_timesteps, metavar="T1,T2,...",
                     help="Explicit descending indices into the model's noise grid, e.g. 22,0 "
                          "(overrides --steps). Default: for a released model, the paper's 2-step choice; "
                          "for a model folder that names one in its cmedit.json (edit_timesteps, "
                          "generate_timesteps), such as the embedded model, that schedule; else 4 steps for "
                          "edits and 1 for generate."),
        click.option("--seed", type=int, default=None,
                     help="Random seed; a random one is drawn and printed when not given."),
        click.option("--device", default="auto", show_default=True,
                     help="torch device: cpu, cuda, cuda:1, mps, or auto (cuda when available)."),
        click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
                     help="Weights' precision; auto is float16 on cuda and float32 elsewhere "
                          "(float16 is refused on the CPU)."),
        click.option("--class-label", type=ClassLabel(), default=None, metavar="N|NAME",
                     help='Class of class-conditional models: an index (145) or an ImageNet class name '
                          '("king penguin"); random, from the seed, when not given.'),
        click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Number of candidates to produce."),
        click.option("--num-processes", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
                     help="Split the files between N processes on this machine (through accelerate launch; "
                          "each on its own GPU where there are several), with the same outputs as one process. "
                          "Several machines: `accelerate launch -m cmedit ...` (docs/batch.md)."),
        click.option("--compile", "compile_unet", is_flag=True,
                     help="Compile the UNet with torch.compile: the first call takes 40-60 s longer on a CPU "
                          "and gains little there (see BENCHMARKS.md); for long GPU runs."),
        click.option("--channels-last", is_flag=True,
                     help="Keep the UNet's weights channels-last (NHWC), which some convolution kernels prefer."),
        click.option("--max-batch", type=click.IntRange(min=0), default=64, show_default=True, metavar="N",
                     help="Run the network on at most N images at a time (crops, tiles, candidates and files "
                          "share a batch; 0: no bound): lower it when memory runs out; results do not change."),
        click.option("--overwrite", is_flag=True, help="Replace output files that already exist (without it an "
                     "existing output is skipped, never replaced; see docs/guarantees.md)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars or messages on stderr."),
        *text_options(),
    ]
    decorated = with_preset_schedule
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


TEXT_OPTIONS = ("prompt", "negative_prompt", "guidance_scale", "lora", "model_config")
_TEXT_KEY = "cmedit.text_options"


def text_options() -> list:
    """``--prompt``, ``--negative-prompt``, ``--guidance-scale``, ``--lora``, ``--model-config``: latent models only."""
    return [
        click.option("--prompt", "-p", default=None, metavar="TEXT",
                     help="Latent models (LCM): what the generated content shows. Default: no prompt."),
        click.option("--negative-prompt", default=None, metavar="TEXT",
                     help="Latent models with an LCM-LoRA and --guidance-scale above 1: what to avoid."),
        click.option("--guidance-scale", type=click.FloatRange(min=0), default=None, metavar="W",
                     help="Latent models: an LCM's embedded guidance (default 8) or, with an LCM-LoRA, "
                          "classifier-free guidance (default 1: none; 1-2 recommended)."),
        click.option("--lora", default=None, metavar="ID|FILE",
                     help="Add an LCM-LoRA (hub id, folder or .safetensors file) to a Stable Diffusion or SDXL "
                          "--model, e.g. latent-consistency/lcm-lora-sdv1-5 or latent-consistency/lcm-lora-sdxl."),
        click.option("--model-config", default=None, metavar="FOLDER",
                     help="A single-file Stable Diffusion or SDXL --model: a local diffusers folder with its configs "
                          "(default: fetched from the hub)."),
    ]


def remember_text_options(kwargs: dict) -> None:
    """Move the latent-model options out of a command's keyword arguments into the click context.

    ``load_model`` reads them: the LoRA and config at loading, the prompt settings as the latent
    pipeline's defaults; a pixel model given any of them is one clear error.
    """
    values = {name: kwargs.pop(name, None) for name in TEXT_OPTIONS}
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_TEXT_KEY] = values


def _text_option_values() -> dict:
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(_TEXT_KEY, {})) if ctx is not None else {}


def preset_timesteps(model: str | None, steps: int | None, timesteps: list[int] | None, strength: float = 1.0,
                     quiet: bool = True) -> list[int] | None:
    """``timesteps``, or for a released model with no schedule asked for (and ``strength`` 1) the paper's
    2-step timesteps (``cmedit.models.presets``)."""
    from ..models.presets import preset_for

    preset = preset_for(model)
    if preset is not None and steps is None and timesteps is None and strength == 1:
        timesteps = list(preset.timesteps)
        if not quiet:
            click.echo(f"{preset.name}: timesteps {','.join(map(str, timesteps))} (the paper's 2-step schedule; "
                       "--steps or --timesteps to change)", err=True)
    return timesteps


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's input errors into one clear line on stderr and exit code 1."""
    try:
        yield
    except ValueError as error:  # ImageReadError, ImageWriteError, ModelLoadError and the library's checks
        raise click.ClickException(str(error).splitlines()[0] if str(error) else type(error).__name__) from None


def load_model(model: str | None, device: str, dtype: str, quiet: bool, compile_unet: bool = False,
               channels_last: bool = False, max_batch: int | None = None, max_pixels: int | None = None):
    """Load the pipeline on the requested device and precision, with progress bars per ``quiet``.

    ``max_pixels`` (``--max-pixels``) becomes the pipeline's ``max_pixels``, so that the library's
    refusals (``cmedit.fullres.budget.MemoryBudgetError``) use the limit the command checked files
    against; ``None`` keeps the default, ``DEFAULT_MAX_PIXELS``."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    from ..batch.distributed import process_device
    from ..models.loading import load_pipeline

    diffusers_logging.set_verbosity_error()
    device = process_device(device)  # several processes: each on its own accelerator
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError:
        raise click.BadParameter(f"unknown device {device!r}", param_hint="--device") from None
    try:
        torch.empty(0, device=torch_device)  # the device exists and this torch build can use it
    except (RuntimeError, AssertionError):  # torch raises AssertionError for a build without CUDA
        raise click.BadParameter(f"{device!r} is not available to this torch build on this machine",
                                 param_hint="--device") from None
    if dtype == "auto":
        dtype = "float16" if torch_device.type == "cuda" else "float32"
    if dtype == "float16" and torch_device.type == "cpu":
        raise click.BadParameter("float16 is not supported on the CPU; use float32 or bfloat16", param_hint="--dtype")
    text = {k: v for k, v in _text_option_values().items() if v is not None}
    if quiet:  # latent models load several components, each with its own progress bar
        diffusers_logging.disable_progress_bar()
        with contextlib.suppress(ImportError):
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
    with user_errors():
        pipe = load_pipeline(model, device=torch_device, dtype=getattr(torch, dtype), lora=text.pop("lora", None),
                             config=text.pop("model_config", None))
    if hasattr(pipe, "text_defaults"):
        from ..latent.loading import enable_memory_savings

        enable_memory_savings(pipe)
    if text:
        if not hasattr(pipe, "text_defaults"):
            names = ", ".join("--" + name.replace("_", "-") for name in text)
            raise click.UsageError(f"{names}: only for latent models (LCM, or Stable Diffusion with --lora); "
                                   "this is a pixel consistency model")
        from ..latent.pipeline import TextConditioning

        pipe.text_defaults = TextConditioning(**text)
        with user_errors():
            pipe._text(None, None, None, None)  # refuse a bad combination before any file is read
    if compile_unet or channels_last:
        from ..models.acceleration import accelerate_pipeline

        accelerate_pipeline(pipe, compile=compile_unet, channels_last=channels_last)
    from ..batch.distributed import is_main_process

    pipe.set_progress_bar_config(disable=quiet or not is_main_process(), leave=False)
    pipe.max_batch_size = max_batch or None  # 0: the whole batch at once
    if max_pixels is not None and hasattr(pipe, "max_pixels"):
        pipe.max_pixels = max_pixels
    show_library_notes(quiet)
    return pipe


def _current_stderr_handler():
    import logging
    import sys

    class CurrentStderrHandler(logging.StreamHandler):
        """A ``StreamHandler`` on whatever ``sys.stderr`` is when a line is written (click's test
        runner swaps it), not the one it was made with."""

        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value) -> None:
            pass

    return CurrentStderrHandler()


def show_library_notes(quiet: bool) -> None:
    """The library's warnings (``logging``, e.g. the embedded model's domain) as ``note: ...`` lines on stderr."""
    import logging

    library = logging.getLogger("cmedit")
    if not any(getattr(handler, "cmedit_cli", False) for handler in library.handlers):
        handler = _current_stderr_handler()  # stderr, looked up when a line is written
        handler.setFormatter(logging.Formatter("note: %(message)s"))
        handler.cmedit_cli = True
        library.addHandler(handler)
    library.setLevel(logging.ERROR if quiet else logging.WARNING)


def resolve_seed(seed: int | None) -> tuple[int, bool]:
    """The seed to use and whether it was drawn (a random one when none is given)."""
    from ..batch.distributed import broadcast

    if seed is None:
        return broadcast(secrets.randbelow(2**31)), True  # with several processes, the main process's draw
    return seed, False


def make_generator(seed: int):
    """A CPU ``torch.Generator`` (the same draws on every device)."""
    import torch

    return torch.Generator().manual_seed(seed)


def candidate_generators(seed: int, num_images: int, num_samples: int) -> list:
    """One CPU generator per output: candidate ``k`` of every image is seeded with ``seed + k``.

    A list of generators makes each image's result independent of the other images of its batch,
    so batching several files together gives the same images as editing them one by one.
    """
    return [make_generator(seed + k) for _ in range(num_images) for k in range(num_samples)]


def file_class_labels(pipe, class_label: int | None, seeds: list[int]) -> int | list[int] | None:
    """Class labels of a batch of files seeded with ``seeds``: ``class_label`` when given; for a
    class-conditional model without one, each file's label is the one a run on that file alone draws
    (``ConsistencyEditPipeline._class_labels``), so a file's result does not depend on its batch."""
    import torch

    num_classes = pipe.unet.config.num_class_embeds
    if class_label is not None or num_classes is None:
        return class_label
    return [int(torch.randint(0, num_classes, (1,), generator=make_generator(seed))) for seed in seeds]


def split_candidates(images, num_images: int) -> list:
    """``(B * K, ...)`` outputs, candidates adjacent, to ``B`` lists of ``K``."""
    per_image = len(images) // num_images
    return [list(images[i * per_image:(i + 1) * per_image]) for i in range(num_images)]


class ModelLoader:
    """Loads the pipeline on first use, so that argument and file errors come before the slow part.

    A seed drawn at random (:meth:`seed`) is printed when the model is loaded, that is when sampling
    starts, so that any result can be redone and a run that fails on its input prints none.
    """

    def __init__(self, model: str | None, device: str, dtype: str, quiet: bool, compile_unet: bool = False,
                 channels_last: bool = False, max_batch: int | None = None, max_pixels: int | None = None) -> None:
        self.args = (model, device, dtype, quiet, compile_unet, channels_last, max_batch, max_pixels)
        self.quiet = quiet
        self._pipe = None
        self._drawn_seed: int | None = None

    def seed(self, seed: int | None) -> int:
        """``seed``, or a random one (reported once sampling starts) when it is ``None``."""
        seed, drawn = resolve_seed(seed)
        if drawn:
            self._drawn_seed = seed
        return seed

    def __call__(self):
        from ..batch.distributed import is_main_process

        if self._pipe is None:
            self._pipe = load_model(*self.args)
            if self._drawn_seed is not None and not self.quiet and is_main_process():
                click.echo(f"seed: {self._drawn_seed}", err=True)
        return self._pipe


def schedule_kwargs(steps: int | None, timesteps: list[int] | None, strength: float | None = None) -> dict:
    """``num_inference_steps`` / ``timesteps`` (and ``strength``, for edits) for the library call.

    Without --steps and --timesteps both are None, and the pipeline takes the model's own schedule
    (``ConsistencyEditPipeline.edit_timesteps`` / ``generate_timesteps``) or its default.
    """
    kwargs = {} if strength is None else {"strength": strength}
    if timesteps is not None:
        return {"num_inference_steps": None, "timesteps": timesteps, **kwargs}
    return {"num_inference_steps": steps, "timesteps": None, **kwargs}


def check_strength(strength: float, timesteps: list[int] | None) -> None:
    """Refuse ``--strength`` below 1 with ``--timesteps`` (a usage error: strength sets the timesteps)."""
    if strength != 1 and timesteps is not None:
        raise click.UsageError("give --strength or --timesteps, not both: --strength sets where the steps "
                               "start (use --steps for their number)")


def strength_option(default: float, help: str) -> Callable:
    """``--strength``: where an edit's steps start on the noise grid, in (0, 1] (``pipe.edit``)."""
    return click.option("--strength", type=click.FloatRange(min=0, max=1, min_open=True), default=default,
                        show_default=True, help=help)


class NoiseLevel(click.ParamType):
    """``--noise-level``: a number in ``[0, 1]`` (pixel units) or ``auto``; returned as a float or ``"auto"``."""

    name = "noise level"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            number = float(text)
        except ValueError:
            self.fail(f"expected a number in [0, 1] or 'auto', got {value!r}", param, ctx)
        if not 0 <= number <= 1:
            self.fail(f"must be in [0, 1] (standard deviation in pixel units, 0.05 ~ 13 of 255 levels), "
                      f"got {value}", param, ctx)
        return number


def noise_level_option(help: str) -> Callable:
    """``--noise-level``: the input's Gaussian noise (``cmedit.core.noise``), default 0."""
    return click.option("--noise-level", type=NoiseLevel(), default=0.0, show_default=True, metavar="SIGMA|auto",
                        help=help + " Standard deviation in [0, 1] pixel units (0.05 ~ 13 of 255 levels), or "
                                    "'auto' to estimate it from each input.")
