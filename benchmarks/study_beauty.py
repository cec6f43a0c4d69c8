"""Does diffusion pay? The tuned study of BENCHMARKS.md run 19: every model tuned with one budget on Beauty.

    python benchmarks/study_beauty.py tune                      # every model, in the study's order
    python benchmarks/study_beauty.py tune --models SASRec,GRU4Rec
    python benchmarks/study_beauty.py final --models SASRec,GRU4Rec   # tuned configurations on full Beauty
    python benchmarks/study_beauty.py final --models BERT4Rec --seeds 2022   # a slow model's last seed, alongside
    python benchmarks/study_beauty.py sasrec-l10                # tuned SASRec at L 10 (DreamRec's, PreferDiff's L)
    python benchmarks/study_beauty.py paper                     # DiffuRec-paper, the authors' recipe, untuned
    python benchmarks/study_beauty.py report                    # the final runs against tuned SASRec (Holm)

Stage ``tune``: each model gets the same search (``python -m recbole_diffusion.tune``): :data:`TUNING`'s trials,
epoch cap, early stopping and pruning, on the first :data:`TUNING_USERS` users of Amazon Beauty (the same
validation data for every model), over its space in ``benchmarks/spaces/study/<model>.hyper`` (sources in each
file), at the CPU protocol's sizes of ``benchmarks/beauty.py`` (d 64; L 20 for the DiffuRec family, SeqDiffRec and
the RecBole baselines, L 10 for DreamRec and PreferDiff). Trial 0 of every search is the model's defaults.

Stage ``final``: each model whose search finished trains its ``best.yaml`` (``compare --model_config``) on full
Beauty with :data:`FINAL_SEEDS` seeds and :data:`FINAL_TRAINING` (the command line's keys beat the file's: the
search's epoch cap and validation interval are lifted), all models in one comparison folder ``final/`` (paired
tests against tuned SASRec in its ``summary.md``); each run's best checkpoint is kept (``final/work/``, git-ignored)
for the checks of the generative part. Stage ``sasrec-l10``: tuned SASRec rerun at L 10 (``final-sasrec-L10/``), so
that DreamRec and PreferDiff (L 10) also meet SASRec at their own history length, and the L 20 models a second
reading of the baseline. Stage ``paper``: ``DiffuRec-paper``
(the authors' recipe, untuned: lr 1e-3, StepLR) at the study's sizes with :data:`PAPER_TRAINING`, one seed
(``final-paper/``). Stage ``report``: every model's test NDCG@10 over the seeds it shares with SASRec, paired t-tests
against tuned SASRec, Holm-adjusted over the models, with the cost beside; then every model against tuned SASRec
at L 10 (``final/study.md``).

Everything is resumable: a finished search is skipped, an interrupted one continues (``tune``'s own resume). The
records (each search's ``study.db``, ``best.yaml``, ``trials.csv``, ``summary.md``) are written under ``--root``
(default ``benchmarks/study-beauty``, committed); trial logs and checkpoints go to its git-ignored ``work/``
folders, the data slice to ``data-<N>-users/``.
"""

import argparse
import csv
import os
import subprocess
import sys

import numpy as np
from beauty import DATASET, FAMILIES

from recbole_diffusion.compare import DEFAULT_SEED, exact_test_metric, load_runs
from recbole_diffusion.data.slices import write_user_slice
from recbole_diffusion.evaluation.statistics import holm_adjust, paired_t_test

HERE = os.path.dirname(os.path.abspath(__file__))
# The study's order: the RecBole baselines first (nothing of this package's models touches them), then the
# diffusion models.
STUDY_MODELS = ["SASRec", "GRU4Rec", "BERT4Rec", "DiffuRec", "DiffuRecSys-V2", "DreamRec", "PreferDiff",
                "SeqDiffRec"]
GUIDED = ("DreamRec", "PreferDiff")
TUNING_USERS = 5000
# The one search budget every model gets (stated in BENCHMARKS.md before the runs).
TUNING = {"trials": 8, "sampler": "tpe", "pruner": "median", "prune_startup_trials": 3, "prune_warmup_epochs": 3}
TUNING_TRAINING = {"epochs": 20, "eval_step": 1, "stopping_step": 4, "eval_batch_size": 1024,
                   "show_progress": False}


FINAL_SEEDS = 3
FINAL_TRAINING = {"epochs": 200, "eval_step": 2, "stopping_step": 3, "eval_batch_size": 1024, "show_progress": False}
SHORT_HISTORY = 10  # DreamRec's and PreferDiff's L: tuned SASRec is rerun at it
SHORT_REFERENCE = f"SASRec (L {SHORT_HISTORY})"
REPORT_METRICS = ("ndcg@10", "hit@10")  # the report's tables, each with its own paired tests
PAPER_SEEDS = 1
PAPER_TRAINING = {"epochs": 300, "eval_step": 5, "stopping_step": 4, "eval_batch_size": 1024, "show_progress": False}
FOLDERS = {"final": "final", "sasrec-l10": "final-sasrec-L10", "paper": "final-paper"}


def sizes(model):
    """The CPU protocol's sizes of the model's family (``benchmarks/beauty.py``)."""
    return FAMILIES["guided" if model in GUIDED else "diffurec"]["cpu"]


def tune_command(model, data_path, study_dir):
    """The ``recbole_diffusion.tune`` command line of one model's search."""
    command = [sys.executable, "-m", "recbole_diffusion.tune", "--model", model, "--dataset", DATASET,
               "--space", os.path.join(HERE, "spaces", "study", f"{model}.hyper"), "--study", study_dir,
               "--start_from_defaults", "--threads", "1"]
    for key, value in TUNING.items():
        command += [f"--{key}", str(value)]
    for key, value in {"data_path": data_path, **sizes(model), **TUNING_TRAINING}.items():
        command += [f"--{key}", str(value)]
    return command


def tune(models, root, data_root, seeds=None):
    """Run (or continue) every model's search, one after another (``seeds`` unused: each search has its own);
    returns the first failing exit status."""
    data_path = write_user_slice(os.path.join(data_root, DATASET, f"{DATASET}.inter"), DATASET, TUNING_USERS,
                                 os.path.join(root, f"data-{TUNING_USERS}-users"))
    for model in models:
        command = tune_command(model, data_path, os.path.join(root, "tune", model))
        print("$ " + " ".join(command), flush=True)
        code = subprocess.call(command)
        if code:
            return code
    return 0


def search_finished(study_dir):
    """Whether a model's search ran all its trials: :data:`TUNING`'s count completed or pruned in its
    ``trials.csv`` (a failed trial that was retried does not count), none still running."""
    path = os.path.join(study_dir, "trials.csv")
    if not os.path.isfile(os.path.join(study_dir, "best.yaml")) or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as handle:
        states = [row.get("state") for row in csv.DictReader(handle)]
    return sum(state in ("COMPLETE", "PRUNED") for state in states) >= TUNING["trials"] and "RUNNING" not in states


def _compare_command(models, seeds, output, model_configs, settings, keep_checkpoints=True):
    command = [sys.executable, "-m", "recbole_diffusion.compare", "--models", ",".join(models), "--dataset", DATASET,
               "--seeds", str(seeds), "--output", output, "--threads", "1"] + ["--keep_checkpoints"] * keep_checkpoints
    for model, path in model_configs.items():
        command += ["--model_config", f"{model}={path}"]
    for key, value in settings.items():
        command += [f"--{key}", str(value)]
    return command


def final_command(models, root, data_root, seeds=None):
    """The ``recbole_diffusion.compare`` command line of the final runs of ``models``: seeds ``seeds`` (a subset of
    the study's, so that two streams can share one model's seeds; default all :data:`FINAL_SEEDS`)."""
    seeds = "".join(f"{seed}," for seed in seeds) if seeds else FINAL_SEEDS  # a list, even of one seed
    return _compare_command(models, seeds, os.path.join(root, FOLDERS["final"]),
                            {model: os.path.join(root, "tune", model, "best.yaml") for model in models},
                            {"data_path": data_root, **FINAL_TRAINING})


def sasrec_l10_command(root, data_root):
    """Tuned SASRec's final runs again at L 10 (``MAX_ITEM_LIST_LENGTH`` on the command line beats ``best.yaml``)."""
    return _compare_command(["SASRec"], FINAL_SEEDS, os.path.join(root, FOLDERS["sasrec-l10"]),
                            {"SASRec": os.path.join(root, "tune", "SASRec", "best.yaml")},
                            {"data_path": data_root, **FINAL_TRAINING, "MAX_ITEM_LIST_LENGTH": SHORT_HISTORY},
                            keep_checkpoints=False)


def paper_command(root, data_root):
    """``DiffuRec-paper`` (its YAML's learning rate and StepLR, untuned) at the study's sizes, :data:`PAPER_TRAINING`
    (which beats the variant's 500 epochs and validation every 20)."""
    return _compare_command(["DiffuRec-paper"], PAPER_SEEDS, os.path.join(root, FOLDERS["paper"]), {},
                            {"data_path": data_root, **sizes("DiffuRec"), **PAPER_TRAINING})


def final(models, root, data_root, seeds=None):
    """The final runs of every model in ``models`` whose search finished (the others are named and left out)."""
    ready = [model for model in models if search_finished(os.path.join(root, "tune", model))]
    waiting = [model for model in models if model not in ready]
    if waiting:
        print(f"searches not finished, left out: {', '.join(waiting)}", flush=True)
    if not ready:
        return 1
    return _call(final_command(ready, root, data_root, seeds))


def _call(command):
    print("$ " + " ".join(command), flush=True)
    return subprocess.call(command)


def sasrec_l10(models, root, data_root, seeds=None):
    """Stage ``sasrec-l10`` (``models`` and ``seeds`` unused): once SASRec's search finished."""
    if not search_finished(os.path.join(root, "tune", "SASRec")):
        print("SASRec's search is not finished", flush=True)
        return 1
    return _call(sasrec_l10_command(root, data_root))


def paper(models, root, data_root, seeds=None):
    """Stage ``paper`` (``models`` and ``seeds`` unused)."""
    return _call(paper_command(root, data_root))


def metric_name(metric):
    """A RecBole metric key as the tables write it: ``hit@10`` is HR@10, ``ndcg@10`` NDCG@10."""
    return metric.upper().replace("HIT", "HR")


def report_table(records, reference="SASRec", metric="ndcg@10"):
    """Markdown: each model's test ``metric`` (mean ± std over seeds), its difference from ``reference`` on the
    seeds both have, the paired t-test p-value and its Holm adjustment over the models compared, and the cost
    (train seconds of every epoch run, the early-stopping patience included; epochs; inference seconds per 1,000
    test users)."""
    ok = [record for record in records if record["status"] == "ok"]
    by_model = {}
    for record in ok:
        by_model.setdefault(record["model"], {})[record["seed"]] = record
    base = by_model.get(reference, {})
    models = [reference] * bool(base) + sorted(model for model in by_model if model != reference)
    tests = {}
    for model in models[1:] if base else []:
        seeds = sorted(set(by_model[model]) & set(base))
        values = [exact_test_metric(by_model[model][seed], metric) for seed in seeds]
        reference_values = [exact_test_metric(base[seed], metric) for seed in seeds]
        tests[model] = (seeds, values, reference_values, paired_t_test(values, reference_values))
    adjusted = dict(zip(tests, holm_adjust([test[3] for test in tests.values()])))
    lines = [f"| model | seeds | test {metric_name(metric)} | difference from {reference} (shared seeds) | p | "
             "p, Holm | train s (every epoch run) | epochs | inference s / 1,000 users |", "|---" * 9 + "|"]
    for model in models:
        runs = list(by_model[model].values())
        values = np.array([exact_test_metric(run, metric) for run in runs])
        spread = f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else ""
        if model in tests:
            seeds, model_values, reference_values, p = tests[model]
            difference = np.mean(model_values) - np.mean(reference_values)
            relative = difference / np.mean(reference_values) * 100 if np.mean(reference_values) else float("nan")
            cells = [f"{difference:+.4f} ({relative:+.1f} %, {len(seeds)} seed{'s' * (len(seeds) != 1)})",
                     "n/a" if p is None else f"{p:.3g}", "n/a" if adjusted[model] is None else f"{adjusted[model]:.3g}"]
        else:
            cells = ["reference" if model == reference else "no shared seed", "", ""]
        cost = [np.mean([run["train_seconds"] for run in runs]), np.mean([run["epochs"] for run in runs]),
                np.mean([run["seconds_per_1000_users"] for run in runs])]
        lines.append(f"| {model} | {len(runs)} | {values.mean():.4f}{spread} | " + " | ".join(cells)
                     + f" | {cost[0]:.0f} | {cost[1]:.1f} | {cost[2]:.2f} |")
    return "\n".join(lines) + "\n"


def report_text(root):
    """``final/study.md``: every model of ``final/`` (and ``DiffuRec-paper`` of ``final-paper/``) against tuned
    SASRec, then against tuned SASRec at L 10 (``final-sasrec-L10/``): DreamRec's and PreferDiff's own L, and a
    second reading of the baseline for the L 20 models, since L is a protocol size that nobody tuned and a
    shorter history may suit SASRec on Beauty; each comparison on test NDCG@10, then on HR@10 (Holm adjusts within
    a table)."""
    final_runs = load_runs(os.path.join(root, FOLDERS["final"]))
    paper_runs = load_runs(os.path.join(root, FOLDERS["paper"]))
    short = [{**run, "model": SHORT_REFERENCE} for run in load_runs(os.path.join(root, FOLDERS["sasrec-l10"]))]
    seeds = sorted({run["seed"] for run in final_runs + paper_runs if run["status"] == "ok"})
    text = ("Test metrics on full Amazon Beauty (22,363 users, leave-one-out, full ranking) of the best validation "
            "epoch, each run's unrounded value from its per-user ranks; seeds "
            f"{', '.join(str(seed) for seed in seeds)} (the seeds column counts each model's). A difference is "
            "taken on the seeds a model shares with the reference; p is the two-sided paired t-test across them, "
            "Holm-adjusted over the table's models with at least two shared seeds."
            + (" `DiffuRec-paper` is the authors' recipe, untuned." if paper_runs else "") + "\n")
    for metric in REPORT_METRICS:
        name = metric_name(metric)
        text += f"\n### Every model against tuned SASRec (L 20), {name}\n\n" + report_table(final_runs + paper_runs,
                                                                                           metric=metric)
        if short:
            others = [run for run in final_runs + paper_runs if run["model"] != "SASRec"]
            text += (f"\n### Every model against tuned SASRec at L {SHORT_HISTORY} (DreamRec's and PreferDiff's L), "
                     f"{name}\n\n" + report_table(short + others, reference=SHORT_REFERENCE, metric=metric))
    return text


def report(models, root, data_root, seeds=None):
    """Write and print ``final/study.md`` (:func:`report_text`; the other arguments are unused: every finished run
    of the folders is reported)."""
    text = report_text(root)
    os.makedirs(os.path.join(root, FOLDERS["final"]), exist_ok=True)
    with open(os.path.join(root, FOLDERS["final"], "study.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("tune", "final", "sasrec-l10", "paper", "report"))
    parser.add_argument("--models", default=",".join(STUDY_MODELS), help="comma-separated (default: all, in order)")
    parser.add_argument("--root", default=os.path.join(HERE, "study-beauty"))
    parser.add_argument("--data_path", default=os.path.join(HERE, "..", "..", "shared", "data"))
    parser.add_argument("--seeds", default=None, help="final: comma-separated seeds, a subset of the study's (default "
                        "all), so that a second stream can take a slow model's last seed")
    args = parser.parse_args(argv)
    models = [model for model in args.models.split(",") if model]
    unknown = sorted(set(models) - set(STUDY_MODELS))
    if unknown:
        parser.error(f"not a model of the study: {', '.join(unknown)} (the study's: {', '.join(STUDY_MODELS)})")
    study_seeds = list(range(DEFAULT_SEED, DEFAULT_SEED + FINAL_SEEDS))
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
        except ValueError:
            seeds = []
        if args.stage != "final" or not seeds or not set(seeds) <= set(study_seeds):
            parser.error(f"--seeds {args.seeds!r}: the final stage's, comma-separated seeds of {study_seeds}")
    stage = {"tune": tune, "final": final, "sasrec-l10": sasrec_l10, "paper": paper, "report": report}[args.stage]
    return stage(models, os.path.abspath(args.root), os.path.abspath(args.data_path), seeds)


if __name__ == "__main__":
    sys.exit(main())
