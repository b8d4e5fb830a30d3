rule sft:
    input:
        rules.preprocess.output,
    output:
        model_files(f"{RESULTS}/sft", causal=True),
        stage_files(f"{RESULTS}/sft"),
        history=f"{RESULTS}/sft/history.csv",
    params:
        # torch's threads come from the config, not from --cores: the numbers do not depend on the scheduler
        torch_threads=res("sft", "threads"),
        cfg=lambda w: stage_config("sft"),
        data=DATA,
        out=f"{RESULTS}/sft",
    log:
        f"{LOGS}/sft.log",
    threads: res("sft", "threads")
    resources:
        mem_mb=res("sft", "mem_mb"),
        runtime=res("sft", "runtime"),
        gpu=res("sft", "gpu"),
    shell:
        "{LAUNCH[sft]} rewardlab.train.sft --config {params.cfg:q} --data {params.data:q} --out {params.out:q}"
        " --threads {params.torch_threads}"
        " --checkpoint-every {CHECKPOINT_EVERY} 2> {log:q}"
