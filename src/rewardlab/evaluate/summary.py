"""Stage `summary`: one table of every RM and policy evaluation (CSV, Markdown, HTML) and the report figures.

Rows are runs; a run's name says what it is (``ppo-bt-s0``: PPO against the BT reward model, seed 0;
``sft-bt-s0``: the SFT policy scored by that RM). Runs that differ only by seed are also aggregated as
mean ± 2·SE (columns ``<metric>_2se``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from rewardlab.evaluate.bon import gao_fit_rl, kl_bon
from rewardlab.evaluate.plots import (
    bon_curves,
    calibration_plot,
    frontier,
    loss_comparison,
    policy_curves,
    sample_efficiency,
)
from rewardlab.runinfo import atomic_write_text, write_json

POLICY_COLUMNS = ["reward_gold", "reward_proxy", "kl", "kl_k3", "entropy", "length", "win_rate_vs_sft",
                  "distinct_2", "eos_rate", "repetition", "rl_alpha", "rl_beta", "rl_r2"]
# Calibration is ranked after temperature scaling (ece_scaled, brier_scaled: comparable across losses); the raw
# columns and logit_output (whether σ(Δ) is the loss's modelled probability at all) stand beside them.
RM_COLUMNS = ["accuracy", "accuracy_gold", "ece_scaled", "brier_scaled", "ece", "brier", "logit_output",
              "spearman_gold", "spearman_gold_ood", "bench_score", "bench_easy", "bench_hard", "bench_length_trap",
              "bench_repetition", "bench_ood", "bon_alpha", "bon_beta", "bon_r2", "bon_gold_max"]
LOSS_PLOT_METRICS = ["accuracy_gold", "ece_scaled", "brier_scaled", "spearman_gold", "bench_score", "bon_alpha",
                     "bon_beta"]
RUN_NAME = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")


def _number(value) -> float | None:
    """A JSON-safe number: missing stays missing (None), never NaN or zero."""
    return None if pd.isna(value) else round(float(value), 6)


def load_metrics(folders: list[str]) -> pd.DataFrame:
    rows: list[dict] = []
    for folder in folders:
        with open(Path(folder) / "metrics.json") as handle:
            metrics = json.load(handle)
        name = Path(folder).name
        match = RUN_NAME.match(name)
        rows.append({"run": name, "group": match["group"] if match else name,
                     "seed": int(match["seed"]) if match else None, **metrics})
    frame = pd.DataFrame(rows, columns=None if rows else ["run", "group", "seed"])
    # A metric a run does not have (null in metrics.json, e.g. gold metrics on real data) is missing: NaN.
    return frame.infer_objects().fillna(np.nan) if rows else frame


def aggregate(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean ± 2·SE over seeds per group (SE = std/√n, 0 for a single seed)."""
    present = [c for c in columns if c in frame]
    if frame.empty or not present:
        return pd.DataFrame(columns=["group", "seeds"])
    grouped = frame.groupby("group")[present]
    mean = grouped.mean()
    count = grouped.count()
    se = (grouped.std(ddof=1) / np.sqrt(count)).fillna(0.0)
    out = mean.copy()
    for c in present:
        out[f"{c}_2se"] = 2 * se[c]
    out.insert(0, "seeds", count[present[0]])
    return out.reset_index()


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "—" if pd.isna(value) else f"{value:.3f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, columns: list[str]) -> str:
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    lines = []
    for _, row in frame.iterrows():
        cells = [_cell(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def reward_model_of(run: str) -> str:
    """``ppo-sparse-bt-eps0-s0`` → ``bt-eps0-s0``: the last three parts name the reward model."""
    return "-".join(run.split("-")[-3:])


def rl_fits(histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Gao RL fit of each training run: gold gain over step 1 against √KL (rollouts)."""
    rows = []
    for name, history in histories.items():
        smooth = history[["kl", "reward_gold"]].rolling(5, min_periods=1).mean()
        d = np.sqrt(smooth["kl"].clip(lower=0))
        alpha, beta, r2 = gao_fit_rl(d, smooth["reward_gold"] - history["reward_gold"].iloc[0])
        rows.append({"run": name, "rl_alpha": alpha, "rl_beta": beta, "rl_r2": r2})
    return pd.DataFrame(rows, columns=["run", "rl_alpha", "rl_beta", "rl_r2"])


def bon_rows(bon_tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """A best-of-n baseline row per reward model, at the pool's largest n (gold, and the KL from the pool)."""
    rows = []
    for rm, table in bon_tables.items():
        last = table.iloc[-1]
        n = int(last["n"])
        rows.append({"run": f"bon{n}-{rm}", "group": f"bon{n}-{rm.rsplit('-s', 1)[0]}",
                     "seed": int(rm.rsplit("-s", 1)[1]), "reward_gold": last["gold"],
                     "kl": last["kl"] if "kl" in last else kl_bon(n)})
    return pd.DataFrame(rows)


def frontier_points(policy: pd.DataFrame) -> pd.DataFrame:
    points = policy[["run", "reward_gold", "kl"]].copy()
    first = points["run"].str.split("-").str[0]
    second = points["run"].str.split("-").str[1]
    points["family"] = np.where(first == "sft", "sft", np.where(second == "offline", "offline",
                                np.where(first.str.startswith("bon"), "bon", "online")))
    points["label"] = np.where(points["family"] == "online", first + "/" + second, first)
    return points


def with_error_bars(aggregated: pd.DataFrame, metrics: list[str]) -> str:
    """A Markdown table of ``mean ± 2·SE`` cells; "(none)" when there is nothing to aggregate."""
    present = [m for m in metrics if m in aggregated]
    if aggregated.empty or not present:
        return "(none)\n"
    cells = aggregated[["group", "seeds"]].copy()
    for m in present:
        cells[m] = ["—" if pd.isna(v) else f"{v:.3f} ± {e:.3f}" for v, e in zip(aggregated[m], aggregated[f"{m}_2se"])]
    return markdown_table(cells, ["group", "seeds"] + present)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rm-evals", nargs="+", required=True)
    parser.add_argument("--policy-evals", nargs="*", default=[], help="Empty for a reward-model-only study.")
    parser.add_argument("--histories", nargs="*", default=[], help="Policy training folders (history.csv).")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    (out / "plots").mkdir(parents=True, exist_ok=True)

    rm = load_metrics(args.rm_evals)
    policy = load_metrics(args.policy_evals)
    histories = {Path(f).name: pd.read_csv(Path(f) / "history.csv") for f in args.histories}
    bon_tables = {Path(f).name: table for f in args.rm_evals
                  if not (table := pd.read_csv(Path(f) / "bon.csv")).empty}  # none for real data
    if not policy.empty:
        policy = policy.merge(rl_fits(histories), on="run", how="left")
        policy = pd.concat([policy, bon_rows(bon_tables)], ignore_index=True)
    rm_cols = ["run"] + [c for c in RM_COLUMNS if c in rm]
    policy_cols = ["run"] + [c for c in POLICY_COLUMNS if c in policy]
    atomic_write_text(out / "summary_rm.csv", rm[rm_cols].to_csv(index=False, float_format="%.6g"))
    # The main table: one row per evaluated policy with the metrics of the reward model that scored it;
    # in a reward-model-only study, the reward-model table.
    if policy.empty:
        table = rm[rm_cols]
    else:
        policy["reward_model"] = policy["run"].map(reward_model_of)
        rm_prefixed = rm[rm_cols].rename(columns={c: f"rm_{c}" for c in rm_cols if c != "run"})
        table = policy[policy_cols + ["reward_model"]].merge(rm_prefixed, left_on="reward_model", right_on="run",
                                                             how="left", suffixes=("", "_rm")).drop(columns="run_rm")
    atomic_write_text(out / "summary.csv", table.to_csv(index=False, float_format="%.6g"))
    policy_agg = aggregate(policy, POLICY_COLUMNS)
    rm_agg = aggregate(rm, RM_COLUMNS)
    atomic_write_text(out / "summary_aggregate.csv",
                      pd.concat([rm_agg.assign(kind="rm"), policy_agg.assign(kind="policy")])
                      .to_csv(index=False, float_format="%.6g"))

    # Every run's metrics in one JSON, nested by kind and run, for `dvc metrics show/diff`.
    nested = {
        "rm": {r["run"]: {c: _number(r[c]) for c in rm_cols[1:]} for _, r in rm.iterrows()},
        "policy": {r["run"]: {c: _number(r[c]) for c in policy_cols[1:]} for _, r in policy.iterrows()},
    }
    write_json(out / "metrics.json", nested)

    markdown = ("# Summary\n\n## Reward models, mean ± 2·SE over seeds\n\n"
                + with_error_bars(rm_agg, ["accuracy", "accuracy_gold", "ece", "brier", "spearman_gold", "bench_score",
                                           "bon_alpha", "bon_beta"])
                + "\n## Policies, mean ± 2·SE over seeds\n\n"
                + with_error_bars(policy_agg, ["reward_gold", "reward_proxy", "kl", "win_rate_vs_sft", "length"])
                + "\n## Reward models (held-out pairs, ToyRewardBench, best-of-n)\n\n" + markdown_table(rm, rm_cols)
                + "\n## Policies (held-out prompts; gold is the programmatic reward)\n\n"
                + markdown_table(policy, policy_cols))
    atomic_write_text(out / "summary.md", markdown)
    html = ("<h3>Reward models (held-out pairs)</h3>" + rm[rm_cols].to_html(index=False, float_format="%.3f")
            + "<h3>Policies (held-out prompts)</h3>"
            + policy[policy_cols].to_html(index=False, float_format="%.3f")
            + "<h3>Mean ± 2·SE over seeds</h3>"
            + pd.concat([rm_agg, policy_agg]).to_html(index=False, float_format="%.3f", na_rep=""))
    atomic_write_text(out / "summary.html", html)

    calibration = {Path(f).name: pd.read_csv(Path(f) / "calibration.csv") for f in args.rm_evals}
    calibration_plot(calibration, out / "plots" / "rm_calibration.png")
    bon_curves(bon_tables, out / "plots" / "bon_curves.png")
    loss_comparison(rm_agg, LOSS_PLOT_METRICS, out / "plots" / "loss_comparison.png")
    policy_curves(histories, out / "plots" / "policy_curves.png")
    sample_efficiency(histories, out / "plots" / "sample_efficiency.png")
    frontier(frontier_points(policy) if not policy.empty else pd.DataFrame(columns=["run", "reward_gold", "kl",
                                                                                  "family", "label"]),
             out / "plots" / "frontier.png")


if __name__ == "__main__":
    main()
