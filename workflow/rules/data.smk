rule preprocess:
    input:
        # Real data: the user's files (a change to them reruns preprocess and what follows).
        [v for k, v in (config["data"].get("source") or {}).items() if k.endswith("path")],
    output:
        files=expand(f"{DATA}/{{name}}.jsonl", name=["sft_train", "sft_valid", "prompts_train", "prompts_test"]
                     + (["pairs_train", "pairs_test", "ratings_train", "rankings_train", "pool/train"] if REAL else [])),
        scales=[f"{DATA}/scales.json"] if REAL else [],
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
        metrics=f"{DATA}/metrics.json",
    params:
        torch_threads=res("preprocess", "threads"),
        cfg=lambda w: stage_config("preprocess"),
        module="rewardlab.data.ingest" if REAL else "rewardlab.data.preprocess",
        out=lambda w, output: folder_of(output.metrics),
        python=PYTHON,
    log:
        f"{LOGS}/preprocess.log",
    threads: res("preprocess", "threads")
    resources:
        mem_mb=res("preprocess", "mem_mb"),
        runtime=res("preprocess", "runtime"),
        gpu=0,
    shell:
        "{params.python} -m {params.module} --config {params.cfg:q} --out {params.out:q}"
        " --threads {params.torch_threads} 2> {log:q}"


rule pool:
    input:
        sft=model_files(f"{RESULTS}/sft"),
        prompts=[f"{DATA}/prompts_train.jsonl", f"{DATA}/prompts_test.jsonl"],
    output:
        expand(f"{RESULTS}/pool/{{name}}.jsonl", name=["train", "test", "bon", "bench"]),
        metrics=f"{RESULTS}/pool/metrics.json",
        run=f"{RESULTS}/pool/run.json",
    params:
        torch_threads=res("pool", "threads"),
        cfg=lambda w: stage_config("pool"),
        data=lambda w, input: folder_of(input.prompts),
        sft=lambda w, input: folder_of(input.sft),
        out=lambda w, output: folder_of(output.metrics),
        python=PYTHON,
    log:
        f"{LOGS}/pool.log",
    threads: res("pool", "threads")
    resources:
        mem_mb=res("pool", "mem_mb"),
        runtime=res("pool", "runtime"),
        gpu=res("pool", "gpu"),
    shell:
        "{params.python} -m rewardlab.data.pool --config {params.cfg:q} --data {params.data:q} --sft {params.sft:q}"
        " --out {params.out:q} --threads {params.torch_threads} 2> {log:q}"


rule label:
    input:
        pool=[f"{RESULTS}/pool/train.jsonl", f"{RESULTS}/pool/test.jsonl"],
    output:
        expand(f"{RESULTS}/labels/{{{{noise}}}}/{{name}}.jsonl",
               name=["pairs_train", "pairs_test", "rankings_train", "ratings_train"]),
        f"{RESULTS}/labels/{{noise}}/scales.json",
        f"{RESULTS}/labels/{{noise}}/audit.json",
        metrics=f"{RESULTS}/labels/{{noise}}/metrics.json",
        run=f"{RESULTS}/labels/{{noise}}/run.json",
    params:
        cfg=lambda w: stage_config("label"),
        flip_rate=lambda w: NOISES[w.noise],
        pool=lambda w, input: folder_of(input.pool),
        out=lambda w, output: folder_of(output.metrics),
        python=PYTHON,
    log:
        f"{LOGS}/label-{{noise}}.log",
    threads: 1
    resources:
        mem_mb=res("label", "mem_mb"),
        runtime=res("label", "runtime"),
        gpu=0,
    shell:
        "{params.python} -m rewardlab.data.label --config {params.cfg:q} --flip-rate {params.flip_rate}"
        " --pool {params.pool:q} --out {params.out:q} 2> {log:q}"
