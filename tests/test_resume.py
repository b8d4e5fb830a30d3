"""Checkpoints and resume: a training stage interrupted after a checkpoint, run again, ends with exactly the
metrics and history of an uninterrupted run. One test kills a real training process with SIGKILL."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rewardlab import checkpoint as ckpt
from rewardlab import config as C
from rewardlab.train import dpo, policy, reward, sft
from tests.conftest import TINY


class Interrupted(Exception):
    pass


@pytest.fixture
def interrupt_after_first_checkpoint(monkeypatch):
    """Make the first checkpoint save also end the run, as a crash right after it would."""
    original = ckpt.Checkpointer.save
    calls = {"n": 0}

    def save_then_crash(self, step, models, state):
        original(self, step, models, state)
        calls["n"] += 1
        if calls["n"] == 1:
            raise Interrupted(step)

    monkeypatch.setattr(ckpt.Checkpointer, "save", save_then_crash)
    return calls


def assert_same_run(first, second) -> None:
    assert first.metrics == second.metrics  # exactly
    assert first.history == second.history  # exactly


def test_atomic_checkpoint_keeps_the_two_newest(tmp_path):
    import torch

    model = torch.nn.Linear(3, 2)
    checkpointer = ckpt.Checkpointer(tmp_path, every=2, key="k")
    for step in (2, 4, 6):
        ckpt.save_training(checkpointer, step, {"m": model}, {}, [{"step": 1.0}] * (step // 2))
    folder = tmp_path / ckpt.CHECKPOINT_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-4", "step-6"]
    fresh = torch.nn.Linear(3, 2)
    step, history, _ = ckpt.restore_training(checkpointer, {"m": fresh}, {})
    assert step == 6 and len(history) == 3
    assert torch.equal(fresh.weight, model.weight)
    # A checkpoint of other settings is never resumed from.
    assert ckpt.restore_training(ckpt.Checkpointer(tmp_path, 2, key="other"), {"m": fresh}, {})[0] == 0
    assert not folder.exists()


@pytest.mark.parametrize("damaged", ["m.safetensors", "state.pt"])
def test_an_unreadable_checkpoint_is_set_aside_and_the_one_before_resumed(tmp_path, damaged, capsys):
    """A truncated file in the newest checkpoint: reported, renamed *.unreadable, the previous one resumed; with
    both damaged, a fresh start — a rerun never fails on it, and the models are untouched by the failed reads."""
    import torch

    model = torch.nn.Linear(3, 2)
    checkpointer = ckpt.Checkpointer(tmp_path, every=2, key="k")
    ckpt.save_training(checkpointer, 2, {"m": model}, {}, [{"step": 1.0}])
    at_step_2 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ckpt.save_training(checkpointer, 4, {"m": model}, {}, [{"step": 1.0}, {"step": 2.0}])
    folder = tmp_path / ckpt.CHECKPOINT_DIR
    for step in (4, 2):
        target = folder / f"step-{step}" / damaged
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        fresh = torch.nn.Linear(3, 2)
        before = fresh.weight.detach().clone()
        resumed, history, _ = ckpt.restore_training(checkpointer, {"m": fresh}, {})
        assert f"step-{step} is unreadable" in capsys.readouterr().err
        assert (folder / f"step-{step}.unreadable").is_dir()
        if step == 4:
            assert resumed == 2 and len(history) == 1 and torch.equal(fresh.weight, at_step_2)
        else:
            assert resumed == 0 and history == [] and torch.equal(fresh.weight, before)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64")])
def test_a_full_disk_stops_with_that_said_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch, error):
    import torch

    model = torch.nn.Linear(3, 2)
    checkpointer = ckpt.Checkpointer(tmp_path, every=2, key="k")
    ckpt.save_training(checkpointer, 2, {"m": model}, {}, [{"step": 1.0}])

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(ckpt.torch, "save", fail)
    if isinstance(error, RuntimeError):  # torch's own message does not say why: the free space does
        monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: SimpleNamespace(free=2**20))
    with pytest.raises(ckpt.CheckpointWriteError, match="the disk is full writing .*step-4.tmp"):
        ckpt.save_training(checkpointer, 4, {"m": model}, {}, [{"step": 1.0}, {"step": 2.0}])
    folder = tmp_path / ckpt.CHECKPOINT_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-2"]


def test_sft_resumes_to_the_same_result(tiny_pipeline, tmp_path, interrupt_after_first_checkpoint):
    cfg, data = tiny_pipeline["config"], tiny_pipeline["data"]
    with pytest.raises(Interrupted):
        sft.STAGE.execute(cfg, tmp_path / "resumed", checkpoint_every=10, data=data)
    assert (tmp_path / "resumed" / ckpt.CHECKPOINT_DIR / "step-10").is_dir()
    resumed = sft.STAGE.execute(cfg, tmp_path / "resumed", checkpoint_every=10, data=data)
    assert resumed.history[0]["step"] == 1 and resumed.history[-1]["step"] == len(resumed.history)
    assert_same_run(resumed, sft.STAGE.execute(cfg, tmp_path / "straight", data=data))


def test_reward_ensemble_resumes_to_the_same_result(tiny_pipeline, tmp_path, interrupt_after_first_checkpoint):
    p = tiny_pipeline
    cfg = copy.deepcopy(p["config"])
    cfg["reward"]["ensemble"]["members"] = 2
    args = {"loss": "bt", "seed": 0, "labels": p["labels"], "pool": p["pool"], "sft": p["sft"]}
    with pytest.raises(Interrupted):
        reward.STAGE.execute(cfg, tmp_path / "resumed", checkpoint_every=2, **args)
    assert_same_run(reward.STAGE.execute(cfg, tmp_path / "resumed", checkpoint_every=2, **args),
                    reward.STAGE.execute(cfg, tmp_path / "straight", **args))


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_policy_resumes_to_the_same_result(tiny_pipeline, tmp_path, interrupt_after_first_checkpoint, algorithm):
    p = tiny_pipeline
    cfg = copy.deepcopy(p["config"])
    cfg["policy"]["steps"] = 4
    cfg["policy"]["kl_target"] = 1.0  # the adaptive controller's state is part of what resumes
    args = {"algorithm": algorithm, "shaping": "sparse", "seed": 0, "data": p["data"], "sft": p["sft"], "rm": p["rm"]}
    with pytest.raises(Interrupted):
        policy.STAGE.execute(cfg, tmp_path / "resumed", checkpoint_every=2, **args)
    assert_same_run(policy.STAGE.execute(cfg, tmp_path / "resumed", checkpoint_every=2, **args),
                    policy.STAGE.execute(cfg, tmp_path / "straight", **args))


def test_dpo_resumes_to_the_same_result(tiny_pipeline, tmp_path, interrupt_after_first_checkpoint):
    p = tiny_pipeline
    args = {"algorithm": "dpo", "seed": 0, "labels": p["labels"], "sft": p["sft"]}
    with pytest.raises(Interrupted):
        dpo.STAGE.execute(p["config"], tmp_path / "resumed", checkpoint_every=3, **args)
    assert_same_run(dpo.STAGE.execute(p["config"], tmp_path / "resumed", checkpoint_every=3, **args),
                    dpo.STAGE.execute(p["config"], tmp_path / "straight", **args))


def sft_command(cfg: dict, data: Path, out: Path, every: int) -> list[str]:
    return [sys.executable, "-m", "rewardlab.train.sft", "--config", json.dumps(cfg), "--data", str(data),
            "--out", str(out), "--checkpoint-every", str(every)]


def test_sft_killed_with_sigkill_resumes_to_the_same_metrics(tiny_pipeline, tmp_path):
    """A real training process, killed mid-way with SIGKILL after a checkpoint, then run again."""
    cfg = C.validate(copy.deepcopy(TINY) | {"sft": {"epochs": 12, "batch_size": 32, "lr": 0.003}})
    data = tiny_pipeline["data"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = tmp_path / "killed"
    proc = subprocess.Popen(sft_command(cfg, data, out, 20), env=env, stderr=subprocess.DEVNULL)
    latest = out / ckpt.CHECKPOINT_DIR / "latest"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before a checkpoint: make the run longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()  # a killed run is never taken for a finished one
    step_killed = int(latest.read_text().split("-")[1])
    assert step_killed < 12 * 13  # killed mid-way, not at the end
    subprocess.run(sft_command(cfg, data, out, 20), env=env, check=True, stderr=subprocess.DEVNULL)
    straight = tmp_path / "straight"
    subprocess.run(sft_command(cfg, data, straight, 0), env=env, check=True, stderr=subprocess.DEVNULL)
    assert (out / "metrics.json").read_bytes() == (straight / "metrics.json").read_bytes()
    assert (out / "history.csv").read_bytes() == (straight / "history.csv").read_bytes()
    assert not (out / ckpt.CHECKPOINT_DIR).exists()  # cleared once the outputs are written
