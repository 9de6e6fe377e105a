"""Batch editing of many files: manifests, one share of the files per process, one summary.

``run_manifest(pipe, rows, task)`` edits the rows of a manifest (``read_manifest``) and writes their
outputs; under ``accelerate launch`` each process takes its share of the rows (``distributed``).
See ``docs/batch.md``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Summary": "cmedit.batch.distributed",
    "ManifestRow": "cmedit.batch.manifest",
    "ManifestError": "cmedit.batch.manifest",
    "read_manifest": "cmedit.batch.manifest",
    "run_manifest": "cmedit.batch.runner",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cmedit.batch' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
