"""What every benchmark against TRL shares: the interleaved runs, what it records beside its numbers, and how it
writes them (JSON in ``bench/results/``)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def interleaved(root: Path, label: str, repeats: int, run: Callable[[str, Path], dict]) -> dict[str, list[dict]]:
    """``run(side, folder)`` for rewardlab and TRL in turn (ours, TRL, ours, TRL, …), ``repeats`` times, each in a
    fresh folder; each run's result gets the one-minute load average from just before it, and is printed."""
    runs: dict[str, list[dict]] = {"rewardlab": [], "trl": []}
    for repeat in range(repeats):
        for side in runs:
            load = os.getloadavg()[0]
            work = root / f"{label}-{side}-{repeat}"
            work.mkdir()
            result = run(side, work)
            result["load_average_1min_before"] = load
            runs[side].append(result)
            print(label, side, repeat, json.dumps(result), flush=True)
    return runs


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
