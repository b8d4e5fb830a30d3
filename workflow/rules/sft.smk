rule sft:
    input:
        files=rules.preprocess.output.files,
        tokenizer=rules.preprocess.output.tokenizer,
        metrics=rules.preprocess.output.metrics,
    output:
        model_files(f"{RESULTS}/sft", causal=True),
        stage_files(f"{RESULTS}/sft"),
        history=f"{RESULTS}/sft/history.csv",
    params:
        torch_threads=res("sft", "threads"),
        cfg=lambda w: stage_config("sft"),
        data=lambda w, input: folder_of(input.metrics),
        out=lambda w, output: folder_of(output.history),
        launch=LAUNCH["sft"],
        every=CHECKPOINT_EVERY,
    log:
        f"{LOGS}/sft.log",
    threads: res("sft", "threads")
    resources:
        mem_mb=res("sft", "mem_mb"),
        runtime=res("sft", "runtime"),
        gpu=res("sft", "gpu"),
    shell:
        "{params.launch} rewardlab.train.sft --config {params.cfg:q} --data {params.data:q} --out {params.out:q}"
        " --threads {params.torch_threads}"
        " --checkpoint-every {params.every} 2> {log:q}"
