"""Statistics over seeds for the summary tables: a 95 % t interval per group, and a paired t test of each group
against its study's baseline group, run by run on the same seeds (rlhf-reference.md §3: intervals over ≥ 5
seeds, differences that are real).

Run names end in ``-s<seed>``; the rest is the group (``bt-eps0.0``, ``ppo-sparse-bt-eps0.0``). A group's
baseline is named by a function of the group (e.g. the same reward model with the baseline loss), so each row
is compared with the row that differs from it in the one factor the study varies.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05


def seed_intervals(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per group: ``seeds``, each metric's mean and ``<metric>_ci95``, the half-width of the 95 % t interval
    (t_{0.975, n−1}·s/√n; missing for a single seed, where no interval exists)."""
    present = [c for c in columns if c in frame]
    if frame.empty or not present:
        return pd.DataFrame(columns=["group", "seeds"])
    grouped = frame.groupby("group")[present]
    mean, count, std = grouped.mean(), grouped.count(), grouped.std(ddof=1)
    out = mean.copy()
    for c in present:
        n = count[c].to_numpy(dtype=float)
        quantile = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), np.nan)
        out[f"{c}_ci95"] = quantile * std[c].to_numpy() / np.sqrt(np.maximum(n, 1))
    out.insert(0, "seeds", count[present[0]])
    return out.reset_index()


def paired_pvalues(frame: pd.DataFrame, columns: list[str],
                   baseline_of: Callable[[str], str | None]) -> pd.DataFrame:
    """Per group: ``baseline`` (its baseline group) and ``<metric>_p``, the two-sided paired t test of the
    group against the baseline on the seeds both have (missing with fewer than two shared seeds, for the
    baseline itself, or when every paired difference is the same)."""
    present = [c for c in columns if c in frame]
    rows = []
    by_group = {g: rows_.set_index("seed") for g, rows_ in frame.groupby("group")}
    for group, runs in by_group.items():
        base = baseline_of(group)
        row: dict[str, object] = {"group": group, "baseline": base if base in by_group and base != group else None}
        for c in present:
            row[f"{c}_p"] = np.nan
            if row["baseline"] is None:
                continue
            joined = pd.concat([runs[c], by_group[base][c]], axis=1, join="inner").dropna()
            diff = (joined.iloc[:, 0] - joined.iloc[:, 1]).to_numpy()
            if len(diff) >= 2 and np.ptp(diff) > 0:
                row[f"{c}_p"] = float(stats.ttest_rel(joined.iloc[:, 0], joined.iloc[:, 1]).pvalue)
        rows.append(row)
    return pd.DataFrame(rows, columns=["group", "baseline"] + [f"{c}_p" for c in present])


def cell(mean: float, half: float, p: float | None = None) -> str:
    """``mean ± half`` (``mean`` alone without an interval), ``*`` when it differs from the baseline at 5 %."""
    if pd.isna(mean):
        return "—"
    text = f"{mean:.3f}" if pd.isna(half) else f"{mean:.3f} ± {half:.3f}"
    return text + (" *" if p is not None and not pd.isna(p) and p < ALPHA else "")
