"""Figures for the Snakemake report: RM calibration, and policy curves against √KL (reference §3)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def save(fig, path: Path, rect: tuple[float, float, float, float] | None = None) -> None:
    """Lay the figure out (inside ``rect`` when a legend sits beside the axes), write it, and free it."""
    fig.tight_layout(**({"rect": rect} if rect else {}))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def label_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def calibration_plot(tables: dict[str, pd.DataFrame], path: Path) -> None:
    """Accuracy per confidence bin against the diagonal (N+ ``rm_eval_calibration``; reference §3.5)."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0.5, 1.0], [0.5, 1.0], "k--", lw=1, label="perfect calibration")
    for name, table in sorted(tables.items()):
        ax.plot(table["confidence"], table["accuracy"], "o-", ms=4, label=name)
    ax.set_xlabel("RM confidence σ(|Δ|)")
    ax.set_ylabel("accuracy against labels")
    ax.set_title("Reward-model calibration (held-out pairs)")
    ax.legend(fontsize=8)
    save(fig, path)


def _seed_groups(tables: dict[str, pd.DataFrame]) -> dict[str, list[pd.DataFrame]]:
    """Runs that differ only by their ``-s<seed>`` suffix, grouped under the name without it."""
    groups: dict[str, list[pd.DataFrame]] = {}
    for name, table in tables.items():
        groups.setdefault(name.rsplit("-s", 1)[0], []).append(table)
    return groups


def _mean_over_seeds(tables: dict[str, pd.DataFrame], columns: list[str]) -> dict[str, pd.DataFrame]:
    """Row-by-row mean of ``columns`` over the seeds of each group."""
    return {g: pd.concat(ts).groupby(level=0)[columns].mean() for g, ts in _seed_groups(tables).items()}


def _finish_curves(fig, axes, groups: int, path: Path) -> None:
    """The training-curve figures' ending: grids, the groups' legend in the left panel, save."""
    for ax in axes:
        ax.grid(alpha=0.3)
    if groups:
        axes[0].legend(fontsize=8, loc="best", ncol=1 + groups // 12, framealpha=0.85)
    save(fig, path)


def policy_curves(histories: dict[str, pd.DataFrame], path: Path) -> None:
    """Proxy and gold reward against √KL over training, mean over seeds per group (Gao et al. 2022, Fig. 1)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=False)
    if not histories:
        for ax in axes:
            ax.text(0.5, 0.5, "no RL runs in this experiment", ha="center", va="center", transform=ax.transAxes)
    grouped = _mean_over_seeds(histories, ["step", "kl", "reward_proxy", "reward_gold"])
    cmap = plt.get_cmap("tab20")
    for i, (name, history) in enumerate(sorted(grouped.items())):
        colour = cmap(i % 20)
        smooth = history[["kl", "reward_proxy", "reward_gold"]].rolling(5, min_periods=1).mean()
        root_kl = np.sqrt(smooth["kl"].clip(lower=0))
        axes[0].plot(root_kl, smooth["reward_proxy"], "--", color=colour)
        axes[0].plot(root_kl, smooth["reward_gold"], "-", color=colour, label=name)
        axes[1].plot(history["step"], smooth["reward_gold"], "-", color=colour)
        axes[1].plot(history["step"], smooth["reward_proxy"], "--", color=colour)
    axes[0].set_xlabel("√KL(π ‖ π_SFT)  (nats^½, k1, rollouts)")
    axes[0].set_ylabel("reward")
    axes[0].set_title("Proxy (dashed) and gold (solid) against √KL, mean over seeds")
    axes[1].set_xlabel("RL step")
    axes[1].set_title("Over training (moving average of 5 steps)")
    _finish_curves(fig, axes, len(grouped), path)


def rouge_curves(histories: dict[str, pd.DataFrame], path: Path) -> None:
    """ROUGE-L against the references and the gold reward over training, mean over seeds per group: where ROUGE
    keeps rising and the gold does not, the policy is over-optimising ROUGE (Stiennon et al. 2020)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    with_rouge = {name: h for name, h in histories.items() if "rouge" in h}
    if not with_rouge:
        for ax in axes:
            ax.text(0.5, 0.5, "no references in this experiment (ROUGE: the summarize task, or real data with "
                    "data.source.prompts_from: sft)", ha="center", va="center", transform=ax.transAxes, wrap=True)
    grouped = _mean_over_seeds(with_rouge, ["step", "kl", "rouge", "reward_gold"])
    cmap = plt.get_cmap("tab20")
    for i, (name, history) in enumerate(sorted(grouped.items())):
        smooth = history[["kl", "rouge", "reward_gold"]].rolling(5, min_periods=1).mean()
        axes[0].plot(np.sqrt(smooth["kl"].clip(lower=0)), smooth["rouge"], "-", color=cmap(i % 20), label=name)
        axes[1].plot(smooth["rouge"], smooth["reward_gold"], "-", marker="o", ms=1.5, color=cmap(i % 20))
    axes[0].set_xlabel("√KL(π ‖ π_SFT)  (nats^½, k1, rollouts)")
    axes[0].set_ylabel("ROUGE-L F1 against the reference")
    axes[0].set_title("ROUGE over training, mean over seeds (moving average of 5 steps)")
    axes[1].set_xlabel("ROUGE-L F1 against the reference")
    axes[1].set_ylabel("gold reward")
    axes[1].set_title("Gold against ROUGE along training (from the SFT start)")
    _finish_curves(fig, axes, len(grouped), path)


def bon_curves(curves: dict[str, pd.DataFrame], path: Path) -> None:
    """Best-of-n gold (left) and normalised proxy (right) gain over n = 1 against √KL_bon, mean over seeds."""
    grouped = _mean_over_seeds(curves, ["sqrt_kl", "gold_gain", "proxy_gain"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    if not curves:
        for ax in axes:
            ax.text(0.5, 0.5, "no best-of-n pool (real data has no gold reward)", ha="center", va="center",
                    transform=ax.transAxes)
    cmap = plt.get_cmap("tab20")
    for i, (name, table) in enumerate(sorted(grouped.items())):
        style = "-" if i % 40 < 20 else "--"
        axes[0].plot(table["sqrt_kl"], table["gold_gain"], style, marker="o", ms=2, color=cmap(i % 20), label=name)
        axes[1].plot(table["sqrt_kl"], table["proxy_gain"], style, marker="o", ms=2, color=cmap(i % 20))
    axes[0].set_title("Gold reward of best-of-n (gain over n = 1), mean over seeds")
    axes[1].set_title("Proxy (normalised RM) of best-of-n")
    for ax in axes:
        ax.set_xlabel("√KL_bon = √(log n − (n−1)/n)")
        ax.grid(alpha=0.3)
    if grouped:
        axes[0].legend(fontsize=7, loc="upper left", ncol=1 + len(grouped) // 10, framealpha=0.85)
    save(fig, path)


def loss_comparison(aggregate: pd.DataFrame, metrics: list[str], path: Path) -> None:
    """One panel per metric: mean and 95 % t interval over seeds for each reward model (loss and label noise)."""
    present = [m for m in metrics if m in aggregate]
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 0.35 * len(aggregate) + 1.8),
                             squeeze=False)
    order = aggregate.sort_values("group")
    for ax, metric in zip(axes[0], present):
        ax.barh(order["group"], order[metric], xerr=order.get(f"{metric}_ci95"), color="#4c72b0", alpha=0.85)
        ax.set_title(metric)
        ax.grid(alpha=0.3, axis="x")
    for ax in axes[0][1:]:
        ax.set_yticklabels([])
    save(fig, path)


def frontier(points: pd.DataFrame, path: Path, bon: dict[str, pd.DataFrame] | None = None) -> None:
    """Gold reward against KL to SFT on held-out prompts, one marker per run (the reward–KL frontier,
    DPO paper Fig. 2): online RL, offline DPO-style baselines and best-of-n, with best-of-n's whole curve
    (n = 1 … N, KL from the pool, mean over seeds per reward model) as the inference-time reference.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, table in sorted(_mean_over_seeds(bon or {}, ["kl", "gold"]).items()):
        ax.plot(table["kl"], table["gold"], "-", color="grey", alpha=0.6, lw=1.2, label=f"best-of-n curve ({name})")
    markers = {"offline": "s", "bon": "*", "sft": "D"}
    for group, rows in points.groupby("family"):
        ax.scatter(rows["kl"], rows["reward_gold"], marker=markers.get(group, "o"), s=40, label=group, alpha=0.8)
    for _, row in points.iterrows():
        ax.annotate(row["label"], (row["kl"], row["reward_gold"]), fontsize=6, alpha=0.7)
    label_axes(ax, "KL(π ‖ π_SFT) on held-out prompts (nats)", "gold reward", "Reward–KL frontier")
    ax.legend(fontsize=8, loc="lower right", framealpha=0.85)
    save(fig, path)


def sample_efficiency(histories: dict[str, pd.DataFrame], path: Path) -> None:
    """Gold reward against samples seen, mean over seeds per group (dense versus sparse credit)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if not histories:
        ax.text(0.5, 0.5, "no RL runs in this experiment", ha="center", va="center", transform=ax.transAxes)
    seeds = {group: len(frames) for group, frames in _seed_groups(histories).items()}
    for group, mean in sorted(_mean_over_seeds(histories, ["samples", "reward_gold"]).items()):
        gold = mean["reward_gold"].rolling(5, min_periods=1).mean()
        ax.plot(mean["samples"], gold, label=f"{group} (n={seeds[group]})")
    label_axes(ax, "samples generated", "gold reward of rollouts (moving average)", "Sample efficiency")
    save(fig, path)


def decoding_tradeoff(aggregate: pd.DataFrame, path: Path) -> None:
    """Gold reward against diversity (distinct-2 over all responses) for each policy under each decoding, mean
    over seeds: one colour per policy, one marker per decoding, a line through each policy's decodings (how
    a decoding moves the policy's gold–diversity trade-off; reranking by the RM is the inference-time use of a
    reward model)."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if aggregate.empty:
        ax.text(0.5, 0.5, "no policies in this experiment", ha="center", va="center", transform=ax.transAxes)
    markers = dict(zip(sorted(aggregate.get("decoding", pd.Series(dtype=str)).unique()), "os^vDP*Xhp<>"))
    cmap = plt.get_cmap("tab10")
    policy_handles = []
    for i, (policy, rows) in enumerate(sorted(aggregate.groupby("policy"), key=lambda item: item[0])):
        colour = cmap(i % 10)
        rows = rows.sort_values("distinct_2")
        ax.plot(rows["distinct_2"], rows["reward_gold"], "-", color=colour, alpha=0.4, lw=1)
        for _, row in rows.iterrows():
            ax.scatter(row["distinct_2"], row["reward_gold"], color=colour, marker=markers[row["decoding"]], s=45)
        policy_handles.append(plt.Line2D([], [], color=colour, lw=2, label=policy))
    decoding_handles = [plt.Line2D([], [], color="grey", marker=m, ls="", label=d) for d, m in markers.items()]
    if policy_handles:
        first = ax.legend(handles=policy_handles, fontsize=7, loc="lower left", title="policy", title_fontsize=7)
        ax.add_artist(first)
        ax.legend(handles=decoding_handles, fontsize=7, loc="lower right", title="decoding", title_fontsize=7)
    ax.set_xlabel("distinct-2 over all responses (diversity)")
    ax.set_ylabel("gold reward")
    ax.set_title("Decoding: gold against diversity, mean over seeds")
    ax.grid(alpha=0.3)
    save(fig, path)
