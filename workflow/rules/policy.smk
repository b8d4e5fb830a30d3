rule policy:
    input:
        sft=model_files(f"{RESULTS}/sft"),
        rm=model_files(f"{RESULTS}/rm/{{loss}}-{{noise}}-s{{seed}}"),
        prompts=f"{DATA}/prompts_train.jsonl",
    output:
        model_files(f"{RESULTS}/policy/{{algo}}-{{loss}}-{{noise}}-s{{seed}}"),
        stage_files(f"{RESULTS}/policy/{{algo}}-{{loss}}-{{noise}}-s{{seed}}"),
        history=f"{RESULTS}/policy/{{algo}}-{{loss}}-{{noise}}-s{{seed}}/history.csv",
    wildcard_constraints:
        algo="|".join(ALGORITHMS),
    params:
        cfg=lambda w: stage_config("policy"),
        data=DATA,
        sft=f"{RESULTS}/sft",
        rm=lambda w: f"{RESULTS}/rm/{w.loss}-{w.noise}-s{w.seed}",
        out=lambda w: f"{RESULTS}/policy/{w.algo}-{w.loss}-{w.noise}-s{w.seed}",
    log:
        f"{LOGS}/policy/{{algo}}-{{loss}}-{{noise}}-s{{seed}}.log",
    threads: res("policy", "threads")
    resources:
        mem_mb=res("policy", "mem_mb"),
        runtime=res("policy", "runtime"),
        gpu=res("policy", "gpu"),
    shell:
        "{PYTHON} -m rewardlab.train.policy --config {params.cfg:q} --algorithm {wildcards.algo:q}"
        " --seed {wildcards.seed} --data {params.data:q} --sft {params.sft:q} --rm {params.rm:q}"
        " --out {params.out:q} --threads {threads} 2> {log:q}"
