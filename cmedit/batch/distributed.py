"""Files spread over processes with ``accelerate.PartialState``: one share per process, summaries gathered.

Launched by ``accelerate launch -m cmedit ...`` (or ``torchrun``), every process runs the same command,
sees the same sorted list of jobs, takes its contiguous share (``split_between_processes``) and
works on its own device; the per-process summaries are gathered for one report on the main process.
Without a launcher there is one process and everything here is a no-op.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Sequence, TypeVar

T = TypeVar("T")


def launched() -> bool:
    """Whether this process is one of several started by a launcher (``WORLD_SIZE`` > 1)."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if int(os.environ.get(name, "1") or 1) > 1:
            return True
    return False


@functools.lru_cache(maxsize=None)
def process_state():
    """The process's ``accelerate.PartialState`` (created once; starts the process group when launched).

    The CPU and the gloo backend are used with ``accelerate launch --cpu`` and on a machine without CUDA.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def process_device(device: str) -> str:
    """The device this process edits on: with several processes, ``auto``/``cuda`` become the
    process's own (``cuda:<local rank>``); a single process keeps ``device`` as it is."""
    if not launched() or device not in ("auto", "cuda"):
        return device
    return str(process_state().device)


def num_processes() -> int:
    return process_state().num_processes if launched() else 1


def is_main_process() -> bool:
    return process_state().is_main_process if launched() else True


def share(items: Sequence[T]) -> list[T]:
    """This process's contiguous share of ``items`` (every process must pass the same list)."""
    if not launched():
        return list(items)
    with process_state().split_between_processes(list(items)) as mine:
        return list(mine)


def share_blocks(indices: Sequence[int], block_size: int) -> list[int]:
    """This process's share of ``indices`` (positions in the full sorted list of files) in whole blocks
    ``i // block_size``: a batch never spans blocks, so every batch holds the same files whatever the
    number of processes, and a file's result is the same to the bit (batched kernels round by batch size)."""
    blocks: dict[int, list[int]] = {}
    for index in indices:
        blocks.setdefault(index // block_size, []).append(index)
    return [index for block in share(sorted(blocks)) for index in blocks[block]]


def describe_share(count: int, unit: str = "files") -> str | None:
    """``"process 2/4 (cuda:1): 250 files"`` when launched, else None (for the progress messages)."""
    if not launched():
        return None
    state = process_state()
    return f"process {state.process_index + 1}/{state.num_processes} ({state.device}): {count} {unit}"


def gather(items: list) -> list:
    """Every process's ``items`` concatenated, in process order, on every process."""
    if not launched():
        return list(items)
    from accelerate.utils import gather_object

    process_state()  # ours first: accelerate's helpers would start a PartialState without cpu=True
    return list(gather_object(list(items)))


def broadcast(value):
    """The main process's ``value`` on every process (e.g. a seed drawn at random)."""
    if not launched():
        return value
    from accelerate.utils import broadcast_object_list

    process_state()  # ours first (see gather)
    return broadcast_object_list([value], from_process=0)[0]


def wait_for_everyone() -> None:
    if launched():
        process_state().wait_for_everyone()


@dataclass
class Summary:
    """What a batch did: files written, skipped (their output existed), failed (with the reason)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, message)
    fatal: str | None = None  # an error that stopped a process (the model did not load, say)

    def merged(self) -> "Summary":
        """The summaries of all processes added up (call on every process: it gathers)."""
        parts = gather([self])
        total = Summary()
        for part in parts:
            total.done += part.done
            total.skipped += part.skipped
            total.failed += part.failed
            total.fatal = total.fatal or part.fatal
        return total

    def line(self) -> str:
        return f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"
