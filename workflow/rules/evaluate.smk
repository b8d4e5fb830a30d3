rule evaluate_rm:
    input:
        rm=model_files(f"{RESULTS}/rm/{{loss}}-s{{seed}}"),
        labels=f"{RESULTS}/labels/test.jsonl",
    output:
        metrics=f"{RESULTS}/eval/rm/{{loss}}-s{{seed}}/metrics.json",
        calibration=f"{RESULTS}/eval/rm/{{loss}}-s{{seed}}/calibration.csv",
    params:
        cfg=lambda w: stage_config("evaluate"),
        rm=lambda w: f"{RESULTS}/rm/{w.loss}-s{w.seed}",
        labels=f"{RESULTS}/labels",
        out=lambda w: f"{RESULTS}/eval/rm/{w.loss}-s{w.seed}",
    log:
        f"{LOGS}/eval/rm-{{loss}}-s{{seed}}.log",
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    shell:
        "{PYTHON} -m rewardlab.evaluate.reward_model --config {params.cfg:q} --rm {params.rm:q}"
        " --labels {params.labels:q} --out {params.out:q} --threads {threads} 2> {log:q}"


def policy_folder(wildcards):
    """The SFT policy is evaluated as the run `sft-<loss>-s<seed>` (scored by that RM)."""
    if wildcards.algo == "sft":
        return f"{RESULTS}/sft"
    return f"{RESULTS}/policy/{wildcards.algo}-{wildcards.loss}-s{wildcards.seed}"


rule evaluate_policy:
    input:
        policy=lambda w: model_files(policy_folder(w)),
        sft=model_files(f"{RESULTS}/sft"),
        rm=model_files(f"{RESULTS}/rm/{{loss}}-s{{seed}}"),
        prompts=f"{DATA}/prompts_test.jsonl",
    output:
        metrics=f"{RESULTS}/eval/policy/{{algo}}-{{loss}}-s{{seed}}/metrics.json",
        samples=f"{RESULTS}/eval/policy/{{algo}}-{{loss}}-s{{seed}}/samples.jsonl",
    params:
        cfg=lambda w: stage_config("evaluate"),
        policy=policy_folder,
        data=DATA,
        sft=f"{RESULTS}/sft",
        rm=lambda w: f"{RESULTS}/rm/{w.loss}-s{w.seed}",
        out=lambda w: f"{RESULTS}/eval/policy/{w.algo}-{w.loss}-s{w.seed}",
    log:
        f"{LOGS}/eval/policy-{{algo}}-{{loss}}-s{{seed}}.log",
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    shell:
        "{PYTHON} -m rewardlab.evaluate.policy --config {params.cfg:q} --policy {params.policy:q}"
        " --sft {params.sft:q} --rm {params.rm:q} --data {params.data:q} --out {params.out:q}"
        " --threads {threads} 2> {log:q}"
