"""`pcsim bench`: each rule's time per weight update and peak memory against BP, on zoo models."""

from __future__ import annotations

import argparse

from pcsim.bench import rules
from pcsim.cli.options import add_models_dir_flag, output_folder


def add_parser(commands) -> None:
    p = commands.add_parser(
        "bench", help="time the rules against BP on the zoo models; tables to a folder",
        description="Time each rule's weight update and measure its peak memory on zoo models at realistic sizes, "
                    "as ratios to BP (autograd on the same module) taken in the same run. Writes "
                    "DIR/rules_DEVICE.json and DIR/rules_DEVICE.md after each model.")
    rules.add_arguments(p)
    p.add_argument("--out", default="bench", metavar="DIR", help="where the tables go (default: bench/)")
    add_models_dir_flag(p)


def run(args: argparse.Namespace) -> int:
    # an empty selection (--models or --rules with nothing after it) measured all models, or BP alone, with exit 0
    for flag, chosen in (("--models", args.models), ("--rules", args.rules)):
        if chosen is not None and not chosen:
            raise ValueError(f"{flag} names nothing; leave it out for the default, or name at least one")
    unknown = sorted(set(args.models or ()) - set(rules.zoo_names()))
    if unknown and not args.keep_going:
        raise ValueError(f"unknown zoo model(s) {', '.join(unknown)}; the zoo has {', '.join(rules.zoo_names())}")
    # checked before the first model is measured (minutes), not when its table is written
    stem = output_folder(args.out, "--out") / f"rules_{args.device.split(':')[0]}"
    code = rules.run(args, stem)
    print(f"tables: {stem.with_suffix('.md')}, {stem.with_suffix('.json')}")
    return code
