"""``--num-processes N``: run the same command in N processes on this machine through ``accelerate launch``.

Each process edits its share of the files (``cmedit.batch.distributed``). The launcher
(``torch.distributed.run`` behind ``accelerate launch --multi_gpu``) stops every process when one
exits non-zero, so the processes report their exit status in files and exit 0; this process then
exits with the worst of them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import click

STATUS_DIR = "CMEDIT_STATUS_DIR"


def run_main() -> None:
    """The ``cmedit`` entry point for ``python -m cmedit``; records the exit status when relaunched."""
    from . import main

    folder = os.environ.get(STATUS_DIR)
    if folder is None:
        main(prog_name="cmedit")
        return
    try:
        main(prog_name="cmedit")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    Path(folder, os.environ.get("RANK", "0")).write_text(str(code))
    sys.exit(0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def relaunch(num_processes: int, args: list[str], device: str) -> None:
    """Run ``cmedit <args>`` in ``num_processes`` processes (``accelerate launch``) and exit with their status."""
    env = dict(os.environ)
    if device == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    with tempfile.TemporaryDirectory(prefix="cmedit-status-") as folder:
        env[STATUS_DIR] = folder
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--quiet",
                   "--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no", "--main_process_port", str(free_port()), "-m", "cmedit", *args]
        returncode = subprocess.call(command, env=env)
        codes = [int(path.read_text()) for path in Path(folder).iterdir()]
    if returncode == 0 and len(codes) != num_processes:
        returncode = 1
    raise SystemExit(returncode or max(codes, default=0))
