rule reward:
    input:
        sft=model_files(f"{RESULTS}/sft"),
        labels=label_file,
        scales=label_scales,
        pool=f"{POOL}/train.jsonl",
    output:
        model_files(f"{RESULTS}/rm/{{loss}}-{{noise}}-s{{seed}}"),
        stage_files(f"{RESULTS}/rm/{{loss}}-{{noise}}-s{{seed}}"),
        history=f"{RESULTS}/rm/{{loss}}-{{noise}}-s{{seed}}/history.csv",
    params:
        cfg=lambda w: stage_config("reward"),
        sft=f"{RESULTS}/sft",
        labels=lambda w: labels_dir(w.noise),
        pool=POOL,
        out=lambda w: f"{RESULTS}/rm/{w.loss}-{w.noise}-s{w.seed}",
    log:
        f"{LOGS}/reward/{{loss}}-{{noise}}-s{{seed}}.log",
    threads: res("reward", "threads")
    resources:
        mem_mb=res("reward", "mem_mb"),
        runtime=res("reward", "runtime"),
        gpu=res("reward", "gpu"),
    shell:
        "{LAUNCH[reward]} rewardlab.train.reward --config {params.cfg:q} --loss {wildcards.loss:q}"
        " --seed {wildcards.seed} --labels {params.labels:q} --pool {params.pool:q} --sft {params.sft:q}"
        " --out {params.out:q} --threads {threads}"
        " --checkpoint-every {CHECKPOINT_EVERY} 2> {log:q}"
