"""The one supervised loop shared by SFT, reward-model training and the offline (DPO-family) policies.

Each stage gives the loop a model, a ``Schedule`` and a ``step`` function that turns a mini-batch (indices
into the stage's examples) into a loss and a few statistics; the loop owns everything else, the same way for
all three: AdamW (fused), the learning-rate schedule (linear warm-up over ``warmup_ratio`` of the steps, then linear
decay to 0), ``epoch_batches`` order (seeded per epoch, so a resumed run sees the same batches), one
optimiser step per mini-batch, the progress bar, resumable checkpoints, and the history rows
``{step, epoch, loss, <stats>, lr}`` (plus what ``epoch_end`` adds at the end of each epoch).

Metrics over a run use one rule too (``tail_means``): the mean of the last ``TAIL_STEPS`` logged steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rewardlab.checkpoint import Checkpointer, restore_training, save_training
from rewardlab.runner import StageContext
from rewardlab.runtime import epoch_batches, optimizer_step, require_finite, warmup_linear_decay

TAIL_STEPS = 50  # training metrics average the last 50 steps (or all of them, in a shorter run)

StepFn = Callable[[torch.nn.Module, list[int]], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Schedule:
    examples: int
    batch_size: int
    epochs: int
    seed: int  # data order (and, by the stage, initialisation)
    lr: float
    weight_decay: float
    warmup_ratio: float

    @property
    def total_steps(self) -> int:
        return math.ceil(self.examples / self.batch_size) * self.epochs


def train_supervised(ctx: StageContext, model: torch.nn.Module, schedule: Schedule, step: StepFn, desc: str,
                     checkpointer: Checkpointer,
                     epoch_end: Callable[[torch.nn.Module], dict[str, float]] | None = None,
                     ) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train ``model`` and return it as prepared by Accelerate (unwrap it to read it) with its history."""
    accelerator = ctx.accelerator
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay,
                                  fused=True)  # one kernel for all parameters
    scheduler = warmup_linear_decay(optimizer, schedule.total_steps, schedule.warmup_ratio)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    optimizers = {"optimizer": optimizer, "scheduler": scheduler}
    start, history, _ = restore_training(checkpointer, {"model": unwrapped}, optimizers)
    bar = ctx.progress(schedule.total_steps, desc, initial=start)
    model.train()
    for batch in epoch_batches(schedule.examples, schedule.batch_size, schedule.epochs, schedule.seed, start,
                               accelerator.process_index, accelerator.num_processes):
        loss, stats = step(model, batch.indices)
        require_finite(loss, desc, batch.step)
        optimizer_step(accelerator, loss, optimizer, scheduler)
        row = {"step": batch.step, "epoch": batch.epoch, "loss": accelerator.reduce(loss.detach(), "mean").item(),
               **stats, "lr": scheduler.get_last_lr()[0]}
        if batch.epoch_end and epoch_end is not None:
            row.update(epoch_end(model))
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        bar.update(1)
        if checkpointer.due(batch.step) and accelerator.is_main_process:
            save_training(checkpointer, batch.step, {"model": unwrapped}, optimizers, history)
        accelerator.wait_for_everyone()
    bar.close()
    return model, history


def tail_means(history: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """``{key: mean over the last TAIL_STEPS rows}`` for the keys the rows have (NaN for an empty history)."""
    tail = history[-min(TAIL_STEPS, len(history)):] if history else []
    return {key: sum(row[key] for row in tail) / len(tail) if tail else float("nan")
            for key in keys if not tail or key in tail[0]}
