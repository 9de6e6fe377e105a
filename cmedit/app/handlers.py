"""What the web app's buttons do, without Gradio: read the files, call the CLI's edits, write the results.

Every edit here is the one the command line runs (``cmedit.cli``'s ``inpaint_edit``, ``outpaint_edit``,
``super_resolve_edit``, ``whole_image_edit``), on a file read by ``cmedit.io.files.read_image`` and
written by ``cmedit.cli.files.write_result``: a result downloaded from the page is the file that
``cmedit <edit> IMAGE -o folder/`` writes with the same settings and seed (alpha, 16 bits, ICC kept).

Errors are the library's one-line ``ValueError``s (and click's usage errors); ``cmedit.app.ui``
shows them. The only state shared between browser tabs is the :class:`ModelCache`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

EDITS = ("inpaint", "outpaint", "colorize", "super_resolve", "img2img", "generate")

# How each edit names its outputs, as the CLI does: <image>_<task>.png (<image>_<task>_<k>.png for candidates).
OUTPUT_TASK = {"inpaint": "inpainted", "outpaint": "outpainted", "colorize": "colorized", "img2img": "img2img"}


class ModelCache:
    """Pipelines loaded once and kept, by model spec (``None``: the embedded model, a folder, a ``.pt``
    file, a released model's name or a hub id), each loaded as ``cmedit --model SPEC`` loads it."""

    def __init__(self, device: str = "auto", dtype: str = "auto") -> None:
        self.device, self.dtype = device, dtype
        self._pipes: dict[str | None, object] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(spec: str | None) -> str | None:
        spec = (spec or "").strip()
        return spec or None

    def __call__(self, spec: str | None):
        from ..cli.options import load_model

        key = self.key(spec)
        with self._lock:
            if key not in self._pipes:
                logger.info("loading model %s", key or "(embedded)")
                # quiet=False: the progress bars stay on, for the page's progress bar.
                self._pipes[key] = load_model(key, self.device, self.dtype, quiet=False)
            return self._pipes[key]


@dataclass
class Sampling:
    """The settings every edit takes, as the CLI's ``model_options``: ``steps`` 0 or None and an empty
    ``timesteps`` take the model's default; ``seed`` None or negative draws one."""

    model: str | None = None
    steps: int | None = None
    timesteps: str | None = None
    seed: int | None = None
    num_samples: int = 1
    class_label: str | None = None


def parse_sampling(sampling: Sampling, strength: float = 1.0) -> dict:
    """``Sampling`` to the edit factories' keyword arguments (the CLI's parsing and checks)."""
    import secrets

    from ..cli.options import ClassLabel, check_strength, parse_timesteps, preset_timesteps

    steps = int(sampling.steps) if sampling.steps else None
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    timesteps = parse_timesteps(None, None, (sampling.timesteps or "").strip() or None)
    check_strength(strength, timesteps)
    timesteps = preset_timesteps(sampling.model, steps, timesteps, strength)
    num_samples = int(sampling.num_samples or 1)
    if num_samples < 1:
        raise ValueError(f"number of candidates must be >= 1, got {num_samples}")
    label = (sampling.class_label or "").strip()
    seed = sampling.seed
    seed = secrets.randbelow(2**31) if seed is None or seed < 0 else int(seed)
    return {"steps": steps, "timesteps": timesteps, "seed": seed, "num_samples": num_samples,
            "class_label": ClassLabel().convert(label, None, None) if label else None}


def painted_mask(layers: list[str | None] | None):
    """The union of the painted pixels (alpha > 0) of the editor's layer files as a PIL ``L`` mask
    (255 = fill), or None when nothing is painted."""
    from PIL import Image

    painted = None
    for layer in layers or []:
        if layer is None:
            continue
        with Image.open(layer) as image:
            rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[..., 3] > 0
        painted = alpha if painted is None or painted.shape != alpha.shape else painted | alpha
    if painted is None or not painted.any():
        return None
    return Image.fromarray((painted * 255).astype(np.uint8), mode="L")


def run_edit(models: ModelCache, edit: str, source: str | Path | None, sampling: Sampling, *,
             mask_image=None, mask_name: str = "the painted mask", resize_mask: bool = False,
             strength: float | None = None, context: float = 0.5, feather: int = 3, left: int = 0, right: int = 0,
             top: int = 0, bottom: int = 0, factor: int = 4, also_colorize: bool = False,
             kernel: str | None = None, noise_level: float | str = 0.0,
             out_dir: str | Path | None = None) -> tuple[list[Path], int]:
    """Run ``edit`` (one of :data:`EDITS`) on the image file ``source`` as the CLI would; write the
    candidates into ``out_dir`` (a new temporary folder by default) with the CLI's names.

    ``strength``: None is 1 (for super-resolve with a restoration kernel: its own schedule, as the CLI).
    ``mask_image`` (inpaint): a PIL image, white = fill; None fills the image's transparent pixels.
    ``kernel`` and ``noise_level`` (super-resolve): how the small image was made, as ``--kernel`` and
    ``--noise-level`` (``None`` or ``"default"``: the library's default kernel).
    Returns the written files and the seed used. Raises ``ValueError`` (one line) for bad input.
    """
    from ..cli.files import plan_jobs, write_result
    from ..io.files import read_image

    if edit not in EDITS:
        raise ValueError(f"unknown edit {edit!r}; one of {', '.join(EDITS)}")
    options = parse_sampling(sampling, 1.0 if strength is None else strength)
    out_dir = Path(out_dir if out_dir is not None else tempfile.mkdtemp(prefix="cmedit-app-"))
    pipe = _loader(models, sampling.model)

    if edit == "generate":
        return _generate(pipe, options, out_dir), options["seed"]
    if source is None:
        raise ValueError("no image: upload one (or paste it, or drop it on the editor)")
    source = Path(source)
    loaded = read_image(source)
    common = dict(strength=1.0 if strength is None and edit != "super_resolve" else strength, steps=options["steps"], timesteps=options["timesteps"], seed=options["seed"],
                  class_label=options["class_label"], num_samples=options["num_samples"])
    if edit == "inpaint":
        from ..cli.inpaint import inpaint_edit

        run = inpaint_edit(pipe, mask_image=mask_image, mask_name=mask_name, resize_mask=resize_mask,
                           context=context, feather=feather, quiet=True, **common)
        task = OUTPUT_TASK[edit]
    elif edit == "outpaint":
        from ..cli.outpaint import outpaint_edit

        run = outpaint_edit(pipe, left=int(left), right=int(right), top=int(top), bottom=int(bottom),
                            feather=feather, **common)
        task = OUTPUT_TASK[edit]
    elif edit == "super_resolve":
        from ..cli.super_resolve import super_resolve_edit

        run = super_resolve_edit(pipe, factor=int(factor), also_colorize=also_colorize,
                                 kernel=None if kernel in (None, "", "default") else kernel,
                                 noise_level=noise_level, **common)
        task = f"x{int(factor)}"
    else:
        from ..cli.files import whole_image_edit

        run = whole_image_edit(pipe, edit, **common)
        task = OUTPUT_TASK[edit]
    (job,) = plan_jobs([source], f"{out_dir}/", task, options["num_samples"])
    (results,) = run([loaded])
    for path, result in zip(job.outputs, results):
        write_result(path, result)
    return job.outputs, options["seed"]


def _loader(models: ModelCache, spec: str | None):
    """A zero-argument callable returning the cached pipeline, as the CLI's ``ModelLoader``."""
    return lambda: models(spec)


def _generate(pipe, options: dict, out_dir: Path) -> list[Path]:
    """``cmedit generate -n N``: N samples, files 0000.png, ..."""
    from ..cli.files import Result, write_result
    from ..cli.options import file_class_labels, make_generator, schedule_kwargs

    count = options["num_samples"]
    seeds = [options["seed"] + i for i in range(count)]  # image i: seed + i, as cmedit generate
    images = pipe().generate(batch_size=count, class_labels=file_class_labels(pipe(), options["class_label"], seeds),
                             generator=[make_generator(s) for s in seeds], output_type="np",
                             **schedule_kwargs(options["steps"], options["timesteps"])).images
    paths = [out_dir / f"{i:04d}.png" for i in range(count)]
    for path, rgb in zip(paths, images):
        write_result(path, Result(rgb))
    return paths
