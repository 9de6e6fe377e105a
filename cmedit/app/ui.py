"""The page: an image editor to paint the mask on, one tab per edit, the candidates in a gallery.

Layout and wiring only; each button calls ``cmedit.app.handlers.run_edit`` (the CLI's edits and file
writing) and shows its one-line ``ValueError`` as a ``gr.Error``. Each edit's button is also an API
endpoint named after it (``/inpaint``, ``/outpaint``, ``/colorize``, ``/super_resolve``, ``/img2img``,
``/generate``). Per-browser-tab results live in ``gr.State``; the model cache is the only shared state,
and the edits share one queue slot (``concurrency_id="model"``), so they run one at a time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import gradio as gr

from .handlers import ModelCache, Sampling, painted_mask, run_edit

INTRO = """# cmedit
Zero-shot editing with a consistency model. Load an image (upload, paste or drop it), paint the area
to fill with the brush (the eraser takes paint away), pick an edit and run it. Results are written as
`cmedit` writes them (alpha, 16 bits and ICC profile kept): pick a candidate to download it or to keep
editing it."""

BROWSER_FORMATS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


def _message(error: Exception, source: str | None) -> str:
    """The CLI's one-line message, with the upload's temporary folder left out of the file name."""
    if isinstance(error, click.ClickException):
        text = error.format_message()
    else:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if source:
        text = text.replace(str(source), Path(source).name)
    return text


def _source(image: dict | None, image_file: str | None) -> str | None:
    """The file to edit: the uploaded file itself when there is one, else the editor's background."""
    if image_file:
        return image_file
    if image and image.get("background"):
        return image["background"]
    return None


def _editor_value(path: str) -> dict:
    """The editor showing ``path`` with nothing painted."""
    return {"background": path, "layers": [], "composite": None}


def _preview(image_file: str | None):
    """An uploaded file into the editor: an 8-bit PNG copy for the browser (written by ``write_image``),
    so 16-bit, TIFF or CMYK files show too; the edit itself reads the file."""
    if not image_file:
        return gr.update()
    from ..io.files import read_image, write_image

    try:
        loaded = read_image(image_file)
    except ValueError as error:
        raise gr.Error(_message(error, image_file)) from None
    if Path(image_file).suffix.lower() in BROWSER_FORMATS and loaded.bits == 8:
        return _editor_value(image_file)
    preview = Path(tempfile.mkdtemp(prefix="cmedit-app-")) / f"{Path(image_file).stem}.png"
    write_image(preview, loaded.rgb, loaded.alpha)
    return _editor_value(str(preview))


def build_app(model: str | None = None, device: str = "auto", preload: bool = False) -> gr.Blocks:
    """The Gradio Blocks app; ``model`` is the model field's initial value (None: the embedded model),
    loaded now if ``preload`` (a ``ValueError`` if it cannot be), else on the first edit."""
    models = ModelCache(device)
    if preload:
        models(model)

    def run(edit: str, image, image_file, model_spec, steps, timesteps, seed, candidates, class_label, **options):
        source = _source(image, image_file)
        sampling = Sampling(model_spec, steps, timesteps, None if seed is None else int(seed), candidates,
                            class_label)
        try:
            paths, used = run_edit(models, edit, source, sampling, **options)
        except (ValueError, click.ClickException) as error:
            raise gr.Error(_message(error, source)) from None
        files = [str(path) for path in paths]
        return [(f, Path(f).name) for f in files], files[0], used, files

    with gr.Blocks(title="cmedit") as app:
        results = gr.State([])
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=3):
                image = gr.ImageEditor(
                    label="Image: paint the area to fill", type="filepath", format="png", image_mode="RGBA",
                    sources=["upload", "clipboard"], transforms=[], elem_id="editor",
                    layers=gr.LayerOptions(allow_additional_layers=False, layers=["Mask"]),
                    # A brush of radius 2 image pixels (its size control changes it); Gradio's "auto"
                    # size follows its 800-pixel canvas and covers a small image at once.
                    brush=gr.Brush(colors=[("#ff00ff", 0.6)], color_mode="fixed", default_size=2),
                    eraser=gr.Eraser(default_size=2))
                image_file = gr.File(label="Image file (edited as it is: alpha, 16 bits, ICC profile)",
                                     file_types=["image"], type="filepath", elem_id="image-file")
                gallery = gr.Gallery(label="Candidates (click one to choose it)", columns=4, height=220,
                                     object_fit="contain", elem_id="candidates", interactive=False)
                with gr.Row():
                    chosen = gr.File(label="Chosen result (full resolution, as cmedit writes it)",
                                     elem_id="chosen", interactive=False, scale=2)
                    with gr.Column(scale=1):
                        seed_used = gr.Number(label="Seed used", precision=0, interactive=False,
                                              elem_id="seed-used")
                        reuse_seed = gr.Button("Reuse this seed", size="sm")
                        use_as_input = gr.Button("Use as input", size="sm", elem_id="use-as-input")
            with gr.Column(scale=2):
                with gr.Accordion("Model and sampling", open=True):
                    model_spec = gr.Textbox(value=model or "", label="Model",
                                            placeholder="embedded; or a folder, a .pt file, a hub id")
                    with gr.Row():
                        steps = gr.Number(value=0, precision=0, minimum=0, label="Steps (0: model's default)")
                        timesteps = gr.Textbox(label="Timesteps (e.g. 22,0; overrides steps)")
                    with gr.Row():
                        seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)", elem_id="seed")
                        candidates = gr.Slider(1, 8, value=1, step=1, label="Candidates")
                    class_label = gr.Textbox(label="Class (class-conditional models)",
                                             placeholder="145 or king penguin; random when empty")
                common = [image, image_file, model_spec, steps, timesteps, seed, candidates, class_label]
                buttons = {}
                with gr.Tabs():
                    with gr.Tab("Inpaint", id="inpaint"):
                        mask_file = gr.File(label="Mask file instead of painting (white = fill)",
                                            file_types=["image"], type="filepath")
                        resize_mask = gr.Checkbox(label="Resize the mask to the image")
                        inpaint_strength = gr.Slider(0.05, 1, value=1, step=0.05, label="Strength")
                        with gr.Row():
                            context = gr.Number(value=0.5, minimum=0, label="Context (large images)")
                            inpaint_feather = gr.Number(value=3, precision=0, minimum=0, label="Feather")
                        buttons["inpaint"] = gr.Button("Inpaint", variant="primary", elem_id="run-inpaint")
                    with gr.Tab("Outpaint", id="outpaint"):
                        with gr.Row():
                            left = gr.Number(value=0, precision=0, minimum=0, label="Left")
                            right = gr.Number(value=8, precision=0, minimum=0, label="Right")
                            top = gr.Number(value=0, precision=0, minimum=0, label="Top")
                            bottom = gr.Number(value=0, precision=0, minimum=0, label="Bottom")
                        outpaint_strength = gr.Slider(0.05, 1, value=1, step=0.05, label="Strength")
                        outpaint_feather = gr.Number(value=3, precision=0, minimum=0, label="Feather")
                        buttons["outpaint"] = gr.Button("Outpaint", variant="primary", elem_id="run-outpaint")
                    with gr.Tab("Colorize", id="colorize"):
                        colorize_strength = gr.Slider(0.05, 1, value=1, step=0.05, label="Strength")
                        buttons["colorize"] = gr.Button("Colorize", variant="primary", elem_id="run-colorize")
                    with gr.Tab("Super-resolve", id="super_resolve"):
                        factor = gr.Number(value=4, precision=0, minimum=2, label="Factor (divides the model's size)",
                                           elem_id="factor")
                        also_colorize = gr.Checkbox(label="Colorize too")
                        kernel = gr.Dropdown(["default", "bicubic", "bilinear", "lanczos", "box"], value="default",
                                             label="How the small image was made (default: bicubic; box with "
                                                   "colorize)", elem_id="kernel")
                        sr_noise = gr.Number(value=0, minimum=0, maximum=1, label="Noise level (0-1)",
                                             elem_id="noise-level")
                        sr_strength = gr.Slider(0.05, 1, value=1, step=0.05,
                                                label="Strength (1: the kernel's own restoration schedule)")
                        buttons["super_resolve"] = gr.Button("Super-resolve", variant="primary",
                                                             elem_id="run-super-resolve")
                    with gr.Tab("img2img", id="img2img"):
                        img2img_strength = gr.Slider(0.05, 1, value=0.4, step=0.05, label="Strength")
                        buttons["img2img"] = gr.Button("img2img", variant="primary", elem_id="run-img2img")
                    with gr.Tab("Generate", id="generate"):
                        gr.Markdown("New samples from the model (as many as the candidates).")
                        buttons["generate"] = gr.Button("Generate", variant="primary", elem_id="run-generate")
        outputs = [gallery, chosen, seed_used, results]

        def inpaint(image, image_file, model, steps, timesteps, seed, candidates, class_label, mask_file,
                    resize_mask, strength, context, feather, progress=gr.Progress(track_tqdm=True)):
            if mask_file:
                from ..io.files import read_mask

                try:
                    mask, name = read_mask(mask_file), Path(mask_file).name
                except ValueError as error:
                    raise gr.Error(_message(error, mask_file)) from None
            else:
                mask, name = painted_mask((image or {}).get("layers")), "the painted mask"
                loaded_alpha = mask is None and _has_alpha(_source(image, image_file))
                if mask is None and not loaded_alpha:
                    from PIL import Image

                    mask = Image.new("L", (1, 1))  # nothing painted: the CLI's empty-mask error
                    resize_mask = True
            return run("inpaint", image, image_file, model, steps, timesteps, seed, candidates, class_label,
                       mask_image=mask, mask_name=name, resize_mask=resize_mask, strength=strength,
                       context=context, feather=int(feather))

        def outpaint(image, image_file, model, steps, timesteps, seed, candidates, class_label, left, right, top,
                     bottom, strength, feather, progress=gr.Progress(track_tqdm=True)):
            return run("outpaint", image, image_file, model, steps, timesteps, seed, candidates, class_label,
                       left=left, right=right, top=top, bottom=bottom, strength=strength, feather=int(feather))

        def colorize(image, image_file, model, steps, timesteps, seed, candidates, class_label, strength,
                     progress=gr.Progress(track_tqdm=True)):
            return run("colorize", image, image_file, model, steps, timesteps, seed, candidates, class_label,
                       strength=strength)

        def super_resolve(image, image_file, model, steps, timesteps, seed, candidates, class_label, factor,
                          also_colorize, kernel, noise_level, strength, progress=gr.Progress(track_tqdm=True)):
            return run("super_resolve", image, image_file, model, steps, timesteps, seed, candidates, class_label,
                       factor=factor, also_colorize=also_colorize, kernel=kernel, noise_level=float(noise_level or 0),
                       strength=None if strength == 1 else strength)

        def img2img(image, image_file, model, steps, timesteps, seed, candidates, class_label, strength,
                    progress=gr.Progress(track_tqdm=True)):
            return run("img2img", image, image_file, model, steps, timesteps, seed, candidates, class_label,
                       strength=strength)

        def generate(image, image_file, model, steps, timesteps, seed, candidates, class_label,
                     progress=gr.Progress(track_tqdm=True)):
            return run("generate", image, image_file, model, steps, timesteps, seed, candidates, class_label)

        wiring = {
            "inpaint": (inpaint, [mask_file, resize_mask, inpaint_strength, context, inpaint_feather]),
            "outpaint": (outpaint, [left, right, top, bottom, outpaint_strength, outpaint_feather]),
            "colorize": (colorize, [colorize_strength]),
            "super_resolve": (super_resolve, [factor, also_colorize, kernel, sr_noise, sr_strength]),
            "img2img": (img2img, [img2img_strength]),
            "generate": (generate, []),
        }
        for name, (fn, extra) in wiring.items():
            buttons[name].click(fn, common + extra, outputs, api_name=name, concurrency_id="model",
                                concurrency_limit=1)

        image_file.upload(_preview, image_file, image, api_visibility="private")

        def select(files: list[str], event: gr.SelectData):
            return files[event.index] if files and event.index < len(files) else gr.update()

        gallery.select(select, results, chosen, api_visibility="private")
        reuse_seed.click(lambda used: used, seed_used, seed, api_visibility="private")

        def use(path: str | None):
            if not path:
                raise gr.Error("no result to use yet: run an edit first")
            return path, _editor_value(path)

        use_as_input.click(use, chosen, [image_file, image], api_visibility="private")
    return app


def _has_alpha(source: str | None) -> bool:
    """Whether the file to edit has an alpha channel (its transparent pixels are then filled)."""
    if not source:
        return False
    from ..io.files import read_image

    try:
        return read_image(source).alpha is not None
    except ValueError:
        return False  # run_edit reports the unreadable file
