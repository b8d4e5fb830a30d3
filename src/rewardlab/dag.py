"""What the Snakefile (``workflow/rules/*.smk``) knows about the DAG, in Python so that the rules and the tests
read one definition:

* ``STAGE_KEYS``: the config keys each stage reads. A stage's ``--config`` (and its Snakemake params) is only
  that slice, so changing a key reruns the stages that read it, and nothing else — under ``dvc exp run`` too,
  since DVC runs the whole workflow and Snakemake decides what is out of date;
* the sweep lists by kind, from the registries: online and offline algorithms, the label file each loss
  reads, the shapings that need a DPO policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rewardlab.config import ConfigError, base_shaping, is_real_data

COMMON_KEYS = ("device", "precision", "progress")
# The config each stage reads: whole sections, or "section.key" for single keys. Sweep lists (seeds,
# reward.losses, policy.algorithms, policy.shapings, labels.flip_rate) are wildcards, not parameters.
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "preprocess": ("data", "task.name"),
    "sft": ("model", "sft"),
    "pool": ("labels.num_prompts", "labels.samples_per_prompt", "labels.sampling_temperature", "labels.seed",
             "task", "bon", "rollout_backend", "vllm"),
    "label": ("labels.temperature", "labels.margin_scale", "labels.rating_noise", "labels.seed"),
    "reward": ("reward", "evaluate.seed", "evaluate.calibration_bins"),  # it evaluates its model too
    "policy": ("policy", "task", "reward.composite", "data.source", "evaluate.gold_model", "model.trust_remote_code",
               "rollout_backend", "vllm"),
    "evaluate": ("evaluate", "task", "data.source", "model.trust_remote_code", "rollout_backend", "vllm"),
}
# Real data: preprocess reads the model (its tokenizer and chat template) and the task is not used.
REAL_STAGE_KEYS = {"preprocess": ("data", "model")}
# Keys a section's slice leaves out: sweeps, and what another stage reads.
EXCLUDED = {"reward": ("losses", "composite"), "policy": ("algorithms", "shapings", "shaping_variants"),
            "evaluate": ("baseline_loss", "baseline_policy")}  # read by the summary, not by the evaluations
# The tiny GPT's stages do not read the pretrained-model keys: changing them reruns nothing.
PRETRAINED_KEYS = ("name_or_path", "trust_remote_code", "max_length", "gradient_checkpointing", "lora")


def stage_keys(config: Mapping[str, Any], stage: str) -> tuple[str, ...]:
    keys = (REAL_STAGE_KEYS.get(stage) if is_real_data(config) else None) or STAGE_KEYS[stage]
    if config.get("rollout_backend") != "vllm":  # the engine's settings matter to vllm rollouts only
        keys = tuple(key for key in keys if key != "vllm")
    return keys


def excluded(config: Mapping[str, Any], section: str) -> tuple[str, ...]:
    if section == "model" and not is_real_data(config):
        return PRETRAINED_KEYS
    return EXCLUDED.get(section, ())


def stage_slice(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The stage's slice of the validated config."""
    sliced: dict[str, Any] = {}
    for key in COMMON_KEYS + stage_keys(config, stage):
        section, _, sub = key.partition(".")
        if sub:
            if sub in config[section]:  # optional keys (data.source, evaluate.gold_model) only when set
                sliced.setdefault(section, {})[sub] = config[section][sub]
        elif isinstance(config[section], dict):
            skip = excluded(config, section)
            sliced[section] = {k: v for k, v in config[section].items() if k not in skip}
        else:
            sliced[section] = config[section]
    return sliced


def stage_config(config: Mapping[str, Any], stage: str) -> str:
    """The slice as JSON (the rules pass it quoted on the command line)."""
    return json.dumps(stage_slice(config, stage), sort_keys=True)


def policy_config(config: Mapping[str, Any], shaping: str) -> str:
    """The policy stage's slice for one name of ``policy.shapings``: a variant's values
    (``policy.shaping_variants``) replace the options they name, for that variant's runs only."""
    sliced = stage_slice(config, "policy")
    variant = config["policy"]["shaping_variants"].get(shaping, {})
    sliced["policy"].update({k: v for k, v in variant.items() if k != "shaping"})
    return json.dumps(sliced, sort_keys=True)


def online_algorithms(config: Mapping[str, Any]) -> list[str]:
    from rewardlab.rl.algorithms import ALGORITHMS

    return [a for a in config["policy"]["algorithms"] if a in ALGORITHMS]


def offline_algorithms(config: Mapping[str, Any]) -> list[str]:
    """Objectives trained on the preference pairs, not against the reward model (DPO, IPO, cDPO)."""
    from rewardlab.rl.offline import OFFLINE

    return [a for a in config["policy"]["algorithms"] if a in OFFLINE]


def label_file(loss: str) -> str:
    """The label set a loss consumes (pairs, rankings or ratings)."""
    from rewardlab.losses.registry import LOSSES

    return LOSSES.get(loss).label_file


def needs_dpo_policy(config: Mapping[str, Any], shaping: str) -> bool:
    from rewardlab.rl.shapings import SHAPINGS

    return "dpo_policy" in SHAPINGS.get(base_shaping(config, shaping)).needs


def dpo_shapings(config: Mapping[str, Any]) -> list[str]:
    return [s for s in config["policy"]["shapings"] if needs_dpo_policy(config, s)]


def processed_dir(config: Mapping[str, Any]) -> str:
    """Where preprocess writes: ``data/processed/<data.name>``, shared by every experiment with that name."""
    return f"data/processed/{config['data']['name']}"


def check_processed_data(config: Mapping[str, Any], root: str | Path = ".") -> None:
    """Refuse, before any job, a ``data.name`` whose folder holds data made with other settings: rebuilding it
    would overwrite the data another experiment's results were made from (no result is ever lost)."""
    run = Path(root) / processed_dir(config) / "run.json"
    try:
        made = json.loads(run.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # nothing there yet (or an unfinished run that Snakemake will redo)
    wanted = json.loads(json.dumps(stage_slice(config, "preprocess")))
    differences = [f"{key}: {there!r} there, {here!r} here"
                   for key, there, here in _differences(made, wanted) if key.split(".")[0] not in COMMON_KEYS]
    if differences:
        raise ConfigError(
            f"data.name: {processed_dir(config)}/ holds data made with other settings ({'; '.join(differences[:3])})."
            " Give this experiment its own data.name, or delete that folder to rebuild it")


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b))
                for d in _differences(a.get(key), b.get(key), f"{prefix}{key}" if not prefix else f"{prefix}.{key}")]
    return [] if a == b else [(prefix, a, b)]


def check_inputs(config: Mapping[str, Any], root: str | Path = ".") -> None:
    """What the Snakefile checks at parse time, before any job: the data files and model folders the config
    names exist and can be used, and ``data/processed/<data.name>/`` was made with these settings."""
    from rewardlab.data.adapters import missing_source_file
    from rewardlab.models.folder import ModelFolderError, check_model_folder

    if missing := missing_source_file(config["data"].get("source") or {}, root):
        raise ConfigError(missing)
    trust = config["model"]["trust_remote_code"]
    folders = [("model.name_or_path", config["model"].get("name_or_path")),
               ("evaluate.gold_model", config["evaluate"].get("gold_model"))]
    for key, folder in folders:
        if folder:
            try:
                tokenizer = key == "evaluate.gold_model" or is_real_data(config)  # SentiGram brings its own
                check_model_folder(Path(root) / folder, key, trust, tokenizer=tokenizer)
            except ModelFolderError as err:
                raise ConfigError(str(err.code)) from None
    check_source_rows(config, root)
    check_processed_data(config, root)


CHECKED = ".snakemake/rewardlab/sources-checked.json"  # files that passed, by (size, mtime): read once


def check_source_rows(config: Mapping[str, Any], root: str | Path = ".") -> None:
    """Read every row of the real-data files through the format's reader before any job, so a bad file stops
    the workflow before Snakemake removes the earlier outputs of the jobs it would rerun (a failed run never
    deletes an earlier good result). A file already read unchanged is not read again."""
    source = config["data"].get("source")
    if not source:
        return
    from rewardlab.data.adapters import read_records
    from rewardlab.data.records import DataError

    stamp_file = Path(root) / CHECKED
    try:
        checked = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        checked = {}
    read = {}
    for key in ("path", "test_path"):
        if not source.get(key):
            continue
        path = Path(root) / source[key]
        stat = path.stat()
        stamp = [source["format"], config["data"]["on_bad_row"], stat.st_size, stat.st_mtime_ns]
        if checked.get(str(path.resolve())) == stamp:
            continue
        try:
            read_records(path, source["format"], on_bad_row=config["data"]["on_bad_row"])
        except DataError as err:  # a bad file, or a bad row under on_bad_row: error (its message says how to skip)
            raise ConfigError(f"data.source.{key}: {err}") from None
        read[str(path.resolve())] = stamp
    if read:
        stamp_file.parent.mkdir(parents=True, exist_ok=True)
        stamp_file.write_text(json.dumps({**checked, **read}, indent=1) + "\n")
