rule reward:
    input:
        sft=model_files(f"{RESULTS}/sft"),
        labels=f"{RESULTS}/labels/train.jsonl",
    output:
        model_files(f"{RESULTS}/rm/{{loss}}-s{{seed}}"),
        stage_files(f"{RESULTS}/rm/{{loss}}-s{{seed}}"),
        history=f"{RESULTS}/rm/{{loss}}-s{{seed}}/history.csv",
    params:
        cfg=lambda w: stage_config("reward"),
        sft=f"{RESULTS}/sft",
        labels=f"{RESULTS}/labels",
        out=lambda w: f"{RESULTS}/rm/{w.loss}-s{w.seed}",
    log:
        f"{LOGS}/reward/{{loss}}-s{{seed}}.log",
    threads: res("reward", "threads")
    resources:
        mem_mb=res("reward", "mem_mb"),
        runtime=res("reward", "runtime"),
        gpu=res("reward", "gpu"),
    shell:
        "{PYTHON} -m rewardlab.train.reward --config {params.cfg:q} --loss {wildcards.loss:q}"
        " --seed {wildcards.seed} --labels {params.labels:q} --sft {params.sft:q} --out {params.out:q}"
        " --threads {threads} 2> {log:q}"
