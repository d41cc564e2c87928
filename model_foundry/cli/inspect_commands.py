"""Handlers of the `foundry` subcommands that inspect a model without training it."""
from __future__ import annotations

from argparse import Namespace

from model_foundry.errors import UserError


def summary(args: Namespace) -> None:
    """Module table, optional weight statistics, then the dry run; a failed dry run exits with code 2."""
    from model_foundry.reporting.dry_run import dry_run, load_target
    from model_foundry.reporting.summary import format_summary, format_weight_statistics, summarize, \
        weight_statistics

    if args.depth < 0:
        raise UserError(f"--depth must be 0 or more (levels of nested modules to show), got {args.depth}.")
    target = load_target(args.target)
    shape = list(target.batch["input_ids"].shape)
    print(f"Model of {target.source}, on one training batch of input_ids {shape}:\n")
    print(format_summary(summarize(target.model, target.batch), depth=args.depth))
    if args.stats:
        print("\n" + format_weight_statistics(weight_statistics(target.model)))
    if not args.dry_run:
        return
    report = dry_run(target.model, target.batch, frozen=target.frozen, autocast=target.autocast(),
                     loss_fn=target.loss_fn)
    if not report.passed:
        raise UserError(f"{target.source}: {report.describe()}")
    print("\n" + report.describe())
