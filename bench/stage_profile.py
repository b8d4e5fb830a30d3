"""Per-stage wall time and peak memory of a finished experiment, read from the stages' run.json files.

    python bench/stage_profile.py results/quick --out bench/results/quick-cpu.json

Every stage writes run.json with its device, wall time, peak resident memory of the process and peak GPU memory
allocated by PyTorch. This collects them (one row per stage folder), sums wall time per stage kind, prints a
Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections import defaultdict
from pathlib import Path


def collect(results: Path) -> list[dict]:
    rows = []
    for path in sorted(results.rglob("run.json")):
        if ".checkpoint" in path.parts:
            continue
        info = json.loads(path.read_text())
        rows.append({"folder": str(path.parent.relative_to(results)), "stage": info.get("stage"),
                     "device": info.get("device"), "wall_time_s": info.get("wall_time_s"),
                     "peak_rss_mb": info.get("peak_rss_mb"), "peak_gpu_memory_mb": info.get("peak_gpu_memory_mb"),
                     "precision": info.get("config", {}).get("precision")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results/<experiment name>")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--label", default="", help="a free-text note stored with the numbers (machine, command)")
    args = parser.parse_args()
    rows = collect(args.results)
    if not rows:
        raise SystemExit(f"{args.results}: no run.json found; run the experiment first")
    per_stage: dict[str, dict[str, float]] = defaultdict(lambda: {"runs": 0, "wall_time_s": 0.0})
    for row in rows:
        total = per_stage[row["stage"]]
        total["runs"] += 1
        total["wall_time_s"] = round(total["wall_time_s"] + (row["wall_time_s"] or 0.0), 3)
        for key in ("peak_rss_mb", "peak_gpu_memory_mb"):
            if row[key] is not None:
                total[key] = max(total.get(key, 0.0), row[key])
    print("| stage | runs | wall time (s, summed) | peak RSS (MiB) | peak GPU memory (MiB) |\n|---|---|---|---|---|")
    for stage, total in per_stage.items():
        print(f"| {stage} | {total['runs']} | {total['wall_time_s']:.1f} | {total.get('peak_rss_mb', '—')} | "
              f"{total.get('peak_gpu_memory_mb', '—')} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"label": args.label, "platform": platform.platform(), "results":
                                        str(args.results), "stages": per_stage, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
