# Trains one reward model and, in the same process, evaluates it into eval/rm/<run>/ (held-out pairs,
# ToyRewardBench, best-of-n): on the tiny models, starting Python with torch and transformers costs more than
# the evaluation, and a loss study has a hundred of these. `python -m rewardlab.evaluate.reward_model`
# re-evaluates a saved model on its own.
REWARD_INPUT = dict(
    sft=model_files(f"{RESULTS}/sft"),
    labels=label_file,
    scales=label_scales,
    pool=f"{POOL}/train.jsonl",
    test=lambda w: f"{labels_dir(w.noise)}/pairs_test.jsonl",
    bench=[] if REAL else [f"{RESULTS}/pool/bench.jsonl", f"{RESULTS}/pool/bon.jsonl"],
)
REWARD_PARAMS = dict(
    torch_threads=res("reward", "threads"),
    cfg=lambda w: stage_config("reward"),
    sft=lambda w, input: folder_of(input.sft),
    labels=lambda w, input: folder_of(input.test),
    pool=lambda w, input: folder_of(input.pool),
    out=lambda w: f"{RESULTS}/rm/{w.loss}-{w.noise}-s{{seed}}",  # '{seed}': the runner fills it per run
    eval_out=lambda w: f"{RESULTS}/eval/rm/{w.loss}-{w.noise}-s{{seed}}",
    launch=LAUNCH["reward"],
    every=CHECKPOINT_EVERY,
)
REWARD_SHELL = (
    "{params.launch} rewardlab.train.reward --config {params.cfg:q} --loss {wildcards.loss:q}"
    " --seeds {params.seeds} --labels {params.labels:q} --pool {params.pool:q} --sft {params.sft:q}"
    " --out {params.out:q} --eval-out {params.eval_out:q} --threads {params.torch_threads}"
    " --checkpoint-every {params.every} 2> {log:q}"
)
# Reward models first. A reward job asks for every core of the default profile (threads 2) and the policy jobs
# after it for one each; started late, a reward job waits for both cores to be free while the policies that
# need its model cannot start, so one core sits idle until the other's job ends (in the algorithm study at
# fa721b1, about 65 core-seconds over four such waits). Run first, the reward jobs follow one another right after the
# labels, and from then on every policy job is ready. Scheduling only: no output changes.
REWARD_PRIORITY = 10

if res("reward", "seeds_per_job") == 1:

    rule reward:
        input:
            **REWARD_INPUT,
        output:
            reward_outputs("{seed}"),
        params:
            **REWARD_PARAMS,
            seeds=lambda w: w.seed,
        log:
            f"{LOGS}/reward/{{loss}}-{{noise}}-s{{seed}}.log",
        threads: res("reward", "threads")
        priority: REWARD_PRIORITY
        resources:
            mem_mb=res("reward", "mem_mb"),
            runtime=res("reward", "runtime"),
            gpu=res("reward", "gpu"),
        shell:
            REWARD_SHELL

else:  # resources.reward.seeds_per_job > 1: a job trains several seeds in one process, one folder per run
    for group in seed_groups("reward"):
        tag = "-".join(map(str, group))

        rule:
            name:
                f"reward_s{tag}"
            input:
                **REWARD_INPUT,
            output:
                [path for seed in group for path in reward_outputs(seed)],
            params:
                **REWARD_PARAMS,
                seeds=",".join(map(str, group)),
            log:
                f"{LOGS}/reward/{{loss}}-{{noise}}-s{tag}.log",
            threads: res("reward", "threads")
            priority: REWARD_PRIORITY
            resources:
                mem_mb=res("reward", "mem_mb"),
                runtime=res("reward", "runtime") * len(group),
                gpu=res("reward", "gpu"),
            shell:
                REWARD_SHELL
