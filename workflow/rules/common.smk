# Path helpers, config slices and resources shared by the rule files. No logic about the science here.
import json
import shlex
import sys

from rewardlab.config import stage_resources

EXP = config["name"]
DATA = f"data/processed/{config['data']['name']}"
RESULTS = f"results/{EXP}"
LOGS = f"{RESULTS}/logs"
PYTHON = shlex.quote(sys.executable)  # the interpreter that runs Snakemake, i.e. the project's environment
SEEDS = config["seeds"]
LOSSES = config["reward"]["losses"]
ALGORITHMS = config["policy"]["algorithms"]

wildcard_constraints:
    loss=r"[a-z_]+",
    algo=r"[a-z_]+",
    seed=r"\d+",

# The config keys each stage reads. A stage's params hold only its slice, so changing a key reruns the
# stages that read it and what depends on them, nothing else.
COMMON_KEYS = ["device", "precision", "progress"]
STAGE_KEYS = {
    "preprocess": ["data"],
    "sft": ["model", "sft"],
    "label": ["labels", "task"],
    "reward": ["reward"],
    "policy": ["policy", "task"],
    "evaluate": ["evaluate", "task"],
}


# Sweep lists are wildcards, not parameters: adding a loss or an algorithm reruns nothing that exists.
SWEEP_KEYS = {"reward": "losses", "policy": "algorithms"}


def stage_config(stage):
    """The stage's slice of the validated config as JSON (passed quoted on the command line)."""
    keys = COMMON_KEYS + STAGE_KEYS[stage]
    sliced = {k: config[k] for k in keys}
    for section, sweep in SWEEP_KEYS.items():
        if section in sliced:
            sliced[section] = {k: v for k, v in sliced[section].items() if k != sweep}
    return json.dumps(sliced, sort_keys=True)


def res(stage, key):
    return stage_resources(config, stage)[key]


def model_files(folder):
    return [f"{folder}/{name}" for name in ("model.safetensors", "config.json", "tokenizer.json")]


def stage_files(folder):
    return [f"{folder}/{name}" for name in ("metrics.json", "run.json")]


def policy_runs():
    """Every evaluated policy: the SFT policy and each trained one, per reward model and seed."""
    return [f"{algo}-{loss}-s{seed}" for algo in ["sft"] + ALGORITHMS for loss in LOSSES for seed in SEEDS]


def rm_runs():
    return [f"{loss}-s{seed}" for loss in LOSSES for seed in SEEDS]


def trained_policy_runs():
    return [f"{algo}-{loss}-s{seed}" for algo in ALGORITHMS for loss in LOSSES for seed in SEEDS]


def summary_outputs():
    return [f"{RESULTS}/eval/summary.md", f"{RESULTS}/eval/summary.csv"]
