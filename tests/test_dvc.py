"""dvc.yaml and the Snakefile describe one DAG: DVC runs the Snakemake workflow of the named experiment in
params.yaml, and everything dvc.yaml names is a Snakemake output or a file that exists. The run through
`dvc exp run -S experiment=quick` itself is in test_workflow.py (it reuses the quick DAG's results).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rewardlab import config as C

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "config/experiments").glob("*.yaml"))


def stage() -> dict:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["experiment"]
    return stages["experiment"]


def paths(entries) -> list[str]:
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries or []]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_named_experiment_is_its_file_over_the_default(experiment, tmp_path):
    """`experiment: X` (what params.yaml hands Snakemake) gives the same config as `--configfile
    config/experiments/X.yaml`, and the experiment's results folder is results/X/ (dvc.yaml's out)."""
    params = tmp_path / "params.yaml"
    params.write_text(f"experiment: {experiment}\n")
    named = C.load(ROOT / "config/config.yaml", params)
    direct = C.load(ROOT / "config/config.yaml", ROOT / "config/experiments" / f"{experiment}.yaml")
    assert named.pop("experiment") == experiment and direct.pop("experiment") is None
    assert named == direct
    assert named["name"] == experiment


def test_the_command_line_wins_over_the_named_experiment(tmp_path):
    """base < config/experiments/<name>.yaml < command line: `-S experiment=quick` plus a value on the command
    line keeps the command line's value, and a key the experiment does not set keeps the base's."""
    over = tmp_path / "over.yaml"
    over.write_text("experiment: quick\npolicy: {steps: 3}\n")
    config = C.load(ROOT / "config/config.yaml", over)
    quick = yaml.safe_load((ROOT / "config/experiments/quick.yaml").read_text())
    base = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    assert config["policy"]["steps"] == 3 != quick["policy"]["steps"]
    assert config["policy"]["prompts_per_step"] == quick["policy"]["prompts_per_step"]
    assert config["policy"]["kl_coef"] == base["policy"]["kl_coef"]


def test_named_experiment_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: no-such-study\n")
    with pytest.raises(C.ConfigError, match=r"experiment: 'no-such-study' has no file .*known: .*loss-study"):
        C.load(ROOT / "config/config.yaml", bad)
    bad.write_text("experiment: quick\nname: other\n")
    with pytest.raises(C.ConfigError, match=r"name: 'other' is not the experiment's name 'quick'"):
        C.load(ROOT / "config/config.yaml", bad)
    bad.write_text("experiment: ../quick\n")
    with pytest.raises(C.ConfigError, match=r"experiment: '\.\./quick' is not a file name"):
        C.load(ROOT / "config/config.yaml", bad)


def test_dvc_stage_tracks_the_experiment_and_its_files():
    """The stage's params are params.yaml's `experiment`, the base config and the experiment's file (which
    exists for the value params.yaml ships); its outs persist (Snakemake decides what reruns); its metrics and
    plots live outside every out, at paths no experiment changes."""
    exp = stage()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(params) == {"experiment"} and params["experiment"] in EXPERIMENTS
    assert exp["params"][0] == "experiment"
    files = {next(iter(group)) for group in exp["params"][1:]}
    assert files == {"config/config.yaml", "config/experiments/${experiment}.yaml"}
    assert "--configfile params.yaml" in exp["cmd"] and "${" not in exp["cmd"]  # nothing pasted into the shell
    for out in exp["outs"]:
        assert next(iter(out.values()))["persist"] is True
    outs = [p.replace("${experiment}", params["experiment"]) for p in paths(exp["outs"])]
    for view in paths(exp["metrics"]) + paths(exp["plots"]):
        assert view.startswith("results/dvc/") and not any(view.startswith(o + "/") for o in outs)
    for dep in exp["deps"]:
        assert (ROOT / dep).exists(), dep


def test_every_dvc_metric_and_plot_is_a_snakemake_output():
    """A dry run asking for dvc.yaml's metrics and plots under params.yaml: Snakemake knows a rule for each."""
    exp = stage()
    files = paths(exp["metrics"]) + paths(exp["plots"])
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run([snakemake, *files, "-n", "--cores", "1", "--configfile", "params.yaml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_dvc_reads_the_pipeline_and_has_a_default_local_remote():
    """DVC itself parses dvc.yaml (templating from params.yaml included), and `dvc push` has somewhere to go
    offline."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([dvc, "dag", "--md"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "experiment" in proc.stdout
    remote = subprocess.run([dvc, "remote", "list"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert remote.stdout.split()[:3] == ["local", str(ROOT / ".dvc-storage"), "(default)"]
