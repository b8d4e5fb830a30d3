"""Benchmark: wall time of whole experiment DAGs from scratch on this machine (Snakemake, every job rerun).

    python bench/dag_wall_time.py quick default --cores 2 --start warm cold --out bench/results/dag_wall_time.json

Each named experiment (``config/experiments/<name>.yaml``) runs with ``--forceall`` so nothing is reused, one
after another (never two at once: they would share the cores); the one-minute load average before each run is
recorded with its wall time, the per-stage wall times its jobs wrote to run.json (``stage_profile.collect``), and
the commit. ``--start`` runs each experiment with its jobs started warm (forked from rewardlab.warmstart's
server, the default) and/or cold (``warm_start=False``: each job a fresh interpreter), one after the other.
A failed run is recorded with its return code and stops the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _environment import environment, write_result
from stage_profile import collect

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, cores: int, start: str) -> dict:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile",
                           f"config/experiments/{name}.yaml", "--config", f"warm_start={start == 'warm'}",
                           "--forceall", "-q"], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    stages: dict[str, dict[str, float]] = {}
    for row in collect(ROOT / "results" / name):
        total = stages.setdefault(row["stage"], {"jobs": 0, "wall_time_s": 0.0})
        total["jobs"] += 1
        total["wall_time_s"] = round(total["wall_time_s"] + (row["wall_time_s"] or 0.0), 2)
    return {"experiment": name, "start": start, "returncode": proc.returncode, "wall_seconds": round(seconds, 1),
            "load_average_1min_before": load, "stages": stages,
            **({"stderr_tail": proc.stderr[-2000:]} if proc.returncode else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", help="names under config/experiments/")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--start", nargs="+", choices=("warm", "cold"), default=["warm", "cold"],
                        help="how the jobs start (config warm_start); each experiment runs once per choice")
    parser.add_argument("--out", default="bench/results/dag_wall_time.json")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    runs = []
    for name in args.experiments:
        for start in args.start:
            runs.append(run(name, args.cores, start))
            print(json.dumps({k: runs[-1][k] for k in ("experiment", "start", "returncode", "wall_seconds")}),
                  flush=True)
            if runs[-1]["returncode"]:
                break
        if runs[-1]["returncode"]:
            break
    write_result(args.out, {"benchmark": "experiment DAGs from scratch (snakemake --forceall), one at a time",
                            "settings": vars(args), "commit": commit, "runs": runs, **environment(args.cores)})


if __name__ == "__main__":
    main()
