# Path helpers, config slices and resources shared by the rule files. No logic about the science here.
import os
import shlex
import sys

from rewardlab import dag
from rewardlab.config import base_shaping, flip_rates, is_real_data, noise_tag, stage_resources

EXP = config["name"]
DATA = dag.processed_dir(config)
RESULTS = f"results/{EXP}"
LOGS = f"{RESULTS}/logs"
# What DVC compares across experiments (dvc.yaml): the last experiment's metrics at paths no experiment changes.
DVC_VIEW = ["results/dvc/metrics.json", "results/dvc/frontier.csv"]
# The interpreter that runs Snakemake (the project's environment), passed to the jobs' shells as an environment
# variable: the commands (and so the rules' params, a rerun trigger) hold "$REWARDLAB_PYTHON", not a path that
# differs between machines, checkouts and SLURM nodes.
os.environ["REWARDLAB_PYTHON"] = sys.executable
PYTHON = '"$REWARDLAB_PYTHON"'


envvars:
    "REWARDLAB_PYTHON",


# Warm starts (config warm_start, rewardlab.warmstart): for a local run, onstart starts a process that imports
# torch, transformers and rewardlab once, and points $REWARDLAB_PYTHON at a client that has it fork each
# `-m rewardlab.…` job. The commands are the same text either way, so switching it reruns nothing.
WARM_START = []


onstart:
    from rewardlab import warmstart

    if config["warm_start"] and workflow.local_exec and not workflow.remote_exec and not warmstart.gpu_present():
        WARM_START.append(warmstart.start())


onsuccess:
    for server in WARM_START:
        server.stop()


onerror:
    for server in WARM_START:
        server.stop()


# Real preference data (data.source) or the embedded SentiGram task: real data brings its own pairs, so the
# toy's pool and label stages give way to files that preprocess writes under DATA.
REAL = is_real_data(config)
CHECKPOINT_EVERY = int(config["checkpoint_every"])  # passed to training stages; not a parameter of any
SEEDS = config["seeds"]
LOSSES = config["reward"]["losses"]
ALGORITHMS = config["policy"]["algorithms"]
OFFLINE = dag.offline_algorithms(config)  # trained on pairs, not against the RM (rewardlab.rl.offline)
ONLINE = dag.online_algorithms(config)  # rewardlab.rl.algorithms
SHAPINGS = config["policy"]["shapings"]
# A policy's name: <algo>-<shaping> online, <algo>-offline for DPO-style baselines, sft for the start.
POLICIES = [f"{a}-{s}" for a in ONLINE for s in SHAPINGS] + [f"{a}-offline" for a in OFFLINE]
NOISES = {noise_tag(eps): eps for eps in flip_rates(config)}  # label-noise tag -> flip rate

wildcard_constraints:
    loss=r"[a-z_]+",
    algo=r"[a-z_]+",
    noise=r"eps[0-9.]+",
    seed=r"\d+",

def stage_config(stage):
    """The stage's slice of the validated config as JSON (rewardlab.dag.STAGE_KEYS; passed quoted)."""
    return dag.stage_config(config, stage)


def res(stage, key):
    """A stage's resource. Rules pass res(stage, "threads") to torch (`--threads {params.torch_threads}`), not
    Snakemake's {threads}, which it scales down to --cores: torch's numbers depend on its thread count, so a
    run's results do not depend on the scheduler."""
    return stage_resources(config, stage)[key]


def launcher(stage):
    """How a training stage starts: plain Python, or ``accelerate launch`` with one process per GPU when the
    stage's resources ask for more than one GPU (DDP; an Accelerate config file from resources.accelerate_config
    for DeepSpeed/FSDP)."""
    gpus = res(stage, "gpu")
    if gpus <= 1:
        return f"{PYTHON} -m"
    accelerate_config = config["resources"].get("accelerate_config")
    # The config file names the backend (DeepSpeed, FSDP); without one, plain multi-GPU DDP.
    backend = f"--config_file {shlex.quote(accelerate_config)}" if accelerate_config else "--multi_gpu"
    return f"{PYTHON} -m accelerate.commands.launch --num_processes {gpus} {backend} -m"


LAUNCH = {stage: launcher(stage) for stage in ("sft", "reward", "policy")}


def reward_outputs(seed):
    """One run's files: the reward model folder and its evaluation (eval/rm/<run>/)."""
    run = f"{{loss}}-{{noise}}-s{seed}"
    return (model_files(f"{RESULTS}/rm/{run}") + stage_files(f"{RESULTS}/rm/{run}")
            + [f"{RESULTS}/rm/{run}/history.csv"]
            + [f"{RESULTS}/eval/rm/{run}/{name}" for name in ("metrics.json", "calibration.csv", "bon.csv")])


def seed_groups(stage):
    """config seeds in chunks of resources.<stage>.seeds_per_job: the seeds one job trains."""
    size = res(stage, "seeds_per_job")
    return [SEEDS[i : i + size] for i in range(0, len(SEEDS), size)]


def model_files(folder, causal=False):
    """The files of a Hugging Face model folder (a causal LM also saves its generation config)."""
    names = ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"]
    return [f"{folder}/{name}" for name in names + (["generation_config.json"] if causal else [])]


def stage_files(folder):
    return [f"{folder}/{name}" for name in ("metrics.json", "run.json")]


def labels_dir(noise):
    """Where a noise level's label sets are: the label stage's folder, or the real data's preprocessed pairs."""
    return DATA if REAL else f"{RESULTS}/labels/{noise}"


POOL = f"{DATA}/pool" if REAL else f"{RESULTS}/pool"  # responses the reward model is normalised on


def label_file(wildcards):
    """The label set a loss consumes (pairs, rankings or ratings)."""
    return f"{labels_dir(wildcards.noise)}/{dag.label_file(wildcards.loss)}"


def label_scales(wildcards):
    """The rating scales: the simulated annotators', or the real data's attribute weights."""
    return [f"{labels_dir(wildcards.noise)}/scales.json"]


def rm_runs():
    return [f"{loss}-{noise}-s{seed}" for loss in LOSSES for noise in NOISES for seed in SEEDS]


def online_policy_runs():
    """Policies trained against a reward model (they have RL training curves)."""
    return [f"{a}-{s}-{rm}" for a in ONLINE for s in SHAPINGS for rm in rm_runs()]


def policy_runs():
    """Every evaluated policy: SFT (scored by each RM), each trained one; none in a reward-model-only study.
    Offline policies are scored by each reward model of their label-noise level."""
    if not ALGORITHMS:
        return []
    return [f"{p}-{rm}" for p in ["sft"] + POLICIES for rm in rm_runs()]


def summary_outputs():
    return [f"{RESULTS}/eval/summary.md", f"{RESULTS}/eval/summary.csv", f"{RESULTS}/eval/landing.html",
            *DVC_VIEW]


def folder_of(files):
    """The folder of a rule's input or output file (or of the first of a list): params derived, not typed."""
    first = files if isinstance(files, str) else files[0]
    return os.path.dirname(first)


def dpo_policy(wildcards):
    """A shaping that needs a DPO policy (dpo_implicit) reads the one trained on the same label set and seed."""
    if not dag.needs_dpo_policy(config, wildcards.shaping):
        return []
    return model_files(f"{RESULTS}/policy/dpo-offline-{wildcards.noise}-s{wildcards.seed}", causal=True)


def dpo_argument(wildcards):
    if not dag.needs_dpo_policy(config, wildcards.shaping):
        return ""
    folder = f"{RESULTS}/policy/dpo-offline-{wildcards.noise}-s{wildcards.seed}"
    return f"--dpo {shlex.quote(folder)}"


def policy_folder(wildcards):
    """Where the evaluated policy lives: SFT, an offline policy (one per label set) or an online one."""
    if wildcards.policy == "sft":
        return f"{RESULTS}/sft"
    if wildcards.policy.endswith("-offline"):
        return f"{RESULTS}/policy/{wildcards.policy}-{wildcards.noise}-s{wildcards.seed}"
    return f"{RESULTS}/policy/{wildcards.policy}-{wildcards.loss}-{wildcards.noise}-s{wildcards.seed}"
