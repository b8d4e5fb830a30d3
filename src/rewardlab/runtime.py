"""What every stage shares at run time: the Accelerator, threads, progress bars, mini-batch order, the
learning-rate schedule, one optimiser step, and saving a model folder from any number of processes."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from tqdm.auto import tqdm


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
    # Every process takes its share of the same global batch (epoch_batches), so the schedule advances once
    # per step, as in a single process (split_batches; by default Accelerate steps it once per process).
    return Accelerator(cpu=cpu, mixed_precision="no" if precision == "fp32" else precision,
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def is_main_process() -> bool:
    """True in a single process, and in rank 0 of an ``accelerate launch`` (the one that writes outputs)."""
    return int(os.environ.get("RANK", "0")) == 0


class JobProgress(tqdm):
    """A tqdm bar (rate and ETA, on stderr: the job's log under Snakemake) that also writes one compact line now
    and then to the terminal the workflow was started from, so a person watching ``snakemake`` sees every
    running job move: ``rewardlab | ppo-sparse-bt-eps0.0-s0 policy[ppo/sparse] 75/150 50% 2.10 it/s ETA 0:35
    gold=1.234, kl=4.10``. Lines, not bars, so the lines of parallel jobs do not tear each other."""

    def __init__(self, *args, terminal: IO[str] | None = None, owns_terminal: bool = False, run: str = "",
                 every: float = 30.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._terminal, self._owns_terminal, self._run, self._every = terminal, owns_terminal, run, every
        self._last_echo, self._echoed_at = time.monotonic(), None

    def update(self, n: float = 1) -> bool | None:
        """Advance; set the postfix (loss, reward) before, so the terminal line shows this step's."""
        shown = super().update(n)
        if self._terminal is not None and not self.disable and (
                self.n >= (self.total or math.inf) or time.monotonic() - self._last_echo >= self._every):
            self.echo()
        return shown

    def echo(self) -> None:
        """One line: run, stage, step/total, percent, rate over this run's steps, ETA, the postfix (loss …)."""
        elapsed = self._time() - self.start_t
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        total = self.total or 0
        eta = self.format_interval((total - self.n) / rate) if rate > 0 and total else "?"
        percent = f" {100 * self.n / total:.0f}%" if total else ""
        postfix = f" {self.postfix}" if self.postfix else ""
        line = f"rewardlab | {self._run} {self.desc} {self.n}/{total}{percent} {rate:.2f} it/s ETA {eta}{postfix}"
        try:
            self._terminal.write(line.replace("  ", " ").strip() + "\n")
            self._terminal.flush()
        except OSError:  # the terminal went away: keep training, stop echoing
            self._terminal = None
        self._last_echo, self._echoed_at = time.monotonic(), self.n

    def close(self) -> None:
        if self._terminal is not None and not self.disable and self._echoed_at != self.n:
            self.echo()
        if self._terminal is not None and self._owns_terminal:
            self._terminal.close()
        self._terminal = None
        super().close()


def launching_terminal() -> IO[str] | None:
    """The terminal the workflow runs in, when the job's stderr goes elsewhere (a log file) and the job still
    has one (a local ``snakemake`` from a shell); None on a cluster node, in CI, or when stderr is the
    terminal already (its bar is in view). ``REWARDLAB_TERMINAL_PROGRESS=0`` turns the lines off."""
    if sys.stderr.isatty() or os.environ.get("REWARDLAB_TERMINAL_PROGRESS", "1") == "0":
        return None
    try:
        return open("/dev/tty", "w")  # noqa: SIM115  (closed by JobProgress.close)
    except OSError:
        return None


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0, run: str = "",
                 terminal: IO[str] | None = None) -> JobProgress:
    """A bar with rate and ETA on stderr (the job's log under Snakemake), and compact lines on the launching
    terminal (``JobProgress``); ``initial`` for a resumed run. Advanced by hand (``update(1)`` after each step),
    so it reaches 100 % with the last step."""
    interactive = sys.stderr.isatty()
    enabled = enabled and is_main_process()
    opened = launching_terminal() if enabled and terminal is None else None
    return JobProgress(total=total, desc=desc, disable=not enabled, dynamic_ncols=interactive, initial=initial,
                       mininterval=0.5 if interactive else 10.0, file=sys.stderr, run=run,
                       terminal=(terminal or opened) if enabled else None, owns_terminal=opened is not None)


class EpochBatch(NamedTuple):
    step: int  # 1-based, counted over all epochs
    epoch: int
    indices: list[int]  # this process's share of the batch
    epoch_end: bool


def epoch_batches(size: int, batch_size: int, epochs: int, seed: int, start_step: int = 0, rank: int = 0,
                  world: int = 1) -> Iterator[EpochBatch]:
    """Mini-batches of ``range(size)`` over epochs, shuffled by a generator seeded from (seed, epoch).

    Each epoch's order depends only on the seed and the epoch, so a run resumed at ``start_step`` sees exactly
    the batches an uninterrupted run would have seen next. With several processes, process ``rank`` of
    ``world`` takes every world-th example of each batch (DDP averages the gradients of the shares).
    """
    step = 0
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(size, generator=generator).tolist()
        for start in range(0, size, batch_size):
            step += 1
            if step > start_step:
                yield EpochBatch(step, epoch, order[start : start + batch_size][rank::world],
                                 start + batch_size >= size)


def warmup_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int,
                        warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class NonFiniteLoss(SystemExit):
    """Training stopped on a NaN or infinite loss; no metrics.json is written, so the run does not look finished."""


def require_finite(loss: torch.Tensor, where: str, step: int) -> None:
    """Stop with the stage and step named before a NaN or infinite loss reaches the weights (or a checkpoint)."""
    value = loss.detach().float()
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteLoss(f"{where}: the loss is {value.item()} at step {step}; stopped without writing "
                            "metrics.json (check the inputs for non-finite values, or lower the learning rate)")


def optimizer_step(accelerator: Accelerator, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """One supervised update: backward through Accelerate, step the optimiser and the schedule, clear grads."""
    accelerator.backward(loss)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


# Where Accelerate's clip and step add nothing to torch's own: no gradient scaler (fp16), no sharding (FSDP,
# DeepSpeed) and no XLA. One process or DDP (whose backward has already averaged the gradients).
_PLAIN_DISTRIBUTED = ("NO", "MULTI_CPU", "MULTI_GPU")


def clipped_step(accelerator: Accelerator, optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor],
                 max_norm: float) -> float:
    """Clip the gradients of ``parameters`` to ``max_norm`` (global L2 norm), step ``optimizer``, clear the
    gradients; returns the norm before clipping.

    The same operations as ``accelerator.clip_grad_norm_`` + ``optimizer.step()`` + ``zero_grad``: where
    Accelerate's wrappers add nothing (``_PLAIN_DISTRIBUTED``, no scaler, gradients synchronised every step) the
    norm is torch's ``clip_grad_norm_`` of the given list and the step is the wrapped optimiser's own. With
    thousands of tiny mini-batch steps per run (the policy stage) the wrappers cost more than the step: they
    look for an optional LOMO package twice a step and walk the model's modules for its parameters (~1 ms a
    step on this CPU, 2,400 steps a run). Elsewhere (fp16, FSDP, DeepSpeed, XLA) Accelerate's own path runs.
    """
    inner = getattr(optimizer, "optimizer", optimizer)
    plain = (accelerator.scaler is None and accelerator.distributed_type.name in _PLAIN_DISTRIBUTED
             and accelerator.sync_gradients)
    if not plain:
        norm = accelerator.clip_grad_norm_(parameters, max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(norm)
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    inner.step()
    inner.zero_grad(set_to_none=True)
    return float(norm)


def save_model_folder(accelerator: Accelerator, model: torch.nn.Module, tokenizer: Any, out: Path | str) -> None:
    """The trained model and its tokenizer as a Hugging Face folder (safetensors), written by the main process.

    The state dict is gathered on every process first (``get_state_dict``), so DeepSpeed ZeRO-3 and FSDP
    shards are assembled into whole weights; under one process or DDP it is the model's own.
    """
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()


def checkpoint_steps(accelerator: Accelerator, every: int) -> int:
    """Checkpoint interval for this run: resumable checkpoints hold whole weights and optimiser states, which
    sharded runs (DeepSpeed, FSDP) do not have on one process, so those run without (with a message)."""
    sharded = accelerator.distributed_type.name in ("DEEPSPEED", "FSDP")
    if every and sharded and accelerator.is_main_process:
        print(f"checkpoint_every: off under {accelerator.distributed_type.name} (sharded states); the stage "
              "restarts from the beginning if killed", file=sys.stderr)
    return 0 if sharded else every
