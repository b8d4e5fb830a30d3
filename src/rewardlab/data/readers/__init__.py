"""Dataset readers: one module per ``data.source.format``, each registering a function that turns one row of
the dataset, as it lies on disk, into a canonical record (``rewardlab.data.records``). ``read_records``
(``rewardlab.data.adapters``) runs a reader over a file; the config schema's format list comes from here.

A reader raises ``ValueError`` for a row it cannot read (the caller adds the file and row number) and
``Tie`` for a pair without a preference. A new format is one module here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rewardlab.registry import Registry

Reader = Callable[[Mapping[str, Any], str], dict[str, Any]]  # (row, split) → canonical record
READERS: Registry[Reader] = Registry("dataset format", "rewardlab.data.readers")


def register_reader(name: str, label_shapes: tuple[str, ...] = ("pairs",)) -> Callable[[Reader], Reader]:
    """Register a reader under ``name``; ``label_shapes``: the label sets its records can give (pairs always:
    ratings and rankings imply them), which decides the losses a config may train on the format."""
    def add(reader: Reader) -> Reader:
        reader.label_shapes = tuple(dict.fromkeys(("pairs", *label_shapes)))  # type: ignore[attr-defined]
        return READERS.register(name)(reader)
    return add
