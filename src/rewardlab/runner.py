"""The stage runner: what happens around every stage of the DAG, written once.

A stage is its arguments and a ``run(ctx, **inputs) -> StageResult`` function; everything else is here:
the command line (``--config`` slice as JSON, ``--out``, ``--threads``, ``--checkpoint-every`` and the stage's
own arguments), seeding every random source from the config before anything is built, the Accelerator
(made on first use, so pure-Python stages never import it), progress bars, the checkpointer, and the
outputs: ``history.csv``, ``run.json``, then ``metrics.json`` last — its presence marks a finished run —
written by the main process only, after which the stage's checkpoints are removed.

    STAGE = Stage("sft", run, arguments=(Argument("--data", Path, "data/processed/<name>/"),),
                  seed=lambda config, inputs: config["sft"]["seed"])
    if __name__ == "__main__":
        STAGE.main()

``STAGE.execute(config, out, data=…)`` does the same in-process (tests, fused stages).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rewardlab.checkpoint import CHECKPOINT_DIR, Checkpointer, clear_checkpoint, fingerprint
from rewardlab.runinfo import finish_stage, seed_everything


@dataclass(frozen=True)
class Argument:
    """One stage-specific command-line argument; ``flag`` ``--eval-out`` arrives in ``run`` as ``eval_out``."""

    flag: str
    type: Callable[[str], Any] = str
    help: str = ""
    required: bool = True
    default: Any = None
    choices: tuple[str, ...] | None = None


@dataclass
class StageResult:
    """What every stage returns: flat metrics, the logged steps (if it trains), and extras for run.json."""

    metrics: dict[str, float]
    history: list[dict[str, float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StageContext:
    """The run-time of one stage: config slice, output folder, threads, and (on first use) the Accelerator."""

    def __init__(self, stage: str, config: Mapping[str, Any], out: Path, threads: int = 1,
                 checkpoint_every: int = 0, accelerator: Any = None):
        self.stage, self.config, self.out = stage, config, Path(out)
        self.threads, self.checkpoint_every = threads, checkpoint_every
        if accelerator is not None:
            self.__dict__["accelerator"] = accelerator

    @cached_property
    def accelerator(self) -> Any:
        from rewardlab.runtime import make_accelerator  # torch and accelerate: only for stages that compute

        return make_accelerator(dict(self.config), self.threads)

    @property
    def device(self) -> Any:
        return self.accelerator.device

    @property
    def device_name(self) -> str:
        return str(self.accelerator.device) if "accelerator" in self.__dict__ else "cpu"

    @property
    def is_main_process(self) -> bool:
        if "accelerator" in self.__dict__:
            return self.accelerator.is_main_process
        from rewardlab.runtime import is_main_process

        return is_main_process()

    @property
    def show_progress(self) -> bool:
        return bool(self.config.get("progress", True))

    def progress(self, total: int, desc: str, initial: int = 0) -> Any:
        """A bar with rate and ETA on stderr (the job's log); advance it with ``update(1)``, end it with ``close``."""
        from rewardlab.runtime import progress_bar

        return progress_bar(total, desc, self.show_progress and self.is_main_process, initial, run=self.out.name)

    def iterate(self, iterable: Iterable[Any], total: int, desc: str) -> Iterable[Any]:
        """``iterable`` with a bar that ends at 100 %."""
        bar = self.progress(total, desc)
        for item in iterable:
            yield item
            bar.update(1)
        bar.close()

    def checkpointer(self, *key: Any, name: str = CHECKPOINT_DIR) -> Checkpointer:
        """Resumable checkpoints under ``out/name`` for this stage, its config and ``key`` (its arguments)."""
        from rewardlab.runtime import checkpoint_steps

        every = checkpoint_steps(self.accelerator, self.checkpoint_every)
        return Checkpointer(self.out, every, fingerprint(self.stage, dict(self.config), *key), name=name)


@dataclass(frozen=True)
class Stage:
    """A DAG stage: its name (run.json's ``stage``), ``run``, its own arguments and where its seed comes from."""

    name: str
    run: Callable[..., StageResult]
    arguments: tuple[Argument, ...] = ()
    seed: Callable[[Mapping[str, Any], Mapping[str, Any]], int | None] = lambda config, inputs: None
    description: str = ""

    def execute(self, config: Mapping[str, Any], out: str | Path, *, threads: int = 1, checkpoint_every: int = 0,
                accelerator: Any = None, **inputs: Any) -> StageResult:
        """Seed, run, and (main process) write history.csv, run.json, metrics.json last; clear checkpoints."""
        started = time.time()
        seed = self.seed(config, inputs)
        if seed is not None:
            seed_everything(seed)
        ctx = StageContext(self.name, config, Path(out), threads, checkpoint_every, accelerator)
        if config.get("rollout_backend") == "vllm":  # before any compute: the package and a GPU are there
            from rewardlab.models.vllm_engine import require_vllm

            require_vllm(ctx.device)
        result = self.run(ctx, **inputs)
        if ctx.is_main_process:
            extra = {"inputs": {k: v if isinstance(v, (int, float)) else str(v) for k, v in inputs.items()},
                     **result.extra}
            finish_stage(out, self.name, config, seed, started, ctx.device_name, result.metrics, result.history,
                         extra)
            clear_checkpoint(out)
        return result

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"rewardlab {self.name}", description=self.description)
        parser.add_argument("--config", required=True,
                            help="The stage's slice of the validated config, as JSON (the Snakefile passes it).")
        parser.add_argument("--out", required=True, type=Path, help="Output folder.")
        parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch.")
        parser.add_argument("--checkpoint-every", type=int, default=0,
                            help="Steps between resumable checkpoints in <out>/.checkpoint/ (0: none).")
        for arg in self.arguments:
            if arg.flag == "--seed":  # one run, or several in this process (--seeds)
                seeds = parser.add_mutually_exclusive_group(required=arg.required)
                seeds.add_argument("--seed", type=arg.type, help=arg.help, default=arg.default)
                seeds.add_argument("--seeds", type=seed_list, help="Several runs, one after another in this "
                                   "process, e.g. 0,1,2: every path argument holding '{seed}' is filled per run.")
                continue
            parser.add_argument(arg.flag, type=arg.type, help=arg.help, required=arg.required, default=arg.default,
                                choices=arg.choices)
        return parser

    def main(self, argv: list[str] | None = None) -> StageResult:
        args = vars(self.parser().parse_args(argv))
        config = parse_config(args.pop("config"))
        out, threads, every = args.pop("out"), args.pop("threads"), args.pop("checkpoint_every")
        seeds = args.pop("seeds", None)
        if seeds is None:
            return self.execute(config, out, threads=threads, checkpoint_every=every, **args)
        if len(seeds) > 1 and "{seed}" not in str(out):
            listed = ",".join(map(str, seeds))
            raise SystemExit(f"--seeds {listed}: --out {out} has no '{{seed}}' to tell the runs apart")
        for seed in seeds:  # each run seeds everything itself (execute), as it would in a process of its own
            paths = {key: for_seed(value, seed) for key, value in args.items() if isinstance(value, Path)}
            result = self.execute(config, for_seed(out, seed), threads=threads, checkpoint_every=every,
                                  **{**args, **paths, "seed": seed})
        return result


def seed_list(text: str) -> list[int]:
    """An argument type: comma-separated seeds."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected comma-separated integers") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: a seed is repeated")
    return seeds


def for_seed(path: Path, seed: int) -> Path:
    """``path`` with ``{seed}`` replaced (a path without it is shared by the runs)."""
    return Path(str(path).replace("{seed}", str(seed)))


def parse_config(text: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--config is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise SystemExit("--config must be a JSON object")
    return config


def optional_path(text: str) -> Path | None:
    """An argument type: a path, or None for an empty string."""
    return Path(text) if text else None
