"""The CLI in a spawned process under an address-space limit (tests/test_reliability.py).

Kept apart from the test modules so that the spawned process imports only this and what the
command itself needs, not the tests' own imports (diffusers and the tiny-model helpers).
"""

from __future__ import annotations

from pathlib import Path


def run_with_limit(args: list[str], headroom: int, results) -> None:
    """The CLI with at most ``headroom`` bytes of address space more than now; puts (exit code, stderr, exception)."""
    import resource

    from click.testing import CliRunner

    import cmedit.fullres.budget  # noqa: F401  (what the refusals use, imported before the limit: mapping
    import cmedit.fullres.canvas  # noqa: F401   a library's code under it could fail for want of address
    import cmedit.fullres.crops  # noqa: F401    space, not for the buffers under test)
    import cmedit.io.files  # noqa: F401
    from cmedit.cli import main

    size = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + headroom, resource.RLIM_INFINITY))
    try:
        result = CliRunner().invoke(main, args)
        results.put((result.exit_code, result.stderr, repr(result.exception)))
    except BaseException as error:  # noqa: BLE001 - reported to the test
        results.put((-1, "", repr(error)))
