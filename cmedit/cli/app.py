"""``cmedit app``: the local web app (Gradio) on 127.0.0.1, unless a flag exposes it."""

from __future__ import annotations

import click


@click.command(epilog="""\b
Examples:
  cmedit app                       # http://127.0.0.1:7860
  cmedit app --port 8000 --model path/to/model
  cmedit app --host 0.0.0.0        # reachable from other machines on the network
""")
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True,
              help="Port to serve on (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 127.0.0.1 keeps the app on this machine, 0.0.0.0 exposes it.")
@click.option("--share", is_flag=True, help="Also open a public Gradio share link (needs the network).")
@click.option("--model", "-m", metavar="PATH|NAME|ID", default=None,
              help="Model the page starts with (it can be changed there). Default: the embedded model.")
@click.option("--device", default="auto", show_default=True, help="torch device: cpu, cuda, mps, or auto.")
def app(port, host, share, model, device) -> None:
    """Serve a web page to paint a mask, run an edit and download the candidates.

    Needs the app extra: pip install "cmedit[app]". Every edit is also an API endpoint
    (/inpaint, /outpaint, /colorize, /super_resolve, /img2img, /generate) for gradio_client.
    """
    try:
        from ..app.ui import build_app
    except ImportError as error:
        raise click.ClickException(f"the web app needs Gradio ({error.name} is missing): "
                                   'pip install "cmedit[app]"') from None
    from .options import user_errors

    with user_errors():  # a model that cannot be loaded: one line, before serving
        page = build_app(model, device, preload=True)
    page.queue(default_concurrency_limit=1)
    try:
        _, local_url, share_url = page.launch(server_name=host, server_port=port or None, share=share,
                                              prevent_thread_lock=True, quiet=True)
    except OSError as error:
        raise click.ClickException(f"cannot serve on {host}:{port} ({error})") from None
    click.echo(f"cmedit app: {local_url}" + (f" (public: {share_url})" if share_url else ""), err=False)
    try:
        page.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        page.close()
