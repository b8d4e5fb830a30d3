rule evaluate_policy:
    input:
        policy=lambda w: model_files(policy_folder(w)),
        sft=model_files(f"{RESULTS}/sft"),
        rm=model_files(f"{RESULTS}/rm/{{loss}}-{{noise}}-s{{seed}}"),
        prompts=f"{DATA}/prompts_test.jsonl",
    output:
        metrics=f"{RESULTS}/eval/policy/{{policy}}-{{loss}}-{{noise}}-s{{seed}}/metrics.json",
        samples=f"{RESULTS}/eval/policy/{{policy}}-{{loss}}-{{noise}}-s{{seed}}/samples.jsonl",
        decoding=f"{RESULTS}/eval/policy/{{policy}}-{{loss}}-{{noise}}-s{{seed}}/decoding.csv",
    wildcard_constraints:
        policy="|".join(["sft"] + POLICIES),
    params:
        torch_threads=res("evaluate", "threads"),
        cfg=lambda w: stage_config("evaluate"),
        policy=policy_folder,
        data=lambda w, input: folder_of(input.prompts),
        sft=lambda w, input: folder_of(input.sft),
        rm=lambda w, input: folder_of(input.rm),
        out=lambda w, output: folder_of(output.metrics),
        python=PYTHON,
    log:
        f"{LOGS}/eval/policy-{{policy}}-{{loss}}-{{noise}}-s{{seed}}.log",
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    shell:
        "{params.python} -m rewardlab.evaluate.policy --config {params.cfg:q} --policy {params.policy:q}"
        " --sft {params.sft:q} --rm {params.rm:q} --data {params.data:q} --out {params.out:q}"
        " --threads {params.torch_threads} 2> {log:q}"


rule dvc_view:
    """results/dvc/: the experiment that ran last, where dvc.yaml's metrics and plots point (same paths for every
    experiment, so `dvc exp show` and `dvc metrics diff` line experiments up). Reruns when the experiment does."""
    input:
        metrics=f"{RESULTS}/eval/metrics.json",
        summary=f"{RESULTS}/eval/summary.csv",
    output:
        metrics=DVC_VIEW[0],
        frontier=DVC_VIEW[1],
    params:
        experiment=EXP,
        out=lambda w, output: folder_of(output.metrics),
        python=PYTHON,
    log:
        f"{LOGS}/dvc_view.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
        gpu=0,
    shell:
        "{params.python} -m rewardlab.evaluate.dvc_view --experiment {params.experiment:q} --metrics {input.metrics:q}"
        " --summary {input.summary:q} --out {params.out:q} 2> {log:q}"
