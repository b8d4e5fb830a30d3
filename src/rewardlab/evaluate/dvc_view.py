"""Stage `dvc_view`: the last experiment's evaluation where DVC looks for it, at paths no experiment changes.

DVC compares revisions file by file (``dvc exp show``, ``dvc metrics diff``, ``dvc plots diff``), so its metrics
and plots must sit at the same path whichever named experiment ran. ``results/dvc/metrics.json`` holds the
experiment's name and the reward-model and policy sections of ``results/<name>/eval/metrics.json`` (the
per-decoding table stays there, or ``dvc exp show`` would grow by eight columns a decoding);
``results/dvc/frontier.csv`` is each policy's gold reward against its KL from the SFT policy (the
over-optimisation frontier, one row a run).
Written last, after the summary, and atomically: a failed run leaves the previous view as it was.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from rewardlab.runinfo import write_csv, write_json

FRONTIER_COLUMNS = ["run", "kl", "reward_gold", "reward_proxy", "win_rate_vs_sft"]


def write_view(experiment: str, metrics: Path, summary: Path, out: Path) -> None:
    """``out/metrics.json`` = {"experiment": name, "rm": …, "policy": …}; ``out/frontier.csv`` = policies' KL and
    gold."""
    values = {k: v for k, v in json.loads(metrics.read_text()).items() if k in ("rm", "policy")}
    table = pd.read_csv(summary)
    policies = table[table["kl"].notna()] if "kl" in table else table.iloc[0:0]
    rows = [{c: row[c] for c in FRONTIER_COLUMNS if c in row} for row in policies.to_dict("records")]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "frontier.csv", rows, [c for c in FRONTIER_COLUMNS if c in table])
    write_json(out / "metrics.json", {"experiment": experiment, **values})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="the experiment's name (results/<name>/)")
    parser.add_argument("--metrics", required=True, type=Path, help="results/<name>/eval/metrics.json")
    parser.add_argument("--summary", required=True, type=Path, help="results/<name>/eval/summary.csv")
    parser.add_argument("--out", required=True, type=Path, help="results/dvc")
    args = parser.parse_args()
    write_view(args.experiment, args.metrics, args.summary, args.out)


if __name__ == "__main__":
    main()
