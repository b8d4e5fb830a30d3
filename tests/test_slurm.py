"""The quick experiment through a real single-node SLURM cluster with the project's profile.

tests/slurm/cluster.sh installs Debian's SLURM and munge when missing, starts the daemons with one declared
GPU, and stops them afterwards. GPU-tagged stages (sft, reward, policy here) must be submitted asking for
the GPU (SLURM then sets CUDA_VISIBLE_DEVICES in the job, which run.json records); CPU stages must not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CLUSTER = ROOT / "tests/slurm/cluster.sh"
GPU_STAGES = ("sft", "reward", "policy")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run(["bash", str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        pytest.skip(f"SLURM cannot start here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = dict(os.environ, SLURM_CONF="/etc/slurm/slurm.conf")
    yield env
    subprocess.run(["bash", str(CLUSTER), "stop", str(state)], timeout=120)


@pytest.mark.slurm
@pytest.mark.workflow
def test_quick_experiment_through_slurm(slurm, tmp_path):
    for name in ("Snakefile", "workflow", "config"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "profiles").symlink_to("workflow/profiles")
    # The quick experiment's DAG at a tenth of its size, up to the reward model's evaluation: this checks
    # scheduling and resources, not results. Each level of the DAG costs the SLURM plugin's status-check back-off
    # (+10 s per check while no job has finished), so the policy levels and the summary, whose rules take their
    # resources the same way, are left out.
    gpu = {"name": "slurm", "resources": {stage: {"gpu": 1} for stage in GPU_STAGES},
           "data": {"name": "sentigram-slurm", "num_sft_train": 600, "num_sft_valid": 50, "num_prompts_train": 128,
                    "num_prompts_test": 32},
           "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64},
           "labels": {"num_prompts": 128, "samples_per_prompt": 4}, "bon": {"num_prompts": 8, "samples_per_prompt": 8},
           "reward": {"epochs": 1, "batch_size": 16, "normalise_samples": 64},
           "policy": {"algorithms": []}}
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(gpu))
    command = [SNAKEMAKE, "--profile", "workflow/profiles/slurm", "--configfile", "config/experiments/quick.yaml",
               "gpu.yaml", "--default-resources", "slurm_partition=debug", "slurm_account=none",
               "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
               "--latency-wait", "5", "--", "results/slurm/eval/rm/bt-eps0.0-s0/metrics.json"]
    proc = subprocess.run(command, cwd=tmp_path, env=slurm, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    results = tmp_path / "results/slurm"
    assert (results / "eval/rm/bt-eps0.0-s0/metrics.json").is_file()

    def run_info(folder: str) -> dict:
        return json.loads((results / folder / "run.json").read_text())

    gpu_runs = ["sft", "rm/bt-eps0.0-s0", "eval/rm/bt-eps0.0-s0"]  # the reward job evaluates its model too
    cpu_runs = ["pool", "labels/eps0.0"]
    for folder in gpu_runs + cpu_runs:
        info = run_info(folder)
        assert info["slurm_job_id"], f"{folder} did not run as a SLURM job"
        expected = "0" if folder in gpu_runs else None
        assert info["cuda_visible_devices"] == expected, (folder, info["cuda_visible_devices"])
    jobs = {run_info(f)["slurm_job_id"] for f in gpu_runs + cpu_runs}
    assert len(jobs) == 4  # separate submissions (the reward model's evaluation runs in the reward job)
