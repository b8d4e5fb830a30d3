"""Shared fixtures: a tiny config, and the stages run once on tiny inputs (in-process, seconds)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from rewardlab import config as C

ROOT = Path(__file__).resolve().parents[1]
# The suite runs on the CPU. On a GPU machine, REWARDLAB_TEST_DEVICE=cuda REWARDLAB_TEST_PRECISION=bf16 runs the
# in-process stages (and the real-model DAGs) there, so the CUDA and bf16 paths go through the same checks.
TEST_DEVICE = os.environ.get("REWARDLAB_TEST_DEVICE", "cpu")
TEST_PRECISION = os.environ.get("REWARDLAB_TEST_PRECISION", "fp32")

TINY = {
    "name": "tiny",
    "device": TEST_DEVICE,
    "precision": TEST_PRECISION,
    "progress": False,
    "data": {"name": "tiny", "num_sft_train": 400, "num_sft_valid": 50, "num_prompts_train": 48,
             "num_prompts_test": 16},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64},
    "sft": {"epochs": 2, "batch_size": 32, "lr": 0.003},
    "labels": {"num_prompts": 48, "samples_per_prompt": 4},
    "bon": {"num_prompts": 8, "samples_per_prompt": 8},
    "reward": {"epochs": 1, "batch_size": 16, "normalise_samples": 64},
    "policy": {"steps": 3, "prompts_per_step": 8, "minibatches": 2, "epochs": 2},
    "evaluate": {"samples_per_prompt": 1},
}


@pytest.fixture
def tiny_config() -> dict:
    return C.validate(copy.deepcopy(TINY))


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> dict:
    """preprocess → sft → label → reward (BT) on tiny inputs; returns the folders and configs."""
    from rewardlab.data import label, pool, preprocess
    from rewardlab.train import reward, sft

    root = tmp_path_factory.mktemp("pipeline")
    cfg = C.validate(copy.deepcopy(TINY))
    data = root / "data"
    preprocess.STAGE.execute(cfg, data)
    sft_run = sft.STAGE.execute(cfg, root / "sft", data=data)
    pool_run = pool.STAGE.execute(cfg, root / "pool", data=data, sft=root / "sft")
    label_run = label.STAGE.execute(cfg, root / "labels", flip_rate=0.0, pool=root / "pool")
    rm_run = reward.STAGE.execute(cfg, root / "rm", loss="bt", seed=0, labels=root / "labels", pool=root / "pool",
                                  sft=root / "sft")
    return {"root": root, "config": cfg, "data": data, "sft": root / "sft", "labels": root / "labels",
            "pool": root / "pool", "rm": root / "rm", "sft_metrics": sft_run.metrics, "sft_history": sft_run.history,
            "pool_metrics": pool_run.metrics, "label_metrics": label_run.metrics, "rm_metrics": rm_run.metrics,
            "rm_history": rm_run.history}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Two worker streams under `make test` (pytest-xdist, `-n 2`): the SLURM test on one, every other test, in
    order, on the other. The SLURM test spends most of its minutes asleep in the SLURM plugin's status-check
    back-off, so it runs beside the rest instead of after it; the rest stays one stream, so no two CPU-heavy tests
    share the 2 cores. (xdist's own `--dist loadgroup` does not work on pytest 9: it renames `Item._nodeid`.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SlurmBesideTheRest(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "slurm" if nodeid.startswith("tests/test_slurm.py") else "main"

    return SlurmBesideTheRest(config, log)
