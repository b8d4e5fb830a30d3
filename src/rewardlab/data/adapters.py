"""Reading real preference datasets, as their files lie on disk, into canonical records (rlhf-reference.md §5).

``iter_rows`` reads JSON lines (``.jsonl``, ``.json`` lines, ``.gz``), a JSON array, or Parquet; ``read_records``
runs the format's reader (``rewardlab.data.readers``: ``hh_rlhf``, ``ultrafeedback_binarized``,
``tldr_comparisons``, ``helpsteer2`` (ratings, or pairs from the ``preference`` subset), ``shp`` and ``trl``)
over every row. A row that cannot be read raises :class:`BadRow` naming the file and the 1-based row number;
with ``on_bad_row="skip"`` it is skipped and counted instead. Ties (equal chosen and rejected) are dropped and
counted, never trained on.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rewardlab.data.readers import READERS
from rewardlab.data.records import BadFile, BadRow, Tie


def iter_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, parsed row) of a JSON-lines file (``.jsonl``, ``.json`` lines, ``.gz``), a JSON
    array, or a Parquet file. A line that is not UTF-8 or not JSON is yielded as a :class:`BadRow`; a file that
    cannot be read at all (empty, a truncated or corrupt archive, not Parquet, a JSON array cut short) raises
    :class:`BadFile`. Either names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.source: {path} does not exist (place the files locally; nothing is downloaded)")
    if path.suffix == ".parquet":
        yield from enumerate(_parquet_rows(path), start=1)
        return
    data = _file_bytes(path)
    if not data.strip():
        raise BadFile(f"{path}: the file is empty")
    if data.lstrip()[:1] == b"[":
        yield from enumerate(_json_array(path, data), start=1)
        return
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield number, BadRow(f"{path}: row {number}: not UTF-8 text (byte 0x{line[err.start]:02x} at column "
                                 f"{err.start + 1})")
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as err:
            yield number, BadRow(f"{path}: row {number}: not valid JSON ({err.msg})")


def _file_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (EOFError, OSError, zlib.error) as err:
        raise BadFile(f"{path}: a truncated or corrupt gzip file ({err or type(err).__name__})") from err


def _parquet_rows(path: Path) -> list[Any]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as err:
        raise BadFile(f"{path}: not a readable Parquet file ({err})") from err


def _json_array(path: Path, data: bytes) -> list[Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise BadFile(f"{path}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x})") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadFile(f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}); a JSON array "
                      "file must hold one complete array") from err


SOURCE_FILES = ("path", "test_path", "sft_path")  # the files data.source may name


def missing_source_file(source: Mapping[str, Any], root: str | Path = ".") -> str | None:
    """The first file ``data.source`` names that is not there, as a message naming its key; None when all are."""
    for key in SOURCE_FILES:
        if source.get(key) and not (Path(root) / source[key]).is_file():
            return f"data.source.{key}: {source[key]} does not exist (place the files locally; nothing is downloaded)"
    return None


def read_records(path: str | Path, fmt: str, split: str = "train", on_bad_row: str = "error",
                 counts: Counter | None = None) -> list[dict[str, Any]]:
    """Every record of one file through the format's reader; bad rows raise or are counted (``counts``)."""
    if fmt not in READERS:
        raise ValueError(f"data.source.format: {fmt!r} is not one of {', '.join(READERS.names())}")
    reader = READERS.get(fmt)
    counts = counts if counts is not None else Counter()
    records = []
    for number, row in iter_rows(path):
        try:
            if isinstance(row, BadRow):
                raise row
            if not isinstance(row, Mapping):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            records.append(reader(row, split))
            counts["rows_read"] += 1
        except Tie:
            counts["ties_dropped"] += 1
        except (ValueError, KeyError, TypeError, IndexError) as err:
            message = str(err) if isinstance(err, BadRow) else f"{path}: row {number}: {err}"
            if on_bad_row != "skip":
                raise BadRow(f"{message} (set data.on_bad_row: skip to skip such rows and count them)") from err
            counts["rows_skipped"] += 1
    return records
