"""The whole DAG on config/experiments/quick.yaml in a temporary directory, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rewardlab import warmstart
from rewardlab.compare import compare

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
QUICK = "config/experiments/quick.yaml"

RM_METRICS = {"accuracy", "accuracy_gold", "ece", "brier", "spearman_gold"}
POLICY_METRICS = {"reward_proxy", "reward_gold", "kl", "entropy", "length", "win_rate_vs_sft", "distinct_2"}


def snakemake(workdir: Path, *args: str, timeout: int = 900, cores: int = 2) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, "--cores", str(cores), "--configfile", QUICK, *args], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in workdir.glob("results/quick/logs/**/*.log"))
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{logs}")
    return proc


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "workflow", "config"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    (work / "profiles").symlink_to("workflow/profiles")
    snakemake(work)
    return work


@pytest.mark.workflow
def test_quick_dag_writes_every_contracted_output(quick_run):
    results = quick_run / "results/quick"
    for stage in ("sft", "rm/bt-eps0.0-s0", "policy/ppo-sparse-bt-eps0.0-s0", "policy/reinforce-sparse-bt-eps0.0-s0"):
        folder = results / stage
        for name in ("metrics.json", "history.csv", "run.json", "model.safetensors", "config.json"):
            assert (folder / name).is_file(), f"{folder}/{name}"
        run = json.loads((folder / "run.json").read_text())
        assert {"config", "seed", "versions", "git_revision", "wall_time_s", "device", "peak_rss_mb",
                "peak_gpu_memory_mb"} <= set(run)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert RM_METRICS <= set(json.loads((results / "eval/rm/bt-eps0.0-s0/metrics.json").read_text()))
    for run_name in ("sft-bt-eps0.0-s0", "ppo-sparse-bt-eps0.0-s0", "reinforce-sparse-bt-eps0.0-s0"):
        metrics = json.loads((results / f"eval/policy/{run_name}/metrics.json").read_text())
        assert POLICY_METRICS <= set(metrics)
    summary = pd.read_csv(results / "eval/summary.csv")
    assert list(summary["run"]) == ["sft-bt-eps0.0-s0", "ppo-sparse-bt-eps0.0-s0", "reinforce-sparse-bt-eps0.0-s0",
                                    "bon16-bt-eps0.0-s0"]
    assert {"reward_gold", "kl", "rm_accuracy_gold"} <= set(summary.columns)
    assert "| ppo-sparse-bt-eps0.0-s0 |" in (results / "eval/summary.md").read_text()
    for plot in ("rm_calibration.png", "policy_curves.png", "bon_curves.png", "loss_comparison.png", "frontier.png",
                 "sample_efficiency.png", "decoding.png"):
        assert (results / "eval/plots" / plot).stat().st_size > 10_000
    decodings = pd.read_csv(results / "eval/policy/ppo-sparse-bt-eps0.0-s0/decoding.csv")
    assert list(decodings["decoding"]) == ["sample", "greedy", "beam4"]
    assert "| ppo-sparse-bt-eps0.0 · greedy |" in (results / "eval/summary.md").read_text()
    assert "<table" in (results / "eval/landing.html").read_text()
    history = pd.read_csv(results / "policy/ppo-sparse-bt-eps0.0-s0/history.csv")
    assert {"reward_proxy", "reward_gold", "kl", "clipfrac", "value_loss"} <= set(history.columns)
    assert (quick_run / "data/processed/sentigram-quick/prompts_test.jsonl").is_file()


@pytest.mark.workflow
def test_second_run_has_nothing_to_do(quick_run):
    proc = snakemake(quick_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.workflow
def test_report_renders(quick_run):
    snakemake(quick_run, "--report", "report.html")
    html = (quick_run / "report.html").read_text(errors="replace")
    assert "rm_calibration.png" in html and "policy_curves.png" in html and "decoding.png" in html
    assert "rewardlab: quick" in html and "Policies (gold reward on held-out prompts)" in html  # the landing view


def dvc_repo(quick_run: Path, repo: Path, experiments: dict[str, str]) -> None:
    """A git + DVC checkout of this project holding the quick run's results, as a user has after
    `snakemake --configfile config/experiments/quick.yaml` (Snakemake's metadata included)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("Snakefile", "workflow", "config", "src", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name, **({"ignore": ignore} if src.is_dir()
                                                                                 else {}))
    (repo / "profiles").symlink_to("workflow/profiles")
    for name, text in experiments.items():
        (repo / "config/experiments" / name).write_text(text)
    (repo / ".dvc").mkdir()
    (repo / ".dvc/config").write_text(f"[core]\n    remote = local\n    autostage = true\n"
                                      f"['remote \"local\"']\n    url = {repo.parent / 'storage'}\n")
    for command in (["init", "-q"], ["config", "user.email", "ci@rewardlab"], ["config", "user.name", "ci"],
                    ["add", "-A"], ["commit", "-qm", "rewardlab"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    for name in ("results/quick", "results/dvc", "data/processed", ".snakemake"):
        shutil.copytree(quick_run / name, repo / name, symlinks=True)


TINY = {  # a named experiment on quick's data: one small reward model, no RL (the DAG's cheapest run)
    "name": "tiny",
    "data": {"name": "sentigram-quick", "num_sft_train": 3000, "num_sft_valid": 200, "num_prompts_train": 2048,
             "num_prompts_test": 256},
    "sft": {"epochs": 1},
    "labels": {"num_prompts": 128, "samples_per_prompt": 4},
    "bon": {"num_prompts": 8, "samples_per_prompt": 4},
    "reward": {"epochs": 1},
    "policy": {"algorithms": []},
}


@pytest.mark.workflow
def test_dvc_shows_and_runs_a_named_experiment(quick_run, tmp_path):
    """After a plain Snakemake run `dvc metrics show` reads its metrics; `dvc exp run -S experiment=tiny` runs a
    named experiment (a reward model) through Snakemake (which reuses the processed data it finds), and
    `dvc exp show` lists it with its params, metrics and cached outputs."""
    import yaml

    repo = tmp_path / "repo"
    repo.mkdir()
    dvc_repo(quick_run, repo, {"tiny.yaml": yaml.safe_dump(TINY)})
    dvc = str(Path(sys.executable).with_name("dvc"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    quick = json.loads((quick_run / "results/quick/eval/metrics.json").read_text())["policy"]

    shown = subprocess.run([dvc, "metrics", "show", "--json"], cwd=repo, capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    [workspace] = json.loads(shown.stdout).values()  # keyed by revision: "" is the workspace
    metrics = workspace["data"]["results/dvc/metrics.json"]["data"]
    gold = {run: values["reward_gold"] for run, values in quick.items()}
    assert metrics["experiment"] == "quick"
    assert {run: values["reward_gold"] for run, values in metrics["policy"].items()} == gold

    data = repo / "data/processed/sentigram-quick/prompts_train.jsonl"
    made = data.stat().st_mtime
    run = subprocess.run([dvc, "exp", "run", "-S", "experiment=tiny"], cwd=repo, capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert data.stat().st_mtime == made  # Snakemake, not DVC, decides what reruns
    assert (repo / "results/quick/eval/metrics.json").is_file()  # a plain run's folder is left alone
    show = subprocess.run([dvc, "exp", "show", "--json"], cwd=repo, capture_output=True, text=True, env=env)
    assert show.returncode == 0, show.stderr
    baseline = next(entry for entry in json.loads(show.stdout) if entry["rev"] != "workspace")
    [experiment] = [rev for exp in baseline["experiments"] for rev in exp["revs"]]
    data = experiment["data"]
    assert data["params"]["params.yaml"]["data"] == {"experiment": "tiny"}
    assert data["params"]["config/experiments/tiny.yaml"]["data"]["name"] == "tiny"
    metrics = data["metrics"]["results/dvc/metrics.json"]["data"]
    tiny = json.loads((repo / "results/tiny/eval/metrics.json").read_text())
    assert metrics["experiment"] == "tiny"
    assert metrics["rm"]["bt-eps0.0-s0"]["accuracy_gold"] == tiny["rm"]["bt-eps0.0-s0"]["accuracy_gold"]
    assert data["outs"]["results/tiny"]["hash"] and "data/processed" in data["outs"]
    # `rewardlab compare` reads the experiment's stage metrics from DVC's cache (results/tiny is a cached out).
    shutil.rmtree(repo / "results/tiny")
    frame, _ = compare([experiment["name"], "quick"], repo, "tiny")
    rm = json.loads((quick_run / "results/quick/rm/bt-eps0.0-s0/metrics.json").read_text())
    assert frame.loc["rm/bt-eps0.0-s0/train_loss", "quick"] == rm["train_loss"]
    assert frame.loc["eval/rm/bt-eps0.0-s0/accuracy_gold", experiment["name"]] == \
        metrics["rm"]["bt-eps0.0-s0"]["accuracy_gold"]


STUDY = {
    "name": "study",
    "seeds": [0, 1],
    # Fewer labels and a smaller best-of-n pool than quick's: a sweep, not a result.
    "labels": {"flip_rate": [0.0, 0.25], "num_prompts": 256, "samples_per_prompt": 4},
    "bon": {"num_prompts": 16, "samples_per_prompt": 8},
    "reward": {"losses": ["bt_margin"], "epochs": 1, "ensemble": {"members": 2, "aggregate": "uwo"}},
    "policy": {"algorithms": []},
    # both seeds of a (loss, noise) in one job and one process: one output folder per run all the same
    "resources": {"reward": {"threads": 1, "seeds_per_job": 2}},
}


@pytest.mark.workflow
def test_reward_model_study_sweeps_losses_noise_and_seeds(quick_run):
    """A small loss study (RM-only: no RL) reuses the quick data and SFT and fans out by wildcards, with both
    seeds of each (loss, noise) trained in one job (resources.reward.seeds_per_job)."""
    import yaml

    (quick_run / "study.yaml").write_text(yaml.safe_dump(STUDY))
    shutil.copytree(quick_run / "results/quick/sft", quick_run / "results/study/sft")
    snakemake(quick_run, "--configfile", "study.yaml")
    results = quick_run / "results/study"
    assert sorted(p.name for p in (results / "logs/reward").iterdir()) == ["bt_margin-eps0.0-s0-1.log",
                                                                            "bt_margin-eps0.25-s0-1.log"]
    runs = [f"{loss}-{noise}-s{seed}" for loss in STUDY["reward"]["losses"] for noise in ("eps0.0", "eps0.25")
            for seed in (0, 1)]
    for run in runs:
        metrics = json.loads((results / "eval/rm" / run / "metrics.json").read_text())
        assert RM_METRICS | {"bench_score", "bon_alpha", "bon_beta", "spearman_gold_ood"} <= set(metrics)
        assert (results / "rm" / run / "members/1/model.safetensors").is_file()  # a 2-member ensemble
    noisy = json.loads((results / "labels/eps0.25/metrics.json").read_text())
    clean = json.loads((results / "labels/eps0.0/metrics.json").read_text())
    assert noisy["train_label_agreement_gold"] < clean["train_label_agreement_gold"] - 0.1
    summary = pd.read_csv(results / "eval/summary.csv")
    assert sorted(summary["run"]) == sorted(runs)
    aggregate = pd.read_csv(results / "eval/summary_aggregate.csv")
    assert set(aggregate.loc[aggregate["kind"] == "rm", "seeds"]) == {2}
    assert not (results / "policy").exists()


def all_metrics(workdir: Path) -> dict[str, bytes]:
    files = [*sorted(workdir.glob("results/quick/**/metrics.json")),
             *sorted(workdir.glob("data/processed/**/metrics.json"))]
    return {str(p.relative_to(workdir)): p.read_bytes() for p in files}


@pytest.mark.workflow
def test_rerun_of_the_same_config_gives_byte_identical_metrics(quick_run):
    """Every random source is seeded from the config, and torch's threads come from the config, not from
    --cores: a forced rerun at --cores 1 of every stage on the way to PPO's evaluation (preprocess, SFT, pool,
    labels, reward model and its evaluation, policy, policy evaluation) reproduces every byte of the run at
    --cores 2. The first run's jobs started warm (forked from rewardlab.warmstart's server), the rerun's each in a
    fresh interpreter (warm_start=False). (The other policy and the summary run the same code on other inputs.)"""
    before = all_metrics(quick_run)
    assert len(before) >= 10
    ppo_run = quick_run / "results/quick/policy/ppo-sparse-bt-eps0.0-s0/run.json"
    assert json.loads(ppo_run.read_text())["warm_start"] is not warmstart.gpu_present()  # off on a GPU machine
    started = time.time()
    snakemake(quick_run, "--forceall", "--config", "warm_start=False", "--",
              "results/quick/eval/policy/ppo-sparse-bt-eps0.0-s0/metrics.json", cores=1)
    after = all_metrics(quick_run)
    rerun = [name for name in after if (quick_run / name).stat().st_mtime >= started]
    assert len(rerun) >= 8, rerun
    assert after == before
    assert json.loads(ppo_run.read_text())["warm_start"] is False


@pytest.mark.workflow
def test_sigkilled_job_resumes_under_rerun_incomplete(quick_run):
    """Kill Snakemake and its SFT job with SIGKILL after a checkpoint; --rerun-incomplete resumes it."""
    target = "results/quick/sft/metrics.json"
    expected = (quick_run / target).read_bytes()
    command = [SNAKEMAKE, "--cores", "2", "--configfile", QUICK, "--config", "checkpoint_every=5", "--forcerun", "sft",
               "--", target]
    proc = subprocess.Popen(command, cwd=quick_run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = quick_run / "results/quick/sft/.checkpoint/latest"
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before its first checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (quick_run / target).exists()
    checkpoint_step = latest.read_text().strip()
    snakemake(quick_run, "--unlock")  # the killed Snakemake left its lock
    proc = snakemake(quick_run, "--config", "checkpoint_every=5", "--rerun-incomplete", "--", target)
    log = (quick_run / "results/quick/logs/sft.log").read_text()
    assert f"resuming from results/quick/sft/.checkpoint/{checkpoint_step}" in log
    assert (quick_run / target).read_bytes() == expected


def test_multi_gpu_stages_launch_through_accelerate(tmp_path):
    """gpu > 1 turns a training stage's command into `accelerate launch` with one process per GPU; an
    Accelerate config file, when given, names the backend. A dry run shows the commands without running."""
    extra = tmp_path / "gpus.yaml"
    extra.write_text("resources:\n  sft: {gpu: 4}\n  accelerate_config: workflow/profiles/accelerate/fsdp.yaml\n")
    proc = subprocess.run([SNAKEMAKE, "-n", "-p", "--forceall", "--cores", "2", "--configfile", QUICK, str(extra)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert ("accelerate.commands.launch --num_processes 4 --config_file workflow/profiles/accelerate/fsdp.yaml"
            " -m rewardlab.train.sft") in out
    reward_lines = [line for line in out.splitlines() if "rewardlab.train.reward" in line]
    assert reward_lines and not any("accelerate" in line for line in reward_lines)  # gpu 0: plain python


def test_a_shaping_variant_runs_its_base_shaping_with_its_own_values(tmp_path):
    """A name of policy.shaping_variants is a wildcard like any shaping: its folder carries the variant's name, its
    command the registered shaping and the variant's values (a dry run shows the commands)."""
    extra = tmp_path / "variant.yaml"
    extra.write_text("policy:\n  algorithms: [ppo]\n  shapings: [abc, abc_beta08]\n  abc_beta: 0.5\n"
                     "  shaping_variants: {abc_beta08: {shaping: abc, abc_beta: 0.8}}\n")
    proc = subprocess.run([SNAKEMAKE, "-n", "-p", "--forceall", "--cores", "2", "--configfile", QUICK, str(extra)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    policy = [line for line in proc.stdout.splitlines() if "rewardlab.train.policy" in line]
    variant = [line for line in policy if "policy/ppo-abc_beta08-" in line]
    plain = [line for line in policy if "policy/ppo-abc-" in line]
    assert variant and plain
    assert all("--shaping abc " in line and '"abc_beta": 0.8' in line for line in variant)
    assert all("--shaping abc " in line and '"abc_beta": 0.5' in line for line in plain)


def test_snakemake_lint_gives_only_the_software_stack_advice():
    """`snakemake --lint` is clean but for "specify a conda environment or container" (one Python environment
    runs every rule; the README says so)."""
    proc = subprocess.run([SNAKEMAKE, "--lint", "--configfile", QUICK], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    items = {line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip().startswith("* ")}
    assert items == {"* Specify a conda environment or container for each rule.:"}, items
