"""dvc.yaml and the Snakefile describe one DAG: every DVC out and metric is a Snakemake output, every
params key exists in the config schema, and every stage's command names a real Snakemake rule.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import yaml

from rewardlab import config as C

ROOT = Path(__file__).resolve().parents[1]


def render(text: str, variables: dict, item: dict | None = None) -> str:
    def lookup(match: re.Match) -> str:
        path = match.group(1)
        if path.startswith("item."):
            return str(item[path[5:]])
        value = variables
        for part in path.split("."):
            value = value[part]
        return str(value)

    return re.sub(r"\$\{([^}]+)\}", lookup, text)


def expanded_stages() -> list[tuple[str, dict]]:
    """(rendered stage name, rendered stage dict) like DVC's templating, matrix included."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    variables = C.load(ROOT / "config/config.yaml")
    stages = []
    for name, stage in dvc["stages"].items():
        matrix = stage.pop("matrix", None)
        items = [{}]
        if matrix:
            axes = {k: yaml.safe_load(render(v, variables)) if isinstance(v, str) else v for k, v in matrix.items()}
            items = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
        for item in items:
            stages.append((name, yaml.safe_load(render(yaml.safe_dump(stage), variables, item))))
    return stages


def paths(entries) -> list[str]:
    out = []
    for entry in entries or []:
        out.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return out


def test_params_exist_in_the_schema_and_in_the_params_file():
    """DVC reads params from config/config.yaml itself (schema defaults do not count), so every key is there."""
    schema = C.load_schema()
    written = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for _, stage in expanded_stages():
        for group in stage.get("params", []):
            for key in group["config/config.yaml"]:
                node, value = schema, written
                for part in key.split("."):
                    assert part in node["properties"], f"dvc.yaml params key {key} is not in the config schema"
                    assert part in value, f"dvc.yaml params key {key} is not written in config/config.yaml"
                    node, value = node["properties"][part], value[part]


def test_dvc_params_cover_every_key_each_stage_reads():
    """The Snakefile passes each stage its slice of the config (rewardlab.dag.STAGE_KEYS); DVC must track the
    same keys, or a changed key would rerun under Snakemake and not under `dvc repro` (the drift that left
    labels.seed out of the pool and label stages). DVC can only track keys written in the params file."""
    from rewardlab import dag

    config = C.load(ROOT / "config/config.yaml")
    written = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    params: dict[str, set[str]] = {}
    for name, stage in expanded_stages():
        for group in stage.get("params", []):
            params.setdefault(name, set()).update(group["config/config.yaml"])
    for stage in dag.STAGE_KEYS:
        reads = set()
        for key in dag.stage_keys(config, stage):
            section, _, sub = key.partition(".")
            if sub:
                reads.add(key)
            elif isinstance(config[section], dict):
                reads |= {f"{section}.{k}" for k in config[section] if k not in dag.excluded(config, section)}
        reads = {k for k in reads if k.split(".")[1] in (written.get(k.split(".")[0]) or {})}
        missing = sorted(k for k in reads if not any(k == p or k.startswith(p + ".") for p in params[stage]))
        assert not missing, f"dvc.yaml stage {stage} does not track {missing}"


def test_every_dvc_output_is_a_snakemake_output():
    files = []
    for _, stage in expanded_stages():
        files += [p for p in paths(stage.get("outs")) + paths(stage.get("metrics")) if "." in Path(p).name]
        rules = stage["cmd"].split("--allowed-rules", 1)[1].split("--")[0].split()
        assert rules, stage["cmd"]
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    # A dry run that asks for every DVC file: Snakemake must know a rule for each (exit 0), without running.
    proc = subprocess.run([snakemake, "-n", "--cores", "1", *files], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    listed = subprocess.run([snakemake, "--list-rules"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    for _, stage in expanded_stages():
        for rule in stage["cmd"].split("--allowed-rules", 1)[1].split("--")[0].split():
            assert rule in listed.stdout.split(), f"dvc.yaml names an unknown Snakemake rule {rule}"


def test_dvc_reads_the_pipeline_and_has_a_default_local_remote():
    """DVC itself parses dvc.yaml (templating and matrices included) into the stage graph, and `dvc push`
    has somewhere to go offline."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([dvc, "dag", "--md"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("preprocess", "sft", "pool", "reward@", "policy@", "evaluate"):
        assert stage in proc.stdout
    remote = subprocess.run([dvc, "remote", "list"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert remote.stdout.split()[:3] == ["local", str(ROOT / ".dvc-storage"), "(default)"]
