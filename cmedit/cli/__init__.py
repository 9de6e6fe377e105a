"""The ``cmedit`` command line: one module per subcommand, loaded only when that subcommand runs.

``cmedit --help`` and ``cmedit --version`` import neither torch nor diffusers.
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from .. import __version__

# name -> "module:attribute"; each module parses, reads files, calls the library and writes files.
COMMANDS = {
    "inpaint": "cmedit.cli.inpaint:inpaint",
    "outpaint": "cmedit.cli.outpaint:outpaint",
    "colorize": "cmedit.cli.colorize:colorize",
    "img2img": "cmedit.cli.img2img:img2img",
    "super-resolve": "cmedit.cli.super_resolve:super_resolve",
    "deblur": "cmedit.cli.deblur:deblur",
    "generate": "cmedit.cli.generate:generate",
    "train": "cmedit.cli.train:train",
    "eval": "cmedit.cli.eval:eval",
    "convert": "cmedit.cli.convert:convert",
    "app": "cmedit.cli.app:app",
}

SHORT_HELP = {
    "inpaint": "Fill the white area of a mask in an image.",
    "outpaint": "Extend an image's canvas and fill the new border.",
    "colorize": "Colorize a greyscale image.",
    "img2img": "Redraw a rough image (strokes, a sketch) as the model draws.",
    "super-resolve": "Upscale an image by 2, 4, 8, ...",
    "deblur": "Undo a known blur (Gaussian, box, motion or a kernel file).",
    "generate": "Sample new images from the model.",
    "train": "Train a consistency model on a folder of images.",
    "eval": "Measure edit quality against classical baselines on held-out images.",
    "convert": "Convert an original OpenAI .pt checkpoint to a diffusers folder.",
    "app": "Serve a local web page: paint a mask, pick an edit, see the candidates.",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is run or its help is shown."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["cmedit.args"] = list(args)  # for --num-processes, which runs the same command again
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def invoke(self, ctx: click.Context):
        """Run the subcommand; SIGTERM is handled as SIGINT (temporary files removed, nothing half
        written), and either exits with the shell's convention 128 + signal number (130, 143)."""
        received = []

        def terminate(signum, frame):
            received.append(signum)
            raise KeyboardInterrupt

        previous = _set_handler(signal.SIGTERM, terminate)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(128 + (received[0] if received else signal.SIGINT))
        finally:
            if previous is not None:
                _set_handler(signal.SIGTERM, previous)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SHORT_HELP[name]) for name in COMMANDS])


def _set_handler(signum: int, handler):
    """``signal.signal`` where it is allowed (the main thread); ``None`` elsewhere."""
    try:
        return signal.signal(signum, handler)
    except ValueError:
        return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cmedit")
def main() -> None:
    """Zero-shot image editing with consistency models.

    Inpainting, colorization and super-resolution with a model trained only to
    generate: the known pixels are injected between the few denoising steps
    (Song et al. 2023, Algorithm 4). Every command works offline on the embedded
    default model, or on any consistency model folder given with --model.

    \b
    Examples:
      cmedit inpaint --mask samples/center_mask.png samples/face.png -o filled.png
      cmedit colorize samples/face_gray.png -o color.png
      cmedit super-resolve --factor 4 samples/face_8x8.png -o big.png
      cmedit generate -n 16 -o generated/
    """
