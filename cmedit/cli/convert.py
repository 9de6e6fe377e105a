"""``cmedit convert``: an original OpenAI consistency-model checkpoint (``.pt``) to a diffusers folder."""

from __future__ import annotations

from pathlib import Path

import click

from ..models.presets import PRESETS, checkpoint_dir
from .options import user_errors

_PRESET_LINES = "\n".join(
    f"  {p.name:<20} {p.dataset} {p.resolution}x{p.resolution}, {p.training}, "
    f"{p.num_train_timesteps} timesteps, 2 steps: {','.join(map(str, p.timesteps))}"
    for p in PRESETS.values()
)


@click.command(epilog=f"""\b
The released models (openai/consistency_models; their .pt files are at
https://openaipublic.blob.core.windows.net/consistency/NAME.pt):
{_PRESET_LINES}

\b
Examples:
  cmedit convert cd_imagenet64_l2.pt                  # -> ./cd_imagenet64_l2/
  cmedit convert ct_cat256.pt models/cat/
  cmedit convert renamed.pt out/ --preset ct_imagenet64
  cmedit generate --model cd_imagenet64_l2/ --class-label "king penguin" -o penguin.png

\b
Any command also takes --model FILE.pt (converted in memory) or --model NAME, which
uses {checkpoint_dir()}/NAME.pt when it is there, else the hub.
""")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("output_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None, metavar="NAME",
              help="The released model CHECKPOINT is (scheduler grid and checks). "
                   "Default: the file's name, when it is one of them.")
@click.option("--resolution", type=click.IntRange(min=8), default=None, metavar="PIXELS",
              help="Image size (not in the weights). Default: the released model's.")
@click.option("--num-head-channels", type=click.IntRange(min=1), default=None, metavar="N",
              help="Channels per attention head (not in the weights). Default: the released model's, 64.")
@click.option("--num-train-timesteps", type=click.IntRange(min=2), default=None, metavar="N",
              help="Size of the scheduler's noise grid: 40 (CD), 201 (ct_imagenet64), 151 (LSUN CT). "
                   "Default: the preset's.")
@click.option("--overwrite", is_flag=True, help="Write into OUTPUT_DIR even if it is not empty.")
@click.option("--quiet", "-q", is_flag=True, help="No messages on stderr.")
def convert(checkpoint: Path, output_dir: Path | None, preset: str | None, resolution: int | None,
            num_head_channels: int | None, num_train_timesteps: int | None, overwrite: bool, quiet: bool) -> None:
    """Convert CHECKPOINT (an original OpenAI .pt file) to a diffusers folder OUTPUT_DIR.

    The folder (unet/, scheduler/, model_index.json) loads with cmedit --model OUTPUT_DIR and with
    diffusers' ConsistencyModelPipeline.from_pretrained. The architecture is read from the weights;
    the file is read with torch.load(weights_only=True), so a checkpoint that would run code is refused.
    OUTPUT_DIR defaults to ./<checkpoint name>/.
    """
    if output_dir is None:
        output_dir = Path(checkpoint.name.rsplit(".", 1)[0])
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise click.ClickException(f"{output_dir}: folder exists and is not empty (--overwrite to write into it)")
    with user_errors():
        from ..models.openai_checkpoints import load_checkpoint

        pipe = load_checkpoint(checkpoint, preset=preset, resolution=resolution, num_head_channels=num_head_channels,
                               num_train_timesteps=num_train_timesteps)
    save_folder_atomically(pipe, output_dir)
    if not quiet:
        unet, scheduler = pipe.unet.config, pipe.scheduler.config
        classes = f"{unet.num_class_embeds} classes" if unet.num_class_embeds else "unconditional"
        millions = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
        click.echo(f"{checkpoint}: {unet.sample_size}x{unet.sample_size}, {classes}, {millions:.1f}M parameters, "
                   f"{scheduler.num_train_timesteps} timesteps", err=True)
        click.echo(f"wrote {output_dir}/", err=True)


def save_folder_atomically(pipe, output_dir: Path) -> None:
    """``pipe.save_pretrained`` into a temporary sibling of ``output_dir``, swapped in only once complete:
    a failure (full disk, interruption) leaves ``output_dir`` as it was and no temporary folder behind."""
    from safetensors import SafetensorError

    from ..io.files import replace_folder_atomically

    try:
        replace_folder_atomically(output_dir, pipe.save_pretrained)
    except (OSError, SafetensorError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0] or type(error).__name__
        raise click.ClickException(f"{output_dir}: cannot write ({reason}); left as it was") from None
