"""Resumable training state, written atomically every N steps (architecture.md §3, issue: resume after a crash).

A checkpoint lives in ``<out>/.checkpoint/`` — beside the stage's outputs, never one of them, so Snakemake
does not delete it when a killed job is rerun with ``--rerun-incomplete``. It holds, per step:

- each model's weights as safetensors (``<name>.safetensors``; tied weights handled by ``save_model``),
- ``state.pt``: optimiser and scheduler states, the global RNG states (Python, NumPy, torch CPU/CUDA; data
  order needs none: it is derived from (seed, epoch)), and the loop's own position and history — plain tensors,
  numbers, strings, lists and dicts only, read back with ``torch.load(weights_only=True)``,
- ``fingerprint.json``: a hash of the stage's config and arguments. A checkpoint made with other settings
  is never resumed from (it is discarded with a message), so a resumed run is the run that was asked for.

Atomicity: a step is written to ``step-<n>.tmp/``, renamed to ``step-<n>/``, and only then named in
``latest`` (itself replaced atomically); all but the two newest steps are removed after. A kill at any point
leaves the previous checkpoints or the new one, never half of one. ``clear()`` removes it all when the stage
has written its outputs.

Faults: a checkpoint that cannot be read back (a truncated file, a disk error) is reported, renamed
``step-<n>.unreadable/`` and the one before it is tried, then a fresh start — a rerun never fails on it
again. A write that fails for lack of space stops the stage with that said (the earlier checkpoint stays).
"""

from __future__ import annotations

import errno
import hashlib
import json
import random
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_model

from rewardlab.runinfo import atomic_write_text

CHECKPOINT_DIR = ".checkpoint"
KEEP = 2  # checkpoints kept: the newest, and the one before it in case the newest cannot be read
LOW_SPACE_BYTES = 64 * 2**20


class CheckpointWriteError(SystemExit):
    """A checkpoint could not be written (a full disk, most often); the stage stops with the cause named."""


def rng_state() -> dict[str, Any]:
    """Every global random state a training loop draws from, as weights-only-loadable values."""
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": _to_lists(random.getstate()),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_to_tuples(state["python"]))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def python_rng_state(rng: random.Random) -> list:
    return _to_lists(rng.getstate())


def set_python_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate(_to_tuples(state))


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def fingerprint(*parts: Any) -> str:
    """A stable hash of the settings a checkpoint belongs to (config slice, arguments)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpointer:
    """Save and restore a training loop's state under ``<out>/<name>/`` every ``every`` steps (0: never).

    ``name`` defaults to ``.checkpoint``; a stage with several loops (ensemble members) nests one per loop.
    """

    def __init__(self, out: str | Path, every: int, key: str, name: str = CHECKPOINT_DIR):
        self.root = Path(out) / name
        self.every = max(0, int(every))
        self.key = key

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, models: Mapping[str, torch.nn.Module], state: Mapping[str, Any]) -> None:
        """Write one step's checkpoint atomically, then drop the older ones."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step}"
        tmp = self.root / f"step-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            for name, model in models.items():
                save_model(model, str(tmp / f"{name}.safetensors"))
            torch.save(dict(state, step=step), tmp / "state.pt")
            atomic_write_text(tmp / "fingerprint.json", json.dumps({"key": self.key, "step": step}) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            atomic_write_text(self.root / "latest", final.name + "\n")
        except (OSError, RuntimeError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointWriteError(_write_failure(tmp, err)) from None
        for old in self.steps()[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.root.iterdir():
            if stale.is_dir() and stale.name.endswith(".tmp"):
                shutil.rmtree(stale, ignore_errors=True)

    def steps(self) -> list[Path]:
        """The finished step folders, newest first."""
        found = [p for p in self.root.glob("step-*") if p.is_dir() and p.name.removeprefix("step-").isdigit()]
        return sorted(found, key=lambda p: int(p.name.removeprefix("step-")), reverse=True)

    def restore(self, models: Mapping[str, torch.nn.Module]) -> dict[str, Any] | None:
        """Load the newest readable checkpoint into ``models`` and return its state; None when there is none to
        resume (no checkpoint, one made with other settings, or none readable: each unreadable one is set aside)."""
        if not self.root.is_dir():
            return None
        for folder in self.steps():
            try:
                meta = json.loads((folder / "fingerprint.json").read_text())
            except (OSError, ValueError) as err:
                self._set_aside(folder, f"fingerprint.json: {err}")
                continue
            if meta.get("key") != self.key:
                print(f"checkpoint in {self.root} was made with other settings; starting afresh", file=sys.stderr)
                self.clear()
                return None
            try:  # read every file whole before touching the models, so a bad file leaves them as they were
                for name in models:
                    load_file(str(folder / f"{name}.safetensors"))
                state = torch.load(folder / "state.pt", weights_only=True)
            except Exception as err:  # safetensors' and torch's errors for a truncated or corrupt file
                self._set_aside(folder, f"{type(err).__name__}: {err}")
                continue
            for name, model in models.items():
                load_model(model, str(folder / f"{name}.safetensors"))
            print(f"resuming from {folder} (step {state['step']})", file=sys.stderr)
            return state
        return None

    def _set_aside(self, folder: Path, reason: str) -> None:
        aside = folder.with_name(folder.name + ".unreadable")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        print(f"checkpoint {folder} is unreadable ({reason.splitlines()[0][:200]}); set aside as {aside.name}, "
              "trying an earlier one or starting afresh", file=sys.stderr)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _write_failure(path: Path, err: BaseException) -> str:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    full = (getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err)
            or (free is not None and free < LOW_SPACE_BYTES))
    if full:
        space = f"{free / 2**20:.0f} MiB free" if free is not None else "no space left"
        return (f"checkpoint: the disk is full writing {path} ({space}); free space there, then rerun the same "
                "command: training resumes from the last checkpoint")
    return f"checkpoint: writing {path} failed ({type(err).__name__}: {str(err).splitlines()[0][:300]})"


def clear_checkpoint(out: str | Path) -> None:
    """Remove a stage's checkpoints once its outputs are written."""
    shutil.rmtree(Path(out) / CHECKPOINT_DIR, ignore_errors=True)


def save_training(checkpointer: Checkpointer, step: int, models: Mapping[str, torch.nn.Module],
                  optimizers: Mapping[str, Any], history: list[dict], extra: Mapping[str, Any] | None = None) -> None:
    """A training loop's checkpoint: weights, optimiser/scheduler states, RNG states, history, loop extras."""
    checkpointer.save(step, models, {
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "rng": rng_state(),
        "history": history,
        "extra": dict(extra or {}),
    })


def restore_training(checkpointer: Checkpointer, models: Mapping[str, torch.nn.Module],
                     optimizers: Mapping[str, Any]) -> tuple[int, list[dict], dict[str, Any]]:
    """(step reached, history so far, loop extras) from the latest checkpoint, or (0, [], {}) for a fresh start.

    Call it after ``accelerator.prepare`` so optimiser states land on the parameters' device.
    """
    state = checkpointer.restore(models)
    if state is None:
        return 0, [], {}
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    set_rng_state(state["rng"])
    return int(state["step"]), list(state["history"]), dict(state["extra"])
