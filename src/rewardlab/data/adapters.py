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
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rewardlab.data.readers import READERS
from rewardlab.data.records import BadRow, Tie


def iter_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, parsed row) of a JSON-lines file (``.jsonl``, ``.json`` lines, ``.gz``), a JSON
    array, or a Parquet file. A line that is not JSON is yielded as a :class:`BadRow`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.source: {path} does not exist (place the files locally; nothing is downloaded)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield number, row
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    if text.lstrip().startswith("["):
        for number, row in enumerate(json.loads(text), start=1):
            yield number, row
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            yield number, BadRow(f"{path}: row {number}: not valid JSON ({err.msg})")


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
                raise BadRow(message) from err
            counts["rows_skipped"] += 1
    return records
