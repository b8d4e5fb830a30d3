rule preprocess:
    output:
        files=expand(f"{DATA}/{{name}}.jsonl", name=["sft_train", "sft_valid", "prompts_train", "prompts_test"]),
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
        metrics=f"{DATA}/metrics.json",
    params:
        cfg=lambda w: stage_config("preprocess"),
        out=DATA,
    log:
        f"{LOGS}/preprocess.log",
    threads: res("preprocess", "threads")
    resources:
        mem_mb=res("preprocess", "mem_mb"),
        runtime=res("preprocess", "runtime"),
        gpu=0,
    shell:
        "{PYTHON} -m rewardlab.data.preprocess --config {params.cfg:q} --out {params.out:q}"
        " --threads {threads} 2> {log:q}"


rule label:
    input:
        sft=model_files(f"{RESULTS}/sft"),
        prompts=f"{DATA}/prompts_train.jsonl",
    output:
        train=f"{RESULTS}/labels/train.jsonl",
        test=f"{RESULTS}/labels/test.jsonl",
        files=stage_files(f"{RESULTS}/labels"),
    params:
        cfg=lambda w: stage_config("label"),
        data=DATA,
        sft=f"{RESULTS}/sft",
        out=f"{RESULTS}/labels",
    log:
        f"{LOGS}/label.log",
    threads: res("label", "threads")
    resources:
        mem_mb=res("label", "mem_mb"),
        runtime=res("label", "runtime"),
        gpu=res("label", "gpu"),
    shell:
        "{PYTHON} -m rewardlab.data.label --config {params.cfg:q} --data {params.data:q} --sft {params.sft:q}"
        " --out {params.out:q} --threads {threads} 2> {log:q}"
