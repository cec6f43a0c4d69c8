"""Does a trained diffusion recommender use its generative part? Three checks on kept checkpoints (issue 23).

    python benchmarks/study_beauty.py final                          # keeps each run's best checkpoint
    python benchmarks/generative_checks.py --runs benchmarks/study-beauty/final --threads 1

For every diffusion run of ``--runs`` (``compare --keep_checkpoints``: ``runs/*.json`` with a "checkpoint"), the
checkpoint is loaded with its data and its test split evaluated (as ``benchmarks/sampler_frontier.py`` does, the
evaluation noise keyed by the checkpoint's ``eval_seed``) in these settings, each against the model as trained:

* ``one call``: the reverse process replaced by one network call (``one_step``: ``x0_hat`` from pure noise at the
  last step), or, where the last step keeps more than ``ONE_STEP_MAX_ALPHA_BAR`` of the signal, DDIM with one
  stride (two calls); left out where it is the model's default (SeqDiffRec, the ``-fast`` variants);
* ``x_t = 0``: the default sampler with the noisy input of every denoiser call replaced by zeros, so the model
  ranks from the history (and the step) alone;
* ``lambda = 0`` (DiffuRec, DiffuRecSys): the default sampler with ``lambda_uncertainty`` 0, which removes ``x_t``
  and the step embedding from the history altogether (their only entry into the model).

Each setting is compared with the default over the test users, per run (each user's NDCG@10 paired): TOST for
equivalence at ``--margin`` (2 %) of the default's NDCG@10 and the Wilcoxon signed-rank test, both Holm-adjusted
over the settings of a run. Verdicts at alpha = 0.05: ``equivalent``, ``lower`` / ``higher``, both, or
``inconclusive``. A setting equivalent to the default says the model does not need what the setting removes.
Beside them, the trained forward process's per-dimension signal-to-noise ratio ``SNR_t = abar_t E[x0^2] /
(1 - abar_t)`` over the item table at the first and last step and the share of steps where it is below 1
(``benchmarks/embedding_geometry.py``).

Writes ``--output`` (default ``<runs>/generative``): ``generative.csv`` (a row per run and setting) and
``generative.md``. Runs already in ``generative.csv`` keep their rows and are not checked again (a study's runs finish
over several sessions, and their checkpoints are not kept in git); ``--models`` limits the runs checked.
"""

import argparse
import csv
import os
import sys

import numpy as np
import torch
from scipy.stats import rankdata

from embedding_geometry import forward_snr
from recbole_diffusion.compare import load_runs, run_name
from recbole_diffusion.evaluation.metrics import MAIN_METRIC, per_user_metrics
from recbole_diffusion.evaluation.statistics import holm_adjust, tost_paired, wilcoxon_signed_rank
from recbole_diffusion.model import MODELS
from recbole_diffusion.model.base import DiffusionRecommender
from recbole_diffusion.model.diffurec import DiffuRec
from sampler_frontier import evaluate_setting, load_checkpoint_run, one_step_possible, warm_up

ALPHA = 0.05
DEFAULT_MARGIN = 0.02


def one_call(model):
    """``(name, sampler, steps)`` of the cheapest reverse process: ``one_step`` where the last step is noise enough."""
    if one_step_possible(model):
        return "one call (one_step)", "one_step", None
    return "two calls (DDIM-1)", "ddim", 1


def zero_input(model):
    """Make every denoiser call of ``model`` see ``x_t = 0`` (an attribute on the instance: the class is intact)."""
    denoise = type(model).denoise.__get__(model)
    model.denoise = lambda condition, x_t, t, noise=None: denoise(condition, torch.zeros_like(x_t), t, noise)


def settings_of(model):
    """``[(name, prepare)]``: how each setting changes the loaded model (the default first, unchanged)."""
    name, sampler, steps = one_call(model)
    default = model.sampler, model.sampler_steps

    def set_sampler(chosen, chosen_steps):
        def prepare(m):
            m.sampler, m.sampler_steps = chosen, chosen_steps
        return prepare

    settings = [("as trained", set_sampler(*default))]
    if (sampler, steps) != (default[0], None if sampler == "one_step" else default[1]):
        settings.append((name, set_sampler(sampler, steps)))  # left out where it is the default (SeqDiffRec, -fast)
    settings.append(("x_t = 0", lambda m: (set_sampler(*default)(m), zero_input(m))))
    if isinstance(model, DiffuRec):
        settings.append(("lambda = 0", lambda m: (set_sampler(*default)(m), setattr(m, "lambda_uncertainty", 0.0))))
    return settings


def snr_summary(model):
    snr = forward_snr(model.item_embedding.weight.detach()[1:], model.diffusion.alphas_cumprod)  # row 0: padding
    return {"snr_first_step": snr[0].item(), "snr_last_step": snr[-1].item(),
            "share_of_steps_snr_below_1": (snr < 1).double().mean().item()}


def signed_rank_direction(differences):
    """``lower`` / ``higher``: the side of the Wilcoxon signed-rank statistic (the sum of the signed ranks of the
    non-zero differences), the direction the test's p-value speaks of."""
    differences = differences[differences != 0]
    ranks = rankdata(np.abs(differences))  # tied |differences| share their average rank, as in the test
    return "lower" if float((np.sign(differences) * ranks).sum()) < 0 else "higher"


def verdict(tost_p, wilcoxon_p, direction):
    """``equivalent`` (Holm-adjusted TOST p < alpha), ``lower`` / ``higher`` (Holm-adjusted Wilcoxon p < alpha, in
    ``direction``), both, or ``inconclusive``."""
    equivalent = tost_p is not None and tost_p < ALPHA
    moved = wilcoxon_p is not None and wilcoxon_p < ALPHA
    return ("equivalent and " + direction if equivalent and moved else "equivalent" if equivalent
            else direction if moved else "inconclusive")


def check_run(record, margin_share):
    """Rows of one run: every setting's test NDCG@10 against the model as trained, and the forward SNR."""
    name = run_name(record["model"], record["seed"])
    config, trainer, test_data, _ = load_checkpoint_run(record["checkpoint"])
    model = trainer.model
    if not isinstance(model, DiffusionRecommender):
        return []
    warm_up(trainer, test_data, config["device"])
    per_user, rows = {}, []
    trained_lambda = getattr(model, "lambda_uncertainty", None)
    for setting, prepare in settings_of(model):
        model.__dict__.pop("denoise", None)  # each setting starts from the model as trained
        if trained_lambda is not None:
            model.lambda_uncertainty = trained_lambda
        prepare(model)
        result, _, ranks = evaluate_setting(trainer, test_data)
        per_user[setting] = per_user_metrics(ranks)[MAIN_METRIC]
        rows.append({"run": name, "model": record["model"], "seed": record["seed"], "setting": setting,
                     MAIN_METRIC: result["metrics"][MAIN_METRIC],
                     "seconds_per_1000_users": result["seconds_per_1000_users"]})
        print(f"{name} {setting}: {MAIN_METRIC} {result['metrics'][MAIN_METRIC]:.4f}", flush=True)
    default = per_user["as trained"]
    margin = margin_share * float(default.mean())
    tests = []
    for row in rows[1:]:
        values = per_user[row["setting"]]
        tost_p = tost_paired(values, default, margin)["p"] if margin > 0 else None
        tests.append((row, tost_p, wilcoxon_signed_rank(values, default), values - default))
    tost_holm = holm_adjust([test[1] for test in tests])
    wilcoxon_holm = holm_adjust([test[2] for test in tests])
    for (row, tost_p, wilcoxon_p, differences), tost_holm_p, wilcoxon_holm_p in zip(tests, tost_holm, wilcoxon_holm):
        row.update(mean_user_difference=float(differences.mean()), margin=margin, tost_p=tost_p,
                   tost_p_holm=tost_holm_p, wilcoxon_p=wilcoxon_p, wilcoxon_p_holm=wilcoxon_holm_p,
                   verdict=verdict(tost_holm_p, wilcoxon_holm_p, signed_rank_direction(differences)))
    rows[0].update(verdict="reference", **snr_summary(model))
    return rows


COLUMNS = ["run", "model", "seed", "setting", MAIN_METRIC, "mean_user_difference", "margin", "tost_p", "tost_p_holm",
           "wilcoxon_p", "wilcoxon_p_holm", "verdict", "seconds_per_1000_users", "snr_first_step", "snr_last_step",
           "share_of_steps_snr_below_1"]


def _cell(value):
    if value is None or value == "":
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def read_rows(path):
    """The rows of an earlier ``generative.csv`` (numbers as numbers; empty when there is none)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column in COLUMNS:
            value = row.get(column)
            if value in (None, ""):
                row.pop(column, None)
            elif column == "seed":
                row[column] = int(value)
            elif column not in ("run", "model", "setting", "verdict"):
                row[column] = float(value)
    return rows


def write_outputs(rows, output, margin_share):
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "generative.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Test {MAIN_METRIC.upper()} of each setting against the model as trained (TOST margin "
             f"{margin_share:.0%} of its {MAIN_METRIC.upper()}, Holm over a run's settings, alpha {ALPHA}).", "",
             "| " + " | ".join(COLUMNS[:-3] + ["SNR first / last step", "share of steps with SNR < 1"]) + " |",
             "|---" * (len(COLUMNS) - 1) + "|"]
    for row in rows:
        snr = (f"{row['snr_first_step']:.3g} / {row['snr_last_step']:.3g}" if "snr_first_step" in row else "")
        share = _cell(row.get("share_of_steps_snr_below_1"))
        lines.append("| " + " | ".join(_cell(row.get(column)) for column in COLUMNS[:-3]) + f" | {snr} | {share} |")
    with open(os.path.join(output, "generative.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="a compare output folder with kept checkpoints")
    parser.add_argument("--output", default=None, help="default: <runs>/generative")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="share of the default's NDCG@10")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--models", default=None, help="comma-separated: check only these models' runs")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    records = [r for r in load_runs(args.runs) if r["status"] == "ok" and r.get("checkpoint")]
    if not records:
        print(f"error: {args.runs} holds no finished run with a kept checkpoint (compare --keep_checkpoints)",
              file=sys.stderr)
        return 2
    output = args.output or os.path.join(args.runs, "generative")
    rows = read_rows(os.path.join(output, "generative.csv"))
    checked = {row["run"] for row in rows}
    models = set(args.models.split(",")) if args.models else None
    for record in records:
        if run_name(record["model"], record["seed"]) in checked or (models and record["model"] not in models) or \
                record.get("model_class", record["model"]) not in MODELS:  # a RecBole model: nothing generative
            continue
        rows += check_run(record, args.margin)
        write_outputs(rows, output, args.margin)  # after every run: a killed check keeps what it did
    write_outputs(rows, output, args.margin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
