# Trains one reward model and, in the same process, evaluates it into eval/rm/<run>/ (held-out pairs,
# ToyRewardBench, best-of-n): on the tiny models, starting Python with torch and transformers costs more than
# the evaluation, and a loss study has a hundred of these. `python -m rewardlab.evaluate.reward_model`
# re-evaluates a saved model on its own.
rule reward:
    input:
        sft=model_files(f"{RESULTS}/sft"),
        labels=label_file,
        scales=label_scales,
        pool=f"{POOL}/train.jsonl",
        test=lambda w: f"{labels_dir(w.noise)}/pairs_test.jsonl",
        bench=[] if REAL else [f"{RESULTS}/pool/bench.jsonl", f"{RESULTS}/pool/bon.jsonl"],
    output:
        model_files(f"{RESULTS}/rm/{{loss}}-{{noise}}-s{{seed}}"),
        stage_files(f"{RESULTS}/rm/{{loss}}-{{noise}}-s{{seed}}"),
        history=f"{RESULTS}/rm/{{loss}}-{{noise}}-s{{seed}}/history.csv",
        eval_metrics=f"{RESULTS}/eval/rm/{{loss}}-{{noise}}-s{{seed}}/metrics.json",
        calibration=f"{RESULTS}/eval/rm/{{loss}}-{{noise}}-s{{seed}}/calibration.csv",
        bon=f"{RESULTS}/eval/rm/{{loss}}-{{noise}}-s{{seed}}/bon.csv",
    params:
        torch_threads=res("reward", "threads"),
        cfg=lambda w: stage_config("reward"),
        sft=lambda w, input: folder_of(input.sft),
        labels=lambda w, input: folder_of(input.test),
        pool=lambda w, input: folder_of(input.pool),
        out=lambda w, output: folder_of(output.history),
        eval_out=lambda w, output: folder_of(output.eval_metrics),
        launch=LAUNCH["reward"],
        every=CHECKPOINT_EVERY,
    log:
        f"{LOGS}/reward/{{loss}}-{{noise}}-s{{seed}}.log",
    threads: res("reward", "threads")
    resources:
        mem_mb=res("reward", "mem_mb"),
        runtime=res("reward", "runtime"),
        gpu=res("reward", "gpu"),
    shell:
        "{params.launch} rewardlab.train.reward --config {params.cfg:q} --loss {wildcards.loss:q}"
        " --seed {wildcards.seed} --labels {params.labels:q} --pool {params.pool:q} --sft {params.sft:q}"
        " --out {params.out:q} --eval-out {params.eval_out:q} --threads {params.torch_threads}"
        " --checkpoint-every {params.every} 2> {log:q}"
