"""What every stage writes beside its outputs: metrics, history, provenance (architecture.md §3).

Files are written under a temporary name and renamed into place, so a crash never leaves a half-written
file where a good one stood.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = ("rewardlab", "torch", "transformers", "accelerate", "datasets", "tokenizers", "numpy", "pandas",
            "snakemake", "dvc")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from the config."""
    import torch  # here: jobs that only read and write files (the DVC view, the summary) never import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_to_builtin) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=_to_builtin) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from err
    return rows


def _to_builtin(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def write_metrics(out_dir: str | Path, metrics: Mapping[str, float]) -> None:
    """``metrics.json``: a flat ``{name: number}`` map, rounded so reruns compare byte for byte."""
    flat = {k: (round(float(v), 6) if v is not None and not math.isnan(float(v)) else None)
            for k, v in metrics.items()}
    write_json(Path(out_dir) / "metrics.json", flat)


def write_csv(path: str | Path, rows: list[Mapping[str, Any]], columns: list[str] | None = None) -> None:
    """Rows as CSV (numbers to 6 significant digits, so reruns compare byte for byte), written atomically."""
    import pandas as pd  # here, not at the top: every stage imports this module, and pandas costs ~0.5 s a process

    frame = pd.DataFrame(rows, columns=columns)
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def write_history(out_dir: str | Path, rows: list[Mapping[str, float]]) -> None:
    """``history.csv``: one row per logged step, columns named like the metrics."""
    write_csv(Path(out_dir) / "history.csv", rows)


def _git_revision() -> tuple[str | None, bool | None]:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10)
        return rev.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process and peak GPU memory allocated by PyTorch (MiB; None without CUDA)."""
    rss = None
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    except (ImportError, OSError):
        pass
    gpu = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        gpu = torch.cuda.max_memory_allocated() / 2**20
    return {"peak_rss_mb": None if rss is None else round(rss, 1), "peak_gpu_memory_mb": None if gpu is None
            else round(gpu, 1)}


def write_run_info(out_dir: str | Path, stage: str, config: Mapping[str, Any], seed: int | None,
                   started: float, device: str, extra: Mapping[str, Any] | None = None) -> None:
    """``run.json``: resolved config, seed, versions, git revision, device, wall time and peak memory."""
    revision, dirty = _git_revision()
    info = {
        "stage": stage,
        "config": config,
        "seed": seed,
        "git_revision": revision,
        "git_dirty": dirty,
        "versions": _versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        # Where the scheduler ran it: the SLURM job and the GPUs it was given (None outside SLURM / on CPU).
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "wall_time_s": round(time.time() - started, 3),
        # Forked from the warm-start server (rewardlab.warmstart) rather than started in a fresh interpreter.
        "warm_start": getattr(sys.modules.get("rewardlab.warmstart"), "FORKED_FROM", None) is not None,
        **_peak_memory(),
        "argv": sys.argv,
    }
    if extra:
        info.update(extra)
    write_json(Path(out_dir) / "run.json", info)


def finish_stage(out_dir: str | Path, stage: str, config: Mapping[str, Any], seed: int | None, started: float,
                 device: str, metrics: Mapping[str, float], history: list[Mapping[str, float]] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
    """Write a stage's history.csv (if any), run.json, then metrics.json last: its presence marks a finished run."""
    if history is not None:
        write_history(out_dir, history)
    write_run_info(out_dir, stage, config, seed, started, device, extra)
    write_metrics(out_dir, metrics)
