rule summary:
    input:
        rm=expand(f"{RESULTS}/eval/rm/{{run}}/metrics.json", run=rm_runs()),
        calibration=expand(f"{RESULTS}/eval/rm/{{run}}/calibration.csv", run=rm_runs()),
        bon=expand(f"{RESULTS}/eval/rm/{{run}}/bon.csv", run=rm_runs()),
        policy=expand(f"{RESULTS}/eval/policy/{{run}}/metrics.json", run=policy_runs()),
        decodings=expand(f"{RESULTS}/eval/policy/{{run}}/decoding.csv", run=policy_runs()),
        histories=expand(f"{RESULTS}/policy/{{run}}/history.csv", run=online_policy_runs()),
        audits=[] if REAL else expand(f"{RESULTS}/labels/{{noise}}/audit.json", noise=NOISES),
    output:
        markdown=f"{RESULTS}/eval/summary.md",
        csv=f"{RESULTS}/eval/summary.csv",
        metrics=f"{RESULTS}/eval/metrics.json",
        rm=f"{RESULTS}/eval/summary_rm.csv",
        aggregate=f"{RESULTS}/eval/summary_aggregate.csv",
        decoding_table=f"{RESULTS}/eval/summary_decoding.csv",
        landing=f"{RESULTS}/eval/landing.html",  # included by workflow/report/workflow.rst
        html=report(f"{RESULTS}/eval/summary.html", caption="../report/summary.rst", category="Summary"),
        calibration=report(f"{RESULTS}/eval/plots/rm_calibration.png", caption="../report/calibration.rst",
                           category="Reward models"),
        bon=report(f"{RESULTS}/eval/plots/bon_curves.png", caption="../report/bon_curves.rst",
                   category="Reward models"),
        losses=report(f"{RESULTS}/eval/plots/loss_comparison.png", caption="../report/loss_comparison.rst",
                      category="Reward models"),
        frontier=report(f"{RESULTS}/eval/plots/frontier.png", caption="../report/frontier.rst", category="Policies"),
        efficiency=report(f"{RESULTS}/eval/plots/sample_efficiency.png", caption="../report/sample_efficiency.rst",
                          category="Policies"),
        curves=report(f"{RESULTS}/eval/plots/policy_curves.png", caption="../report/policy_curves.rst",
                      category="Policies"),
        decoding=report(f"{RESULTS}/eval/plots/decoding.png", caption="../report/decoding.rst", category="Policies"),
        rouge=report(f"{RESULTS}/eval/plots/rouge_curves.png", caption="../report/rouge_curves.rst", category="Policies"),
    params:
        rm=expand(f"{RESULTS}/eval/rm/{{run}}", run=rm_runs()),
        policy=expand(f"{RESULTS}/eval/policy/{{run}}", run=policy_runs()),
        histories=expand(f"{RESULTS}/policy/{{run}}", run=online_policy_runs()),
        out=lambda w, output: folder_of(output.markdown),
        python=PYTHON,
        baseline_loss=config["evaluate"].get("baseline_loss") or LOSSES[0],
        baseline_policy=config["evaluate"]["baseline_policy"],
    log:
        f"{LOGS}/summary.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
        gpu=0,
    shell:
        "{params.python} -m rewardlab.evaluate.summary --rm-evals {params.rm:q} --policy-evals {params.policy:q}"
        " --histories {params.histories:q} --audits {input.audits:q} --baseline-loss {params.baseline_loss:q}"
        " --baseline-policy {params.baseline_policy:q} --out {params.out:q} 2> {log:q}"
