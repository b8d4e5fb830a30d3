"""What every benchmark records beside its numbers, and how it writes them (JSON in ``bench/results/``)."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def environment(threads: int) -> dict[str, Any]:
    """Package versions (both sides of a comparison) and the machine: platform, CPUs, threads, GPU."""
    return {
        "versions": {p: metadata.version(p) for p in ("torch", "transformers", "trl", "accelerate")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }


def write_result(out: str | Path, result: dict[str, Any]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
