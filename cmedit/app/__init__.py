"""A local web app for cmedit (``cmedit app``; needs the ``app`` extra: ``pip install "cmedit[app]"``).

:func:`cmedit.app.ui.build_app` builds the Gradio page; :mod:`cmedit.app.handlers` runs the CLI's
edits on the uploaded files. Importing this package imports neither Gradio nor torch.
"""

from __future__ import annotations


def build_app(model: str | None = None, device: str = "auto", preload: bool = False):
    """The Gradio Blocks app (see :mod:`cmedit.app.ui`)."""
    from .ui import build_app as build

    return build(model, device, preload)
