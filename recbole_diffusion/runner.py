"""The runner: ``python run_recbole_diffusion.py`` / ``python -m recbole_diffusion`` / ``recbole-diffusion``, like
RecBole's ``run_recbole.py``.

    python run_recbole_diffusion.py --model=DiffuRec --dataset=amazon-beauty --data_path=../shared/data
    python run_recbole_diffusion.py --model=SASRec --dataset=ml-100k --epochs 5 --config_files a.yaml,b.yaml
    python run_recbole_diffusion.py            # a short DiffuRec demo on the ml-100k copy inside recbole

Options: ``--model``, ``--dataset``, ``--config_files``; every other ``--key=value`` (or ``--key value``) sets that
configuration key (:mod:`recbole_diffusion.utils.command_line`); ``--resume`` continues a killed run. Runs
:func:`recbole_diffusion.quick_start.run` and prints the test metrics, the best epoch and the files written. Exit
status: 0 with real numbers, 2 for refused input (one message on stderr), 1 when a process of a distributed run
failed, 128 + 15 when SIGTERM stopped training (the last checkpoint is written).
"""

import os
import signal
import sys

from recbole_diffusion.config.configurator import DEFAULT_DATASET, DEFAULT_MODEL
from recbole_diffusion.quick_start import launcher
from recbole_diffusion.quick_start.quick_start import run
from recbole_diffusion.trainer import TrainingPreempted
from recbole_diffusion.utils.collectives import exit_finished_rank, launched_externally
from recbole_diffusion.utils.command_line import add_config_files, entry_parser, parse_entry

# Sizes of the no-argument demo: small enough to finish in minutes on two CPU cores.
DEMO_OVERRIDES = {"epochs": 3, "hidden_size": 64, "inner_size": 256, "n_layers": 2, "MAX_ITEM_LIST_LENGTH": 20,
                  "train_batch_size": 256, "eval_batch_size": 1024}


def parse_args(argv=None):
    """``(model, dataset, config files, overrides)`` of a runner command line."""
    parser = entry_parser(
        "Train and evaluate a recommender of recbole_diffusion or RecBole.",
        epilog="Any other --key=value (or --key value) overrides that RecBole configuration key, e.g. --epochs=5. "
               "--resume (resume: True) continues a killed run from its last checkpoint.")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    add_config_files(parser)
    args, overrides = parse_entry(parser, argv)
    return args.model, args.dataset, args.config_files, overrides


METRIC_LABELS = {"hit": "HR", "ndcg": "NDCG", "mrr": "MRR", "recall": "Recall", "precision": "Precision",
                 "map": "MAP"}


def _number(value):
    """Four decimals, as RecBole logs metrics; "-" for a missing value."""
    return "-" if value is None else f"{float(value):.4f}"


def _metric_table(metrics):
    """Metric names as rows and cut-offs as columns (``ndcg@10`` -> row NDCG, column @10); others below."""
    rows, cutoffs, plain = {}, set(), []
    for key, value in metrics.items():
        name, at, k = str(key).partition("@")
        if at and k.isdigit():
            rows.setdefault(name, {})[int(k)] = value
            cutoffs.add(int(k))
        else:
            plain.append((str(key), value))
    cutoffs = sorted(cutoffs)
    label = max([len(METRIC_LABELS.get(name, name)) for name in rows] + [len(key) for key, _ in plain] + [4])
    lines = []
    if rows:
        lines.append(" " * label + "".join(f"{'@' + str(k):>9}" for k in cutoffs))
        for name, values in rows.items():
            cells = "".join(f"{_number(values[k]) if k in values else '':>9}" for k in cutoffs)
            lines.append(f"{METRIC_LABELS.get(name, name):<{label}}{cells}".rstrip())
    lines += [f"{key:<{label}}{_number(value):>9}" for key, value in plain]
    return lines


def format_run_summary(result):
    """The end of a command-line run as text: test metrics as a table, the best epoch and validation score,
    the checkpoint and log paths. ``result`` is :func:`~recbole_diffusion.quick_start.quick_start.fit_and_test`'s
    dict; absent keys are skipped."""
    lines = []
    test = result.get("test_result")
    if test:
        lines += ["Test metrics:"] + ["  " + line for line in _metric_table(test)]
    elif "test_result" in result:
        lines.append("Test metrics: none (no test users)")
    heldout = result.get("test_result_heldout_items")
    if heldout is not None:
        metrics = {key: value for key, value in heldout.items() if key != "users"}
        if heldout["users"]:
            lines += [f"Test metrics of the {heldout['users']} users whose target is held out of training:"]
            lines += ["  " + line for line in _metric_table(metrics)]
        else:
            lines.append("Test metrics of users whose target is held out of training: none (no such test user)")
    if result.get("pretrained_model_file"):
        lines += [f"Pretrained weights (train_stage {result['train_stage']}): {result['pretrained_model_file']}",
                  f"Next stage: --train_stage={result['next_train_stage']} "
                  f"--pre_model_path={result['pretrained_model_file']}"]
    if result.get("transfer_from"):
        lines.append(f"Zero-shot: {result['transfer_from']} (trained on {result['trained_on']}), not trained here")
    if result.get("best_valid_score") is not None:
        epoch = f" at epoch {result['best_epoch']}" if result.get("best_epoch") is not None else ""
        lines.append(f"Best validation score {_number(result['best_valid_score'])}{epoch}")
    elif result.get("best_epoch") is not None:
        lines.append(f"Best epoch {result['best_epoch']}")
    for key, label in (("saved_model_file", "Checkpoint"), ("last_checkpoint_file", "Last checkpoint (--resume)"),
                       ("log_file", "Log file")):
        if result.get(key):
            lines.append(f"{label}: {result[key]}")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    model, dataset, config_files, overrides = parse_args(argv)
    if not argv:  # only a bare command is the demo; explicit arguments get the YAML defaults
        overrides = dict(DEMO_OVERRIDES)
        print(f"No arguments: a {overrides['epochs']}-epoch {DEFAULT_MODEL} demo on {DEFAULT_DATASET} (small sizes).")
    try:
        result = run(model, dataset, config_files, overrides)
    except TrainingPreempted as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except launcher.WorkerFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not launched_externally():
        print(format_run_summary(result))
        return 0
    if int(os.environ["RANK"]) == 0:
        print(format_run_summary(result))
    exit_finished_rank()


if __name__ == "__main__":
    sys.exit(main())
