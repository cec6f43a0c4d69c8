"""Compare models under one protocol: every model, every seed, the same data, split and evaluator.

    python -m recbole_diffusion.compare --models DiffuRec,PreferDiff,SASRec --dataset amazon-beauty \\
        --seeds 5 --output results/beauty --epochs 50
    python -m recbole_diffusion.compare --models PreferDiff,SASRec --dataset amazon-beauty --seeds 3 \\
        --model_config PreferDiff=studies/pd/best.yaml --model_config SASRec=studies/sasrec/best.yaml --epochs 200

``--model_config MODEL=FILE`` (repeated, or comma-separated) applies a config file, such as ``tune``'s
``best.yaml``, to that model's runs only: after ``--config_files``, before the command line's keys, which win
(the final runs lift a search's epoch cap that way). Each run's JSON records its file and the file's SHA-256.

Writes to ``--output``: ``runs/<model>-seed<seed>.json`` per run (config, metrics, per-epoch validation,
train and inference seconds, peak memory, head/tail and sequence-length group metrics, and with
``holdout_items_ratio`` the users whose target is held out of training), ``runs.csv``,
``summary.md`` (mean +- std, relative improvement over ``--reference`` and paired t-test p-values across
seeds), ``quality_vs_cost.png`` and ``validation_curves.png``. A finished run is never repeated: rerunning the
same command resumes a killed comparison, and a run killed mid-training continues from its last checkpoint
(every ``checkpoint_every`` epochs) instead of from scratch; a failed run records its error, is retried on the next start, and
the summary lists it. Processes may share one output folder (jobs of a cluster): a run is claimed while it trains
(:func:`recbole_diffusion.utils.files.claimed`), and one that another process is running or has finished is
skipped; the summary is the last finisher's. Each run trains in its own process, so its peak memory is its own.
With ``--nproc N`` each run trains on N processes (RecBole's distributed mode,
:mod:`recbole_diffusion.quick_start.launcher`; peak memory is rank 0's) and its record says so.
"""

import csv
import hashlib
import os
import sys
import time
import traceback
from datetime import datetime
from typing import NamedTuple

import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.ticker import MaxNLocator, NullFormatter

from recbole_diffusion.config.configurator import build_config, refuse_pretraining
from recbole_diffusion.data.checks import data_files_sha256
from recbole_diffusion.evaluation.metrics import MAIN_METRIC, METRICS, group_metrics, heldout_test_result
from recbole_diffusion.evaluation.statistics import paired_t_test
from recbole_diffusion.quick_start.child_process import run_in_child
from recbole_diffusion.quick_start.quick_start import run
from recbole_diffusion.utils import collectives
from recbole_diffusion.utils.command_line import add_config_files, entry_parser, parse_entry
from recbole_diffusion.utils.files import claimed, read_json, write_json

DEFAULT_SEED = 2020
MOST_SEEDS = 999  # a larger count is a seed written as a count (--seeds 2022): refused, as no one means it


def run_name(model, seed):
    return f"{model}-seed{seed}"


def run_record(config, trainer, data, result, keep_checkpoint=False):
    """What a comparison records of one run (the JSON of ``runs/<model>-seed<seed>.json``), computed where the
    trainer lives (:func:`recbole_diffusion.quick_start.quick_start.run`'s ``report``; rank 0's counts in a
    distributed run, its peak memory is rank 0's). Deletes the run's checkpoints unless ``keep_checkpoint``."""
    ranks, targets, users = trainer.collected_target_ranks()
    test_users = len(np.unique(users))
    groups, note = {}, None
    if test_users == len(users):
        groups = group_metrics(ranks, targets, users, data.item_counts, data.user_lengths)
        if len(data.heldout_items):
            groups["held-out items"] = heldout_test_result(ranks, targets, data.heldout_items, config["topk"])
    else:  # the per-user metrics and groups read one target per user
        note = (f"{len(users)} test targets of {test_users} users: per-user metrics and the group tables need one "
                "target per user (leave-one-out), so this run's numbers are RecBole's, rounded to "
                f"metric_decimal_place ({config['metric_decimal_place']})")
    checkpoint = trainer.saved_model_file
    if not keep_checkpoint and collectives.is_rank_zero():
        for path in (checkpoint, result["last_checkpoint_file"]):
            if path and os.path.isfile(path):
                os.remove(path)
    epoch_seconds = trainer.epoch_seconds
    return {
        "model": config["model"], "dataset": config["dataset"], "seed": config["seed"], "status": "ok",
        "nproc": int(config["nproc"] or 1),
        "test": {m: float(result["test_result"][m]) for m in METRICS},
        "best_valid": {m: float(result["best_valid_result"][m]) for m in METRICS},
        "best_valid_score": float(result["best_valid_score"]),
        "validation_curve": trainer.validation_curve,
        "learning_rates": trainer.learning_rates,
        "epochs": len(epoch_seconds),
        "resumed_from": result["resumed_from"],
        "train_seconds": float(sum(epoch_seconds)),
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        "inference_seconds": result["test_seconds"],
        "test_users": test_users,
        "seconds_per_1000_users": result["test_seconds"] / test_users * 1000,
        "peak_memory_mb": result["peak_memory_mb"],
        "peak_memory_kind": result["peak_memory_kind"],
        "checkpoint": os.path.abspath(checkpoint) if keep_checkpoint else None,
        "groups": groups,
        **({"groups_note": note} if note else {}),
        "config": {key: repr(value) if not isinstance(value, (int, float, str, bool, type(None), list, dict)) else value
                   for key, value in config.final_config_dict.items()},
    }


def _keep_checkpoints(config, trainer, data, result):
    return run_record(config, trainer, data, result, keep_checkpoint=True)


def run_settings(dataset, config_files, overrides, model_config=None, data_sha256=None, shared_data_sha256=None):
    """What must be equal for two runs to sit in one comparison: dataset, config files (with the SHA-256 of their
    content) and overrides, and a model's own config file (``--model_config``) with the SHA-256 of its content
    when the run started (a search that ran on rewrites its ``best.yaml``), and the SHA-256 of the data files
    (:func:`~recbole_diffusion.data.checks.data_files_sha256`) the model's runs read and those the shared
    configuration reads (the same unless the model's own file names other data)."""
    settings = {"dataset": dataset, "config_files": list(config_files),
                "config_files_sha256": [_sha256(path) for path in config_files],
                "overrides": {key: str(value) for key, value in sorted(overrides.items())}}
    if model_config:
        settings.update(model_config=model_config, model_config_sha256=_sha256(model_config))
    if data_sha256:
        settings["data_sha256"] = data_sha256
    if shared_data_sha256:
        settings["shared_data_sha256"] = shared_data_sha256
    return settings


# Keys of run_settings that records written before them lack: such a record is compared on the keys it has.
SETTINGS_ADDED_LATER = ("config_files_sha256", "data_sha256", "shared_data_sha256")


def _shared_settings(settings):
    """``settings`` without the model's own config file and data: what runs of every model of a comparison share
    (a model's config file may point it at other data)."""
    return {key: value for key, value in settings.items()
            if not key.startswith("model_config") and key != "data_sha256"}


def _settings_differ(saved, now):
    """Whether a finished run's settings differ from this comparison's, on the keys the run recorded."""
    now = {key: value for key, value in now.items() if key in saved or key not in SETTINGS_ADDED_LATER}
    return saved != now


def _trial(model, dataset, seed, config_files, overrides, keep_checkpoint, run_dir):
    """One run through the runner's pipeline (a killed run continues from its last checkpoint, ``resume: True``),
    its record or its error; each run's checkpoints live in its own folder."""
    config_dict = {**overrides, "seed": seed, "resume": True,
                   "checkpoint_dir": os.path.abspath(os.path.join(run_dir, "checkpoints"))}
    try:
        record = run(model, dataset, config_files, config_dict,
                     report=_keep_checkpoints if keep_checkpoint else run_record)
    except Exception as error:  # noqa: BLE001  (any failure is recorded; the comparison goes on)
        record = {"model": model, "dataset": dataset, "seed": seed, "status": "failed",
                  "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    # Keyed by the name asked for: a variant's runs record the variant, the class goes beside it (a record keyed by
    # the class would never count as finished, and would be left out of the variant's summary).
    return {**record, "model": model, "model_class": record["model"], "torch_threads": torch.get_num_threads()}


def load_runs(output):
    runs_dir = os.path.join(output, "runs")
    names = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    return [read_json(os.path.join(runs_dir, name)) for name in names if name.endswith(".json")]


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


class Comparison(NamedTuple):
    """A comparison checked before anything is written (:func:`prepare_comparison`)."""

    models: list
    dataset: str
    seeds: list
    output: str
    files: dict          # model -> its config files (the shared ones, then its own)
    overrides: dict
    settings: dict       # model -> run_settings
    todo: list           # (model, seed) pairs not finished yet
    finished: int


def prepare_comparison(models, dataset, seeds, output, config_files=(), overrides=None, model_configs=None):
    """Check every model's configuration and data, fingerprint them (:func:`run_settings`) and refuse a folder
    whose finished runs were made with other settings; writes nothing. Returns a :class:`Comparison`."""
    output = os.path.abspath(output)
    config_files = [os.path.abspath(path) for path in config_files]
    model_configs = {model: os.path.abspath(path) for model, path in (model_configs or {}).items()}
    overrides = dict(overrides or {})
    if "data_path" in overrides:
        overrides["data_path"] = os.path.abspath(overrides["data_path"])
    files = {model: config_files + ([model_configs[model]] if model in model_configs else []) for model in models}

    def data_of(model, model_files):
        config = build_config(model, dataset, model_files, {**overrides, "seed": seeds[0]})[0]
        refuse_pretraining(config, "compare")
        return data_files_sha256(config)

    data = {model: data_of(model, files[model]) for model in models}
    # The data without any model's own file (which may point that model elsewhere): what every run shares.
    plain = next((model for model in models if model not in model_configs), None)
    shared_data = data[plain] if plain else data_of(models[0], config_files)
    settings = {model: run_settings(dataset, config_files, overrides, model_configs.get(model), data[model],
                                    shared_data) for model in models}
    shared = run_settings(dataset, config_files, overrides, shared_data_sha256=shared_data)

    def differs(record):
        """A finished run of another setting: in full for the models run now, the shared part for the others."""
        if record["model"] in settings:
            return _settings_differ(record["settings"], settings[record["model"]])
        return _settings_differ(_shared_settings(record["settings"]), shared)

    finished = [r for r in load_runs(output) if r["status"] == "ok"]
    other = [r for r in finished if "settings" in r and differs(r)]
    if other:
        now = settings.get(other[0]["model"], shared)
        raise ValueError(f"{output} holds {len(other)} finished run(s) made with other settings "
                         f"(first: {run_name(other[0]['model'], other[0]['seed'])}: {other[0]['settings']}; "
                         f"now: {now}); choose another --output so that runs are never mixed")
    done = {(r["model"], r["seed"]) for r in finished}
    todo = [(model, seed) for model in models for seed in seeds if (model, seed) not in done]
    return Comparison(list(models), dataset, list(seeds), output, files, overrides, settings, todo, len(done))


def _finished_elsewhere(path, settings):
    """Why a planned run needs no training: another process finished it with these settings (``None`` when it
    did not). A run it finished with other settings is refused, as :func:`prepare_comparison` refuses them."""
    record = read_json(path) if os.path.isfile(path) else None
    if record is None or record.get("status") != "ok":
        return None
    if "settings" in record and _settings_differ(record["settings"], settings):
        raise ValueError(f"{path} was finished by another process with other settings ({record['settings']}; now: "
                         f"{settings}); choose another --output so that runs are never mixed")
    return "another process finished it"


def run_comparison(models, dataset, seeds, output, config_files=(), overrides=None, isolate=True, reference=None,
                   threads=None, keep_checkpoints=False, model_configs=None, prepared=None):
    """Train every (model, seed) pair not finished yet, then write the summary files; returns the records.

    ``threads`` sets torch's CPU threads in each run: on a machine shared with other jobs, fewer threads than
    cores avoids OpenMP oversubscription, which can slow small operations down many times. ``model_configs``:
    ``{model: config file}`` applied to that model's runs only, after ``config_files`` (``--model_config``).
    ``prepared``: the :func:`prepare_comparison` of these arguments, when the caller checked them already (its
    models, dataset, seeds and output are the ones run).
    """
    comparison = prepared or prepare_comparison(models, dataset, seeds, output, config_files, overrides,
                                                model_configs)
    models, dataset, seeds = comparison.models, comparison.dataset, comparison.seeds
    output, settings, todo = comparison.output, comparison.settings, comparison.todo
    os.makedirs(os.path.join(output, "runs"), exist_ok=True)
    if comparison.finished:
        print(f"resuming: {comparison.finished} finished run(s) kept, {len(todo)} to go", flush=True)
    for index, (model, seed) in enumerate(todo, 1):
        run_dir = os.path.join(output, "work", run_name(model, seed))
        path = os.path.join(output, "runs", f"{run_name(model, seed)}.json")
        with claimed(run_dir) as ours:
            # Another process on this folder may run this pair now, or have finished it since the plan was made.
            taken = "another process is running it" if not ours else _finished_elsewhere(path, settings[model])
            if taken:
                print(f"[{index}/{len(todo)}] {model} seed {seed}: skipped, {taken}", flush=True)
                continue
            start = time.perf_counter()
            record, exit_code = run_in_child(_trial, (model, dataset, seed, comparison.files[model],
                                                      comparison.overrides, keep_checkpoints, run_dir), path, run_dir,
                                             threads=threads, isolate=isolate)
            if record is None:
                record = {"model": model, "dataset": dataset, "seed": seed, "status": "failed",
                          "error": f"the run ended without a record (exit code {exit_code})"}
            record.update(settings=settings[model], model_config=settings[model].get("model_config"),
                          wall_seconds=time.perf_counter() - start)
            write_json(path, record)
        if record["status"] == "ok":
            line = f"{MAIN_METRIC} {record['test'][MAIN_METRIC]:.4f}, {record['epochs']} epochs"
        else:
            line = f"FAILED: {record['error']}"
        print(f"[{index}/{len(todo)}] {model} seed {seed}: {line} in {record.get('wall_seconds', 0):.1f}s", flush=True)
    records = [r for r in load_runs(output) if r["model"] in models and r["seed"] in seeds]
    write_reports(records, output, models, reference)
    return records


def exact_test_metric(record, metric):
    """A run's test ``metric`` unrounded, from its per-user ranks (the ``all users`` group). RecBole rounds its
    result to ``metric_decimal_place`` (4) digits, which moves a score near 0.001 by up to 7 %, too coarse for means
    and paired tests; a record without groups gives RecBole's rounded value."""
    exact = record.get("groups", {}).get("all users", {}).get(metric)
    return record["test"][metric] if exact is None else exact


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def comparison_table(records, models, reference, value_of, title):
    """Markdown table: mean +- std per model, and (relative improvement, paired p) against ``reference``."""
    ok = [r for r in records if r["status"] == "ok"]
    by_model = {m: {r["seed"]: r for r in ok if r["model"] == m} for m in models}
    lines = [f"### {title}", "", "| model | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for model in models:
        runs = by_model[model]
        if not runs:
            continue
        cells = []
        for metric in METRICS:
            values = [value_of(runs[s], metric) for s in sorted(runs)]
            if any(v is None for v in values):
                cells.append("n/a")
                continue
            mean, std = _mean_std(values)
            cell = f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"
            ref_runs = by_model.get(reference, {})
            if model != reference and ref_runs:
                seeds = sorted(set(runs) & set(ref_runs))
                # both on the seeds the two models share, like the paired test
                shared_mean = np.mean([value_of(runs[s], metric) for s in seeds]) if seeds else None
                ref_mean = np.mean([value_of(ref_runs[s], metric) for s in seeds]) if seeds else None
                improvement = (f"{(shared_mean - ref_mean) / ref_mean * 100:+.1f}%" if seeds and ref_mean
                               else "n/a")
                p = paired_t_test([value_of(runs[s], metric) for s in seeds],
                                  [value_of(ref_runs[s], metric) for s in seeds])
                cell += f" ({improvement}, p={p:.3g})" if p is not None else f" ({improvement})"
            cells.append(cell)
        name = f"{model} (reference)" if model == reference else model
        seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
        lines.append(f"| {name} ({seeds}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_reports(records, output, models, reference=None):
    """``runs.csv``, ``summary.md`` and the two figures from the run records."""
    reference = reference or ("SASRec" if "SASRec" in models else models[0])
    columns = ["model", "seed", "status", *METRICS, "epochs", "train_seconds", "seconds_per_epoch",
               "inference_seconds", "seconds_per_1000_users", "peak_memory_mb", "error"]
    with open(os.path.join(output, "runs.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({**record, **record.get("test", {})})
    ok = [r for r in records if r["status"] == "ok"]
    parts = [f"# Comparison on {records[0]['dataset'] if records else '?'}", "",
             f"Test metrics over seeds (mean ± sample std, from each run's per-user ranks, unrounded). In brackets: "
             f"relative improvement over `{reference}` and the two-sided paired t-test p-value "
             f"(scipy.stats.ttest_rel, no multiplicity adjustment), both on the seeds the two models share.", ""]
    model_configs = {r["model"]: r["model_config"] for r in records if r.get("model_config")}
    if model_configs:
        parts += ["Per-model config files (`--model_config`, after `--config_files`, before the command line's "
                  "keys): " + "; ".join(f"{model}: `{path}`" for model, path in sorted(model_configs.items())), ""]
    parts += [f"Note: {model} seed {seed}: {note}." for model, seed, note in
              sorted({(r["model"], r["seed"], r["groups_note"]) for r in ok if r.get("groups_note")})]
    parts.append(comparison_table(records, models, reference, exact_test_metric, "All test users"))
    group_names = [name for name in ok[0]["groups"] if name != "all users"] if ok else []
    for group in group_names:
        counts = sorted({r["groups"][group]["users"] for r in ok if group in r["groups"]})
        users = f"{counts[0]} users" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} users, by seed"
        lengths = ok[0]["groups"][group].get("lengths")
        span = f"{lengths[0]}-{lengths[1]} interactions, " if lengths else ""
        parts.append(comparison_table(records, models, reference, lambda r, m, g=group: r["groups"][g][m],
                                      f"{group} ({span}{users})"))
    parts += ["### Cost", "", "| model | epochs | s / epoch | inference s / 1000 users | peak memory (MiB) |",
              "|---|---|---|---|---|"]
    for model in models:
        runs = [r for r in ok if r["model"] == model]
        if runs:
            parts.append(f"| {model} | {np.mean([r['epochs'] for r in runs]):.1f} | "
                         f"{np.mean([r['seconds_per_epoch'] or 0 for r in runs]):.2f} | "
                         f"{np.mean([r['seconds_per_1000_users'] for r in runs]):.3f} | "
                         f"{np.mean([r['peak_memory_mb'] for r in runs]):.0f} |")
    failed = [r for r in records if r["status"] != "ok"]
    parts += ["", "### Failed runs", ""]
    parts += [f"- {r['model']} seed {r['seed']}: {r['error']}" for r in failed] or ["none"]
    with open(os.path.join(output, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(parts) + "\n")
    plot_figures(ok, models, output)


def plot_figures(records, models, output):
    """NDCG@10 against inference cost per model, and per-epoch validation curves."""
    plt.switch_backend("Agg")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for model in models:
        runs = [r for r in records if r["model"] == model]
        if not runs:
            continue
        cost = np.mean([r["seconds_per_1000_users"] for r in runs])
        mean, std = _mean_std([r["test"][MAIN_METRIC] for r in runs])
        ax.errorbar(cost, mean, yerr=std, fmt="o", capsize=3)
        ax.annotate(model, (cost, mean), textcoords="offset points", xytext=(5, 5))
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel("inference seconds per 1,000 users (log scale)")
    ax.set_ylabel(f"test {MAIN_METRIC.upper()}")
    ax.set_title("Quality vs inference cost")
    fig.tight_layout()
    fig.savefig(os.path.join(output, "quality_vs_cost.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for index, model in enumerate(models):
        for run_index, record in enumerate(r for r in records if r["model"] == model):
            if record["validation_curve"]:
                epochs, scores = zip(*record["validation_curve"])
                ax.plot(epochs, scores, "o-", markersize=3, color=f"C{index}", alpha=0.8,
                        label=model if run_index == 0 else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {MAIN_METRIC.upper()}")
    ax.set_title("Validation curves (one line per seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(output, "validation_curves.png"), dpi=120)
    plt.close(fig)


class CompareArguments(NamedTuple):
    """What :func:`parse_args` reads from the command line."""

    models: list
    dataset: str
    seeds: list
    output: str
    config_files: list
    overrides: dict
    reference: str
    isolate: bool
    threads: int
    keep_checkpoints: bool
    model_configs: dict


def _model_configs(parser, entries, models):
    """``{model: file}`` from ``--model_config MODEL=FILE`` entries (each may hold several, comma-separated)."""
    configs = {}
    for entry in entries or []:
        for part in (piece.strip() for piece in entry.split(",") if piece.strip()):
            model, separator, path = part.partition("=")
            if not separator or not model or not path:
                parser.error(f"--model_config {part!r}: write MODEL=FILE, e.g. --model_config PreferDiff=best.yaml")
            if model not in models:
                parser.error(f"--model_config {part!r}: {model!r} is not among --models ({', '.join(models)})")
            if model in configs:
                parser.error(f"--model_config: {model!r} is given two files ({configs[model]}, {path})")
            configs[model] = path
    return configs


def parse_args(argv=None):
    """The command line as :class:`CompareArguments`."""
    parser = entry_parser(__doc__.split("\n\n")[0],
                          epilog="Any other --key value (or --key=value) overrides that RecBole key in every run.")
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seeds", default=None, help=f"a count N (seeds {DEFAULT_SEED}, {DEFAULT_SEED + 1}, ...) "
                        "or a comma-separated list of seeds (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="one run per model with this seed (--seeds N,)")
    parser.add_argument("--output", default=None, help="results folder (default: comparison-<timestamp>)")
    add_config_files(parser)
    parser.add_argument("--model_config", action="append", metavar="MODEL=FILE",
                        help="a config file for that model's runs only (e.g. tune's best.yaml), after --config_files; "
                             "the command line's keys still win; repeat it, or comma-separate, for several models")
    parser.add_argument("--reference", default=None, help="model the others are compared with (default SASRec)")
    parser.add_argument("--in_process", "--in-process", action="store_true",
                        help="run in this process (peak memory not per run)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default: torch's)")
    parser.add_argument("--nproc", type=int, default=None,
                        help="processes per run (RecBole's nproc: DistributedDataParallel, gloo on CPUs, NCCL on "
                             "GPUs; train_batch_size stays the global batch); recorded in each run's JSON")
    parser.add_argument("--keep_checkpoints", action="store_true",
                        help="keep each run's best checkpoint under <output>/work/<run>/checkpoints (its path is in "
                             "the run's JSON); by default they are deleted once the run is measured")
    args, overrides = parse_entry(parser, argv)
    if args.seed is not None and args.seeds is not None:
        parser.error("--seed and --seeds both set the seeds: give one of them")
    try:
        if args.seed is not None:
            seeds = [args.seed]
        elif args.seeds and "," in args.seeds:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        elif int(args.seeds or 1) > MOST_SEEDS:
            parser.error(f"--seeds {args.seeds}: a count of {args.seeds} runs per model; for the one seed "
                         f"{args.seeds}, write --seed {args.seeds} (or --seeds {args.seeds},)")
        else:
            seeds = [DEFAULT_SEED + i for i in range(int(args.seeds or 1))]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: a count (e.g. 3) or a comma-separated list of seeds (e.g. 7,11)")
    if not seeds:
        parser.error(f"--seeds {args.seeds!r}: no run to make; give a count of at least 1 or a list of seeds")
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        parser.error(f"--seeds {args.seeds!r}: seed {repeated[0]} is listed twice")
    models = [m for m in args.models.split(",") if m]
    repeated = sorted({model for model in models if models.count(model) > 1})
    if repeated:
        parser.error(f"--models: {repeated[0]} is listed twice")
    if args.reference is not None and args.reference not in models:
        parser.error(f"--reference {args.reference}: not among --models ({', '.join(models)})")
    output = args.output or f"comparison-{datetime.now():%Y%m%d-%H%M%S}"
    if os.path.exists(output) and not os.path.isdir(output):
        parser.error(f"--output {output}: is a file; give a folder (new, or one of an earlier comparison)")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.nproc is not None:
        if args.nproc < 1:
            parser.error("--nproc must be at least 1")
        overrides["nproc"] = args.nproc
    return CompareArguments(models, args.dataset, seeds, output, args.config_files, overrides, args.reference,
                            not args.in_process, args.threads, args.keep_checkpoints,
                            _model_configs(parser, args.model_config, models))


def main(argv=None):
    args = parse_args(argv)
    try:  # every model's configuration and the data are checked before anything is written
        prepared = prepare_comparison(args.models, args.dataset, args.seeds, args.output, args.config_files,
                                      args.overrides, args.model_configs)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    records = run_comparison(args.models, args.dataset, args.seeds, args.output, args.config_files, args.overrides,
                             args.isolate, args.reference, args.threads, args.keep_checkpoints, args.model_configs,
                             prepared=prepared)
    failed = [r for r in records if r["status"] != "ok"]
    print(f"{len(records) - len(failed)} run(s) finished, {len(failed)} failed; summary: "
          f"{os.path.join(args.output, 'summary.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
