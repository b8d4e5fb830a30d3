"""The `rewardlab` command: a face over the same functions the DAG uses."""

from __future__ import annotations

import argparse
import json
import sys

from rewardlab import config as C


def _validate(args: argparse.Namespace) -> int:
    try:
        cfg = C.load(*args.configs)
    except (C.ConfigError, OSError) as error:
        print(f"rewardlab: {error}", file=sys.stderr)
        return 2
    if args.show:
        print(json.dumps(cfg, indent=2, sort_keys=True))
    else:
        print(f"ok: {', '.join(args.configs)} (experiment {cfg['name']!r})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rewardlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="Validate config files (later ones override earlier ones).")
    validate.add_argument("configs", nargs="+")
    validate.add_argument("--show", action="store_true", help="Print the resolved config with defaults.")
    validate.set_defaults(func=_validate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
