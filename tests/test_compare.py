"""`rewardlab compare` on a real git repository: revisions, DVC experiment refs, experiment folders."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from rewardlab.cli import main
from rewardlab.compare import CompareError, compare


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def write(root: Path, path: str, obj) -> None:
    file = root / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


@pytest.fixture
def repo(tmp_path) -> Path:
    git(tmp_path, "init", "-q")
    write(tmp_path, "results/default/rm/bt-s0/metrics.json", {"accuracy_gold": 0.9, "ece": 0.05})
    write(tmp_path, "results/default/eval/metrics.json", {"ppo/reward_gold": 1.5})
    write(tmp_path, "results/default/policy/ppo/history.csv", "step,reward_gold\n1,0.1\n2,0.4\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    # The workspace moves on: one metric changes, one disappears, one appears.
    write(tmp_path, "results/default/rm/bt-s0/metrics.json", {"accuracy_gold": 0.95, "brier": 0.2})
    write(tmp_path, "results/default/policy/ppo/history.csv", "step,reward_gold\n1,0.2\n2,0.6\n")
    return tmp_path


def test_workspace_against_head_shows_differences_and_missing(repo, tmp_path):
    frame, markdown = compare(["HEAD", "workspace"], repo, "default",
                              curves=["policy/ppo/history.csv:reward_gold"], out=tmp_path / "cmp")
    assert frame.loc["rm/bt-s0/accuracy_gold", "HEAD"] == 0.9
    assert frame.loc["rm/bt-s0/accuracy_gold", "workspace"] == 0.95
    assert math.isclose(frame.loc["rm/bt-s0/accuracy_gold", "Δ workspace"], 0.05)
    assert math.isnan(frame.loc["rm/bt-s0/ece", "workspace"])  # missing, not zero
    assert math.isnan(frame.loc["rm/bt-s0/brier", "HEAD"])
    assert frame.loc["eval/ppo/reward_gold", "Δ workspace"] == 0.0
    assert "| rm/bt-s0/ece | 0.05 | — | — |" in markdown
    assert (tmp_path / "cmp/compare.csv").read_text().startswith("metric,HEAD,workspace,Δ workspace")
    assert (tmp_path / "cmp/compare.png").stat().st_size > 5000


def test_dvc_experiment_ref_and_experiment_folders(repo):
    git(repo, "update-ref", "refs/exps/ab/cdef0123/tidy-hold", "HEAD")
    frame, _ = compare(["tidy-hold", "workspace"], repo, "default")
    assert frame.loc["rm/bt-s0/accuracy_gold", "tidy-hold"] == 0.9
    write(repo, "results/other/rm/bt-s0/metrics.json", {"accuracy_gold": 0.7, "brier": 0.2})
    frame, markdown = compare(["default", "other"], repo, "default", only_changed=True)
    assert frame.loc["rm/bt-s0/accuracy_gold", "other"] == 0.7
    assert "| rm/bt-s0/accuracy_gold | 0.95 | 0.7 |" in markdown
    assert "rm/bt-s0/brier" not in markdown  # unchanged rows are left out with --changed
    assert "| eval/ppo/reward_gold | 1.5 | — | — |" in markdown  # missing in one source counts as a change


def test_unknown_source_is_a_clear_error(repo, capsys):
    with pytest.raises(CompareError, match="not 'workspace'"):
        compare(["no-such-thing", "workspace"], repo, "default")
    assert main(["compare", "--root", str(repo), "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_default_is_head_against_workspace(repo, capsys):
    assert main(["compare", "--root", str(repo)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| metric | HEAD | workspace | Δ workspace |"
