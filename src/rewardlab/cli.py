"""The `rewardlab` command: a face over the same functions the DAG uses."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rewardlab import config as C


def _validate(args: argparse.Namespace) -> int:
    from rewardlab.dag import check_inputs

    try:
        cfg = C.load(*args.configs)
        check_inputs(cfg)  # the files and model folders it names, as the Snakefile checks them
    except (C.ConfigError, OSError) as error:
        print(f"rewardlab: {error}", file=sys.stderr)
        return 2
    if args.show:
        print(json.dumps(cfg, indent=2, sort_keys=True))
    else:
        print(f"ok: {', '.join(args.configs)} (experiment {cfg['name']!r})")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rewardlab.compare import CompareError, compare

    specs = args.sources or ["HEAD", "workspace"]
    if len(specs) == 1:
        specs = [specs[0], "workspace"]
    try:
        _, markdown = compare(specs, Path(args.root).resolve(), args.experiment, args.curve,
                              Path(args.out) if args.out else None, args.changed)
    except (CompareError, OSError) as error:
        print(f"rewardlab compare: {error}", file=sys.stderr)
        return 2
    print(markdown, end="")
    if args.out:
        print(f"\nwrote {args.out}/compare.md, compare.csv" + (", compare.png" if args.curve else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rewardlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="Validate config files (later ones override earlier ones).")
    validate.add_argument("configs", nargs="+")
    validate.add_argument("--show", action="store_true", help="Print the resolved config with defaults.")
    validate.set_defaults(func=_validate)
    comp = sub.add_parser(
        "compare", help="Every metric of two or more versions side by side, with differences.",
        description="Sources: 'workspace', a git revision, a DVC experiment name, or an experiment folder under "
                    "results/. Default: HEAD against the workspace; one source: it against the workspace.")
    comp.add_argument("sources", nargs="*")
    comp.add_argument("--experiment", "-e", default="default",
                      help="Experiment folder (results/<name>) read from revisions and the workspace.")
    comp.add_argument("--curve", action="append", default=[],
                      help="<path below results/<name>>:<column> of a history.csv to overlay (repeatable).")
    comp.add_argument("--out", help="Folder for compare.md, compare.csv and compare.png.")
    comp.add_argument("--changed", action="store_true", help="Only rows whose value differs between sources.")
    comp.add_argument("--root", default=".", help="The project's root (a git repository).")
    comp.set_defaults(func=_compare)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
