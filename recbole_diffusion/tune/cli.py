"""The command line of ``python -m recbole_diffusion.tune`` (the options are listed by ``--help``)."""

import sys

from recbole_diffusion.tune.search import prepare_search
from recbole_diffusion.tune.study import run_search
from recbole_diffusion.utils.command_line import add_config_files, entry_parser, parse_entry


def parse_args(argv=None):
    """``(args, config files, overrides)`` of a ``tune`` command line."""
    parser = entry_parser("Hyper-parameter search (Optuna) for a recommender of recbole_diffusion or RecBole.",
                          epilog="Any other --key=value (or --key value) is fixed for every trial, e.g. --epochs=10.")
    parser.add_argument("--model", "-m", default=None, help="model or variant name (default: the runner's)")
    parser.add_argument("--dataset", "-d", default=None)
    add_config_files(parser, "YAML files fixed for every trial (space- or comma-separated)")
    parser.add_argument("--space", default=None,
                        help="RecBole .hyper file (default: properties/hyper/<Model>.hyper of this package)")
    parser.add_argument("--trials", type=int, default=20, help="finished trials the study should hold (default 20)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which no new trial starts (a running trial finishes)")
    parser.add_argument("--sampler", default="tpe", help="tpe (default), random, or grid (choices only)")
    parser.add_argument("--pruner", default="median", help="median (default) or none")
    parser.add_argument("--prune_startup_trials", type=int, default=3,
                        help="finished trials before pruning starts (default 3)")
    parser.add_argument("--prune_warmup_epochs", type=int, default=2,
                        help="epochs a trial always trains before it can be pruned (default 2)")
    parser.add_argument("--study", default=None, help="study folder (default studies/<model>-<dataset>)")
    parser.add_argument("--confirm_seeds", type=int, default=0,
                        help="rerun the best configurations with N other seeds and choose on the mean")
    parser.add_argument("--confirm_top", type=int, default=3, help="configurations to confirm (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per trial (default: torch's)")
    parser.add_argument("--start_from_defaults", action="store_true",
                        help="a new study's first trial runs the searched keys' default values (YAMLs and fixed "
                             "keys), so the summary compares the best trial with them")
    args, overrides = parse_entry(parser, argv)
    return args, args.config_files, overrides


def main(argv=None):
    args, files, overrides = parse_args(argv)
    try:
        search = prepare_search(args.model, args.dataset, files, overrides, space_file=args.space,
                                directory=args.study, trials=args.trials, timeout=args.timeout,
                                sampler=args.sampler, pruner=args.pruner,
                                prune_startup_trials=args.prune_startup_trials,
                                prune_warmup_epochs=args.prune_warmup_epochs, confirm_seeds=args.confirm_seeds,
                                confirm_top=args.confirm_top, threads=args.threads,
                                start_from_defaults=args.start_from_defaults)
        run_search(search)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
