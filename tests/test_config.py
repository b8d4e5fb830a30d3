"""The config schema: defaults, and errors that name the key before any job runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rewardlab import config as C

ROOT = Path(__file__).resolve().parents[1]


def test_default_and_experiment_configs_validate():
    cfg = C.load(ROOT / "config/config.yaml")
    assert cfg["policy"]["algorithms"] == ["ppo", "reinforce"]
    quick = C.load(ROOT / "config/config.yaml", ROOT / "config/experiments/quick.yaml")
    assert quick["name"] == "quick" and quick["reward"]["losses"] == ["bt"]


def test_defaults_are_filled_from_the_schema():
    cfg = C.validate({})
    assert cfg["policy"]["clip"] == 0.2
    assert cfg["resources"]["sft"] == {}
    assert C.stage_resources(cfg, "sft") == C.RESOURCE_DEFAULTS


@pytest.mark.parametrize(
    "override, key",
    [
        ({"policy": {"kl_coef": -1}}, "policy.kl_coef"),
        ({"policy": {"algorithms": ["ppo", "nope"]}}, "policy.algorithms.1"),
        ({"reward": {"lr": "fast"}}, "reward.lr"),
        ({"sft": {"epochs": 2, "epochz": 3}}, "sft.epochz"),
        ({"typo_section": {}}, "typo_section"),
        ({"labels": {"flip_rate": 0.7}}, "labels.flip_rate"),
        ({"resources": {"sft": {"gpu": -1}}}, "resources.sft.gpu"),
        ({"policy": {"prompts_per_step": 2, "minibatches": 4}}, "policy.minibatches"),
        ({"policy": {"shapings": ["sparse", "abc_beta05"]}}, "policy.shapings.1"),
        ({"policy": {"shaping_variants": {"half": {"shaping": "nope"}}}}, "policy.shaping_variants.half.shaping"),
        ({"policy": {"shaping_variants": {"half": {"shaping": "abc", "abc_beta": 2}}}},
         "policy.shaping_variants.half.abc_beta"),
        ({"policy": {"shaping_variants": {"half": {"shaping": "abc", "abc_bta": 0.5}}}},
         "policy.shaping_variants.half.abc_bta"),
        ({"policy": {"shaping_variants": {"abc": {"shaping": "abc", "abc_beta": 0.5}}}},
         "policy.shaping_variants.abc"),
        ({"policy": {"shaping_variants": {"abc-half": {"shaping": "abc"}}}}, "policy.shaping_variants"),
        ({"evaluate": {"baseline_policy": "uniform"}}, "evaluate.baseline_policy"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(C.ConfigError, match=key.replace(".", r"\.")):
        C.validate(override)


def test_snakemake_refuses_a_bad_config_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"policy": {"kl_coef": -0.5}}))
    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(snakemake), "-n", "--cores", "1", "--configfile", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "policy.kl_coef" in proc.stdout + proc.stderr
    assert "Job stats" not in proc.stdout + proc.stderr


def test_cli_validate(capsys):
    from rewardlab.cli import main

    assert main(["validate", str(ROOT / "config/config.yaml"), str(ROOT / "config/experiments/quick.yaml")]) == 0
    assert "quick" in capsys.readouterr().out


@pytest.mark.parametrize("experiment", sorted(p.name for p in (ROOT / "config/experiments").glob("*.yaml")))
def test_every_experiment_config_validates(experiment):
    """Each shipped experiment (the GPU examples for real data included) validates on top of the default."""
    cfg = C.load(ROOT / "config/config.yaml", ROOT / "config/experiments" / experiment)
    assert cfg["name"] == Path(experiment).stem


def test_a_shaping_variant_changes_only_its_own_runs_config():
    """policy.shaping_variants: a named shaping with its own option values (the ABC β sweep); the policy stage's
    slice carries the variant's values for its runs only, so adding a variant reruns nothing else."""
    from rewardlab import dag

    cfg = C.validate({"policy": {"shapings": ["abc", "abc_beta08"], "abc_beta": 0.5,
                                 "shaping_variants": {"abc_beta08": {"shaping": "abc", "abc_beta": 0.8}}}})
    assert C.base_shaping(cfg, "abc_beta08") == "abc" and C.base_shaping(cfg, "abc") == "abc"
    plain, variant = (json.loads(dag.policy_config(cfg, s)) for s in ("abc", "abc_beta08"))
    assert plain["policy"]["abc_beta"] == 0.5 and variant["policy"]["abc_beta"] == 0.8
    assert "shaping_variants" not in plain["policy"]
    without = C.validate({"policy": {"shapings": ["abc"], "abc_beta": 0.5}})
    assert dag.policy_config(without, "abc") == dag.policy_config(cfg, "abc")
