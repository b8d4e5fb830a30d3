"""Stage `summary`: one table of every RM and policy evaluation (CSV, Markdown, HTML) and the report figures.

Rows are runs; a run's name says what it is (``ppo-sparse-bt-eps0.0-s0``: PPO, sparse reward, against the BT
reward model on noise-free labels, seed 0; ``sft-bt-eps0.0-s0``: the SFT policy scored by that RM). Runs that
differ only by seed are aggregated as the mean with a 95 % t interval (columns ``<metric>_ci95``), and each
group is compared with its study's baseline group by a paired t test over seeds (``<metric>_p``; ``*`` in the
tables at p < 0.05): reward models with the baseline loss at the same label noise (``--baseline-loss``),
policies with the baseline policy against the same reward model (``--baseline-policy``, SFT by default).
Online runs also report gold at equal KL (``gold_at_kl<b>``: gold of the training rollouts, interpolated along
each run's gold–√KL curve where its KL first reaches b nats) and the peak of their Gao RL fit.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from rewardlab.config import is_shaping_baseline
from rewardlab.evaluate import stats
from rewardlab.evaluate.bon import gao_fit_rl, kl_bon
from rewardlab.evaluate.plots import (
    bon_curves,
    calibration_plot,
    decoding_tradeoff,
    frontier,
    loss_comparison,
    policy_curves,
    rouge_curves,
    sample_efficiency,
)
from rewardlab.runinfo import atomic_write_text, write_json

KL_BUDGETS = (0.2, 2, 5, 10)  # nats: where runs are compared at equal KL (0.2: where the offline DPO family ends)
POLICY_COLUMNS = ["reward_gold", "reward_proxy", "kl", "kl_k3", "entropy", "length", "win_rate_vs_sft",
                  "distinct_2", "self_bleu", "perplexity_sft", "eos_rate", "repetition",
                  *[f"gold_at_kl{b}" for b in KL_BUDGETS], "rl_gold_peak", "rl_kl_peak", "rl_alpha", "rl_beta", "rl_r2",
                  "rouge1", "rouge2", "rougeL"]  # ROUGE: tasks with references only
# Calibration is ranked after temperature scaling (ece_scaled, brier_scaled: comparable across losses); the raw
# columns and logit_output (whether σ(Δ) is the loss's modelled probability at all) stand beside them.
RM_COLUMNS = ["accuracy", "accuracy_gold", "ece_scaled", "brier_scaled", "ece", "brier", "logit_output",
              "spearman_gold", "spearman_gold_ood", "bench_score", "bench_easy", "bench_hard", "bench_length_trap",
              "bench_repetition", "bench_ood", "bon_alpha", "bon_beta", "bon_r2", "bon_gold_max"]
LOSS_PLOT_METRICS = ["accuracy_gold", "ece_scaled", "brier_scaled", "spearman_gold", "bench_score", "bon_alpha",
                     "bon_beta"]
RUN_NAME = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")
DECODING_HEADLINE = ["reward_gold", "reward_proxy", "kl", "distinct_2", "self_bleu", "perplexity_sft", "length",
                     "win_rate_vs_sft"]


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


def load_decodings(folders: list[str]) -> pd.DataFrame:
    """Every policy evaluation's decoding.csv, one row per run and decoding; ``group`` is
    ``<policy group> · <decoding>`` so seeds aggregate per policy and decoding."""
    frames = []
    for folder in folders:
        path = Path(folder) / "decoding.csv"
        if path.exists():
            table = pd.read_csv(path)
            name = Path(folder).name
            match = RUN_NAME.match(name)
            policy = match["group"] if match else name
            table.insert(0, "run", name)
            table.insert(1, "policy", policy)
            table.insert(2, "seed", int(match["seed"]) if match else None)
            table.insert(3, "group", policy + " · " + table["decoding"])
            frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "policy", "group",
                                                                                     "decoding"])


def decoding_summary(decodings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per policy and decoding: mean and 95 % interval over seeds, and a paired t test against the same policy
    sampled (the main protocol's decoding, ``sample``). Returns (aggregate with ``policy`` and ``decoding``
    columns, the table's cells)."""
    if decodings.empty:
        return pd.DataFrame(columns=["group", "policy", "decoding"]), pd.DataFrame(columns=["group"])
    aggregated = stats.seed_intervals(decodings, DECODING_HEADLINE)
    names = decodings.drop_duplicates("group").set_index("group")
    aggregated["policy"] = aggregated["group"].map(names["policy"])
    aggregated["decoding"] = aggregated["group"].map(names["decoding"])
    samplers = sorted(d for d in decodings["decoding"].unique() if d.startswith("sample"))  # the main protocol
    baseline = (lambda group: group.rsplit(" · ", 1)[0] + " · " + samplers[0]) if len(samplers) == 1 else (
        lambda group: None)
    tests = stats.paired_pvalues(decodings, DECODING_HEADLINE, baseline)
    return aggregated, interval_cells(aggregated, tests, DECODING_HEADLINE)


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


def gold_at_kl(kl: np.ndarray, gold: np.ndarray, budget: float) -> float:
    """Gold where a training curve first reaches ``budget`` nats of KL, linear in √KL between the two logged
    steps around it; missing when the run never gets there."""
    d, target = np.sqrt(np.clip(kl, 0, None)), np.sqrt(budget)
    reached = np.nonzero(d >= target)[0]
    if len(reached) == 0:
        return float("nan")
    i = int(reached[0])
    if i == 0 or d[i] == d[i - 1]:
        return float(gold[i])
    w = (target - d[i - 1]) / (d[i] - d[i - 1])
    return float(gold[i - 1] + w * (gold[i] - gold[i - 1]))


def rl_fits(histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per training run: gold at equal KL, and the Gao RL fit R(d) = d(α − β log d) of the gold gain over step 1
    against d = √KL (rollouts, smoothed over 5 steps) with its peak, at d* = exp(α/β − 1): gold(step 1) + β·d*
    and KL d*² (missing when β ≤ 0, or when d*² lies beyond the run's largest KL: no turnover observed)."""
    rows = []
    for name, history in histories.items():
        smooth = history[["kl", "reward_gold"]].rolling(5, min_periods=1).mean()
        d = np.sqrt(smooth["kl"].clip(lower=0))
        start = history["reward_gold"].iloc[0]
        alpha, beta, r2 = gao_fit_rl(d, smooth["reward_gold"] - start)
        peak_d = float(np.exp(alpha / beta - 1)) if beta > 0 else float("nan")
        if not peak_d**2 <= smooth["kl"].max():  # beyond the KL the run reached: an extrapolation, not a peak
            peak_d = float("nan")
        rows.append({"run": name, **{f"gold_at_kl{b}": gold_at_kl(smooth["kl"].to_numpy(),
                                                                  smooth["reward_gold"].to_numpy(), b)
                                     for b in KL_BUDGETS},
                     "rl_gold_peak": start + beta * peak_d, "rl_kl_peak": peak_d**2,
                     "rl_alpha": alpha, "rl_beta": beta, "rl_r2": r2})
    return pd.DataFrame(rows, columns=["run", *[f"gold_at_kl{b}" for b in KL_BUDGETS], "rl_gold_peak",
                                       "rl_kl_peak", "rl_alpha", "rl_beta", "rl_r2"])


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


def interval_cells(aggregated: pd.DataFrame, tests: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """``mean ± 95 % CI`` per group and metric as text, ``*`` where it differs from the baseline (p < 0.05),
    ``—`` where a value is missing: the cells of the Markdown and HTML tables."""
    present = [m for m in metrics if m in aggregated]
    if aggregated.empty or not present:
        return pd.DataFrame(columns=["group", "seeds", "baseline"])
    merged = aggregated.merge(tests, on="group", how="left") if not tests.empty else aggregated
    cells = merged[["group", "seeds"]].copy()
    cells["baseline"] = merged.get("baseline", pd.Series(dtype=object)).fillna("—")
    for m in present:
        p = merged[f"{m}_p"] if f"{m}_p" in merged else [None] * len(merged)
        cells[m] = [stats.cell(v, h, q) for v, h, q in zip(merged[m], merged[f"{m}_ci95"], p)]
    return cells


def cells_markdown(cells: pd.DataFrame) -> str:
    """A Markdown table of text cells (``interval_cells``)."""
    return markdown_table(cells, list(cells.columns)) if len(cells) else "(none)\n"


def html_table(cells: pd.DataFrame) -> str:
    """An HTML table of text cells (missing: —), narrow enough for a page: numbers in 3 decimals."""
    if cells.empty:
        return "<p>(none)</p>"
    return cells.to_html(index=False, na_rep="—", float_format="%.3f", classes="rewardlab-table", border=0)


def audit_table(paths: list[str]) -> str:
    """The label stage's information audits: per noise level and label set, the pairwise comparisons it implies
    and how often they agree with the gold order, beside the pair labels' expected agreement (the target)."""
    rows = []
    for path in paths:
        audit = json.loads(Path(path).read_text())
        target = audit["target"]["gold_agreement"]
        for shape, values in audit.items():
            if shape != "target":
                rows.append({"noise": Path(path).parent.name, "label set": shape,
                             "comparisons": values["comparisons"], "gold agreement": values["gold_agreement"],
                             "target": target})
    return ("\n## Information audit: implied pairwise comparisons and their agreement with the gold order\n\n"
            + markdown_table(pd.DataFrame(rows), ["noise", "label set", "comparisons", "gold agreement", "target"]))


def rm_baseline(loss: str | None) -> Callable[[str], str | None]:
    """``<loss>-<noise>`` → the baseline loss at the same label noise."""
    return lambda group: f"{loss}-{group.rsplit('-', 1)[1]}" if loss and "-" in group else None


def policy_baseline(policy: str) -> Callable[[str], str | None]:
    """``<policy>-<loss>-<noise>`` → the baseline policy against the same reward model. A bare shaping name
    (no ``-``; not ``sft`` or ``bon<N>``) is each online algorithm's own run with that shaping, so a shaping
    study tests ``ppo-uniform`` against ``ppo-sparse`` and ``reinforce_pp-uniform`` against
    ``reinforce_pp-sparse``."""
    if is_shaping_baseline(policy):
        def same_algorithm(group: str) -> str | None:
            parts = group.split("-")
            return f"{parts[0]}-{policy}-{parts[2]}-{parts[3]}" if len(parts) == 4 and parts[1] != "offline" else None
        return same_algorithm
    return lambda group: f"{policy}-{'-'.join(group.split('-')[-2:])}" if group.count("-") >= 2 else None


RM_HEADLINE = ["accuracy_gold", "ece_scaled", "brier_scaled", "spearman_gold", "bench_score", "bon_alpha",
               "bon_beta"]
POLICY_HEADLINE = ["reward_gold", *[f"gold_at_kl{b}" for b in KL_BUDGETS], "rl_gold_peak", "kl",
                   "win_rate_vs_sft", "rougeL", "length", "entropy", "distinct_2", "self_bleu"]


LANDING_POLICY = ["reward_gold", "gold_at_kl2", "kl", "win_rate_vs_sft"]
LANDING_RM = ["accuracy_gold", "ece_scaled", "bench_score"]


def landing_page(out: Path, rm_cells: pd.DataFrame, policy_cells: pd.DataFrame) -> None:
    """landing.html: what the report opens on (workflow/report/workflow.rst includes it) — the headline columns
    of the policy and reward-model tables, narrow enough for the report's first page, and the frontier (or, in a
    reward-model study, the loss comparison) as an embedded image. Written after the plots."""
    import base64

    def compact(cells: pd.DataFrame, columns: list[str]) -> str:
        keep = ["group", "seeds"] + [c for c in columns if c in cells]
        return html_table(cells[keep]) if len(cells) else ""

    plot = out / "plots" / ("frontier.png" if len(policy_cells) else "loss_comparison.png")
    image = base64.b64encode(plot.read_bytes()).decode() if plot.exists() else ""
    atomic_write_text(out / "landing.html", (
        "<p>Mean ± 95 % interval over seeds, * differs from the baseline (paired t test), — missing; every column "
        "in <b>Summary</b> and the figures under <b>Policies</b> and <b>Reward models</b>.</p>"
        + (f"<h4>Policies (gold reward on held-out prompts)</h4>{compact(policy_cells, LANDING_POLICY)}"
           if len(policy_cells) else "")
        + f"<h4>Reward models</h4>{compact(rm_cells, LANDING_RM)}"
        + (f'<img style="max-width:100%" alt="{plot.stem}" src="data:image/png;base64,{image}"/>' if image else "")))


class Tables(NamedTuple):
    """What the figures and the landing page take from the tables."""

    rm_agg: pd.DataFrame  # reward-model intervals over seeds
    rm_cells: pd.DataFrame  # the headline tables' text cells
    policy_cells: pd.DataFrame
    decoding_agg: pd.DataFrame  # per policy and decoding, with ``policy`` and ``decoding`` columns


def write_tables(out: Path, rm: pd.DataFrame, policy: pd.DataFrame, baseline_loss: str | None,
                 baseline_policy: str, audits: str = "", decodings: pd.DataFrame | None = None) -> Tables:
    """summary.{csv,md,html}, summary_rm.csv, summary_aggregate.csv, summary_decoding.csv and metrics.json."""
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
    rm_agg, policy_agg = stats.seed_intervals(rm, RM_COLUMNS), stats.seed_intervals(policy, POLICY_COLUMNS)
    rm_tests = stats.paired_pvalues(rm, RM_COLUMNS, rm_baseline(baseline_loss))
    policy_tests = stats.paired_pvalues(policy, POLICY_COLUMNS, policy_baseline(baseline_policy))
    aggregated = pd.concat([rm_agg.merge(rm_tests, on="group", how="left").assign(kind="rm"),
                            policy_agg.merge(policy_tests, on="group", how="left").assign(kind="policy")])
    atomic_write_text(out / "summary_aggregate.csv", aggregated.to_csv(index=False, float_format="%.6g"))
    decodings = load_decodings([]) if decodings is None else decodings
    decoding_agg, decoding_cells = decoding_summary(decodings)
    rm_cells, policy_cells = (interval_cells(rm_agg, rm_tests, RM_HEADLINE),
                              interval_cells(policy_agg, policy_tests, POLICY_HEADLINE))
    atomic_write_text(out / "summary_decoding.csv", decoding_agg.to_csv(index=False, float_format="%.6g"))
    # Every run's metrics in one JSON, nested by kind and run, for `dvc metrics show/diff`.
    write_json(out / "metrics.json", {
        "rm": {r["run"]: {c: _number(r[c]) for c in rm_cols[1:]} for _, r in rm.iterrows()},
        "policy": {r["run"]: {c: _number(r[c]) for c in policy_cols[1:]} for _, r in policy.iterrows()},
        "decoding": {run: {r["decoding"]: {c: _number(r[c]) for c in DECODING_HEADLINE} for _, r in rows.iterrows()}
                     for run, rows in decodings.groupby("run")},
    })
    heading = "mean ± 95 % CI over seeds; * differs from the baseline (paired t test, p < 0.05)"
    atomic_write_text(out / "summary.md", (
        f"# Summary\n\n## Reward models, {heading}\n\n" + cells_markdown(rm_cells)
        + f"\n## Policies, {heading}\n\n" + cells_markdown(policy_cells)
        + "\n## Decoding: each policy under each decoding of evaluate.decoding (mean ± 95 % CI over seeds; * differs "
        "from the same policy sampled, paired t test, p < 0.05; KL of a deterministic decoder is −log π_ref(y), of "
        "best-of-n missing)\n\n" + cells_markdown(decoding_cells)
        + "\n## Reward models (held-out pairs, ToyRewardBench, best-of-n)\n\n" + markdown_table(rm, rm_cols)
        + "\n## Policies (held-out prompts; gold is the programmatic reward)\n\n"
        + markdown_table(policy, policy_cols) + audits))
    atomic_write_text(out / "summary.html", (
        "<p>Mean ± 95 % interval over seeds; * differs from the baseline (paired t test, p &lt; 0.05); — missing. "
        "Every run's numbers: summary.csv, summary_rm.csv, summary_aggregate.csv, summary_decoding.csv.</p>"
        + ("<h3>Policies on held-out prompts (gold is the programmatic reward)</h3>" + html_table(policy_cells)
           if len(policy_cells) else "")
        + "<h3>Reward models on held-out pairs, ToyRewardBench and best-of-n</h3>" + html_table(rm_cells)
        + "<h3>Decoding: each policy under each decoding (baseline: the same policy sampled)</h3>"
        + html_table(decoding_cells)))
    return Tables(rm_agg, rm_cells, policy_cells, decoding_agg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rm-evals", nargs="+", required=True)
    parser.add_argument("--policy-evals", nargs="*", default=[], help="Empty for a reward-model-only study.")
    parser.add_argument("--histories", nargs="*", default=[], help="Policy training folders (history.csv).")
    parser.add_argument("--audits", nargs="*", default=[], help="labels/<noise>/audit.json (information audits).")
    parser.add_argument("--baseline-loss", default=None, help="The loss other reward models are tested against.")
    parser.add_argument("--baseline-policy", default="sft", help="The policy other policies are tested against "
                        "(sft, an <algo>-<shaping>, <algo>-offline or bon<N>).")
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
    audits = audit_table(args.audits) if args.audits else ""
    tables = write_tables(out, rm, policy, args.baseline_loss, args.baseline_policy, audits,
                          load_decodings(args.policy_evals))
    decoding_tradeoff(tables.decoding_agg, out / "plots" / "decoding.png")

    calibration = {Path(f).name: pd.read_csv(Path(f) / "calibration.csv") for f in args.rm_evals}
    calibration_plot(calibration, out / "plots" / "rm_calibration.png")
    bon_curves(bon_tables, out / "plots" / "bon_curves.png")
    loss_comparison(tables.rm_agg, LOSS_PLOT_METRICS, out / "plots" / "loss_comparison.png")
    policy_curves(histories, out / "plots" / "policy_curves.png")
    rouge_curves(histories, out / "plots" / "rouge_curves.png")
    sample_efficiency(histories, out / "plots" / "sample_efficiency.png")
    frontier(frontier_points(policy) if not policy.empty else pd.DataFrame(columns=["run", "reward_gold", "kl",
                                                                                  "family", "label"]),
             out / "plots" / "frontier.png", bon_tables)
    landing_page(out, tables.rm_cells, tables.policy_cells)


if __name__ == "__main__":
    main()
