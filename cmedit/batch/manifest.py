"""Manifests: one row per image to edit, as CSV (with a header) or JSON Lines.

Columns (JSON keys): ``image`` (required), ``mask`` (inpaint: white = fill), ``output`` (the file
to write; default ``<output folder>/<image stem>_<task>.png``), and per-row options that override
the command's: ``factor`` (super-resolve), ``strength``, ``seed`` and ``prompt`` (only for a pipeline
that takes a text prompt). Empty cells are "not given". Relative paths are relative to the
manifest's folder. Rows are numbered from 1, the header not counted.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("image", "mask", "output", "factor", "strength", "seed", "prompt")


@dataclass(frozen=True)
class ManifestRow:
    """One job: ``number`` is the row's number in the manifest (from 1), for messages."""

    number: int
    image: Path
    mask: Path | None = None
    output: Path | None = None
    factor: int | None = None
    strength: float | None = None
    seed: int | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class ManifestError:
    """A row that cannot be run (a missing image column, a strength of 2, ...)."""

    number: int
    message: str


def read_manifest(path: str | Path) -> tuple[list[ManifestRow], list[ManifestError]]:
    """The rows of a ``.csv`` or ``.jsonl`` manifest, and an error per bad row (the others still run).

    Raises ``ValueError`` for a manifest that cannot be read at all (missing, unknown format or
    columns, no ``image`` column in a CSV header).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: a manifest is a .csv or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the manifest ({error.__class__.__name__})") from None
    base = path.parent
    rows: list[ManifestRow] = []
    errors: list[ManifestError] = []
    for number, record in _records(path, text, suffix):
        if isinstance(record, str):  # a line that is not a JSON object
            errors.append(ManifestError(number, record))
            continue
        try:
            rows.append(parse_row(number, record, base))
        except ValueError as error:
            errors.append(ManifestError(number, str(error)))
    return rows, errors


def _records(path: Path, text: str, suffix: str):
    """``(row number, dict or an error message)`` for each non-empty row."""
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = [name.strip() for name in reader.fieldnames or []]
        unknown = [name for name in fields if name not in COLUMNS]
        if "image" not in fields or unknown:
            raise ValueError(f"{path}: the header must name an 'image' column and only columns among "
                             f"{', '.join(COLUMNS)}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        for number, record in enumerate(reader, start=1):
            if None in record:
                yield number, f"{len(record[None]) + len(fields)} cells for {len(fields)} columns"
            else:
                yield number, {key.strip(): value for key, value in record.items()}
        return
    number = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        number += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, f"not valid JSON ({error.msg})"
            continue
        yield number, record if isinstance(record, dict) else "not a JSON object"


def parse_row(number: int, record: dict, base: Path) -> ManifestRow:
    """One row's values checked and converted; ``ValueError`` names what is wrong."""
    unknown = [key for key in record if key not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown column {unknown[0]!r} (columns: {', '.join(COLUMNS)})")
    values = {key: value for key, value in record.items() if value is not None and str(value).strip() != ""}
    if "image" not in values:
        raise ValueError("no image")

    def path(key: str) -> Path | None:
        if key not in values:
            return None
        if not isinstance(values[key], str):
            raise ValueError(f"{key} must be a path, got {values[key]!r}")
        value = Path(values[key].strip()).expanduser()
        return value if value.is_absolute() else base / value

    def integer(key: str, minimum: int | None = None) -> int | None:
        if key not in values:
            return None
        value = values[key]
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            result = int(value) if not isinstance(value, str) else int(value.strip())
        except ValueError:
            raise ValueError(f"{key} must be an integer, got {value!r}") from None
        if minimum is not None and result < minimum:
            raise ValueError(f"{key} must be >= {minimum}, got {result}")
        return result

    strength = None
    if "strength" in values:
        try:
            strength = float(values["strength"])
        except (TypeError, ValueError):
            strength = math.nan
        if not 0 < strength <= 1:  # also refuses nan
            raise ValueError(f"strength must lie in (0, 1], got {values['strength']!r}")
    prompt = values.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"prompt must be text, got {prompt!r}")
    return ManifestRow(number=number, image=path("image"), mask=path("mask"), output=path("output"),
                       factor=integer("factor", 2), strength=strength, seed=integer("seed"), prompt=prompt)
