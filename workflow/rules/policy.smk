rule policy:
    input:
        sft=model_files(f"{RESULTS}/sft"),
        rm=model_files(f"{RESULTS}/rm/{{loss}}-{{noise}}-s{{seed}}"),
        prompts=f"{DATA}/prompts_train.jsonl",
        dpo=dpo_policy,
    output:
        model_files(f"{RESULTS}/policy/{{algo}}-{{shaping}}-{{loss}}-{{noise}}-s{{seed}}", causal=True),
        stage_files(f"{RESULTS}/policy/{{algo}}-{{shaping}}-{{loss}}-{{noise}}-s{{seed}}"),
        history=f"{RESULTS}/policy/{{algo}}-{{shaping}}-{{loss}}-{{noise}}-s{{seed}}/history.csv",
    wildcard_constraints:
        algo="|".join(ONLINE) or "(?!)",
        shaping="|".join(SHAPINGS),
    params:
        torch_threads=res("policy", "threads"),
        cfg=lambda w: dag.policy_config(config, w.shaping),  # a shaping variant's own values included
        shaping=lambda w: base_shaping(config, w.shaping),
        data=lambda w, input: folder_of(input.prompts),
        sft=lambda w, input: folder_of(input.sft),
        rm=lambda w, input: folder_of(input.rm),
        out=lambda w, output: folder_of(output.history),
        dpo=dpo_argument,
        launch=LAUNCH["policy"],
        every=CHECKPOINT_EVERY,
    log:
        f"{LOGS}/policy/{{algo}}-{{shaping}}-{{loss}}-{{noise}}-s{{seed}}.log",
    threads: res("policy", "threads")
    resources:
        mem_mb=res("policy", "mem_mb"),
        runtime=res("policy", "runtime"),
        gpu=res("policy", "gpu"),
    shell:
        "{params.launch} rewardlab.train.policy --config {params.cfg:q} --algorithm {wildcards.algo:q}"
        " --shaping {params.shaping:q} --seed {wildcards.seed} --data {params.data:q} --sft {params.sft:q}"
        " --rm {params.rm:q} {params.dpo} --out {params.out:q} --threads {params.torch_threads}"
        " --checkpoint-every {params.every} 2> {log:q}"


rule offline_policy:
    input:
        sft=model_files(f"{RESULTS}/sft"),
        pairs=lambda w: f"{labels_dir(w.noise)}/pairs_train.jsonl",
    output:
        model_files(f"{RESULTS}/policy/{{algo}}-offline-{{noise}}-s{{seed}}", causal=True),
        stage_files(f"{RESULTS}/policy/{{algo}}-offline-{{noise}}-s{{seed}}"),
        history=f"{RESULTS}/policy/{{algo}}-offline-{{noise}}-s{{seed}}/history.csv",
    wildcard_constraints:
        algo="|".join(OFFLINE + (["dpo"] if dag.dpo_shapings(config) else [])) or "(?!)",
    params:
        torch_threads=res("policy", "threads"),
        cfg=lambda w: stage_config("policy"),
        sft=lambda w, input: folder_of(input.sft),
        labels=lambda w, input: folder_of(input.pairs),
        out=lambda w, output: folder_of(output.history),
        launch=LAUNCH["policy"],
        every=CHECKPOINT_EVERY,
    log:
        f"{LOGS}/policy/{{algo}}-offline-{{noise}}-s{{seed}}.log",
    threads: res("policy", "threads")
    resources:
        mem_mb=res("policy", "mem_mb"),
        runtime=res("policy", "runtime"),
        gpu=res("policy", "gpu"),
    shell:
        "{params.launch} rewardlab.train.dpo --config {params.cfg:q} --algorithm {wildcards.algo:q}"
        " --seed {wildcards.seed} --labels {params.labels:q} --sft {params.sft:q} --out {params.out:q}"
        " --threads {params.torch_threads}"
        " --checkpoint-every {params.every} 2> {log:q}"
