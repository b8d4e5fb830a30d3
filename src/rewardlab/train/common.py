"""What every stage entry point shares: arguments, the Accelerator, threads, progress bars."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

T = TypeVar("T")


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True,
                        help="The stage's slice of the validated config, as JSON (the Snakefile passes it).")
    parser.add_argument("--out", required=True, help="Output folder.")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch.")
    return parser


def parse_config(text: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--config is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise SystemExit("--config must be a JSON object")
    return config


def make_accelerator(config: dict[str, Any], threads: int) -> Accelerator:
    """One Accelerator per stage: the same loop runs on CPU, one GPU or several (architecture.md §3)."""
    torch.set_num_threads(max(1, threads))
    device = config.get("device", "auto")
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device: cuda was asked for but torch sees no CUDA device")
    precision = config.get("precision", "fp32")
    if cpu and precision != "fp32":
        raise SystemExit(f"precision: {precision} needs a GPU; set precision: fp32 on CPU")
    return Accelerator(cpu=cpu, mixed_precision="no" if precision == "fp32" else precision)


def progress(iterable: Iterable[T], total: int | None, desc: str, enabled: bool = True) -> Iterable[T]:
    """A tqdm bar with rate and ETA on stderr (the job's log under Snakemake)."""
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=interactive,
                mininterval=0.5 if interactive else 10.0, file=sys.stderr)


def warmup_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int,
                        warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(accelerator: Accelerator, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """One supervised update: backward through Accelerate, step the optimiser and the schedule, clear grads."""
    accelerator.backward(loss)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
