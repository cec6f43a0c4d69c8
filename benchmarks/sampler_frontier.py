"""How many reverse steps each diffusion model needs: trained checkpoints re-evaluated with a sweep of samplers.

    python benchmarks/beauty.py --family diffurec --cpu --seeds 3 --threads 1 --keep_checkpoints --output DIR
    python benchmarks/sampler_frontier.py --runs DIR [SASREC_DIR] --threads 1     # writes DIR/frontier/

Every run of ``recbole_diffusion.compare`` kept with ``--keep_checkpoints`` (``runs/*.json`` with a
"checkpoint" path) is loaded with its data (the pieces of ``inference.load_data_and_model``: the saved
configuration, the same split, the dataset fingerprint checked), and its test split is evaluated through the
trainer's ``evaluate`` (RecBole's evaluator; the trainer's per-user target ranks) once per sampler setting, the
model's ``sampler`` / ``sampler_steps`` set in place without retraining:

* DiffuRec, DiffuRecSys: DDPM over all T steps (their default), strided DDPM and DDIM with 16, 8, 4, 2 steps,
  DDIM with 1 (two calls), and ``one_step`` (one call: ``x0_hat`` from pure noise at ``T - 1``);
* DreamRec, PreferDiff (and SeqDiffRec): DDPM over all T, DDIM with 50, 20, 10, 5, 2, 1 strides, ``one_step``.

The model's own default (its checkpoint's sampler) is always evaluated; strided settings with ``k >= T`` steps
are left out (they are the all-step run). Evaluation noise is keyed by ``eval_seed`` (the checkpoint's), the same
for every setting, so a setting's metrics are a property of the checkpoint. Cost is counted in network calls
per user (:func:`recbole_diffusion.diffusion.denoiser_calls` times ``n_ensemble``) and timed (seconds of
``evaluate`` per 1,000 test users, torch threads from ``--threads``, after an untimed warm-up batch).

Each setting is tested against the model's default: across seeds (paired t-test of the per-seed NDCG@10 and
whether every seed moves the same way) and across users (each user's NDCG@10 averaged over the seeds, paired:
Wilcoxon signed-rank and t-test), and for equivalence (TOST on the per-user differences, margin stated in
advance: ``--margin`` (2 %) of the default's NDCG@10). The TOST and Wilcoxon p-values are Holm-adjusted over
the settings of a model. Verdicts at alpha = 0.05: "equivalent" (TOST), "lower" / "higher" (Wilcoxon, with the
mean user difference and every seed in that direction), both, or "inconclusive". A large p-value alone is
never read as equality.

A setting whose scores are not finite (the trainer refuses NaN scores; strongly guided DDPM over 2,000 steps can
diverge) is recorded as "failed" with the trainer's message and left out of the tests and the Holm adjustment;
the model's default itself must evaluate.

Writes to ``--output`` (default ``<first --runs>/frontier``): ``frontier.csv`` (one row per model and setting:
means over seeds, the tests), ``frontier.md`` (a table per model and its cheapest setting that loses nothing),
``frontier.png`` (NDCG@10 against seconds per 1,000 users, log x; the ``--reference`` model's point from its
runs), and ``evaluations/<run>.json`` + ``.npz`` (each checkpoint's metrics, seconds and per-user target ranks per
setting). Rerunning the command keeps the checkpoints already evaluated with the current sweep; one evaluated
with another sweep (an older version of this script) is evaluated again, every setting in one pass, so that
its seconds stay comparable with each other.

``--trust_pickled_checkpoint`` also reads checkpoints in RecBole's pickled format (this package's before its safe
format; only files you wrote). Such a checkpoint predates today's evaluation code, so when its default sampler
no longer reproduces its run's recorded metrics exactly it is swept with a warning (``default_matches_run_record``
false in its record) instead of refused; every setting is still compared with the default as evaluated today.
"""

import argparse
import csv
import json
import os
import platform
import sys
import time

import numpy as np
import torch

import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion.compare import load_runs, run_name
from recbole_diffusion.data.checks import inter_file_paths
from recbole_diffusion.diffusion import denoiser_calls
from recbole_diffusion.evaluation.metrics import MAIN_METRIC, METRICS, per_user_metrics
from recbole_diffusion.evaluation.statistics import direction, holm_adjust, paired_t_test, tost_paired, wilcoxon_signed_rank
from recbole_diffusion.model.base import DiffusionRecommender
from recbole_diffusion.model.checks import ONE_STEP_MAX_ALPHA_BAR
from recbole_diffusion.model.diffurec import DiffuRec
from recbole_diffusion.quick_start.inference import config_from_checkpoint
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data
from recbole_diffusion.utils.files import write_json

ALPHA = 0.05
DEFAULT_MARGIN = 0.02
SWEEPS = {
    "short": [("ddpm", None)] + [(sampler, k) for sampler in ("ddpm", "ddim") for k in (16, 8, 4, 2)]
             + [("ddim", 1), ("one_step", None)],
    "long": [("ddpm", None)] + [("ddim", k) for k in (50, 20, 10, 5, 2, 1)] + [("one_step", None)],
}
HIT_AT_10 = "hit@10"


def setting_name(sampler, steps, num_steps):
    """``DDPM-32``, ``DDIM-20``, ``one-step``: the sampler and its number of strides (T when all steps)."""
    return "one-step" if sampler == "one_step" else f"{sampler.upper()}-{steps or num_steps}"


def one_step_possible(model):
    """Whether the noisiest step of the model's forward process keeps at most ``ONE_STEP_MAX_ALPHA_BAR`` of the
    signal, so that ``one_step`` (``x0_hat`` from pure noise there) is sound: the configuration check's limit."""
    return float(model.diffusion.alphas_cumprod[-1]) <= ONE_STEP_MAX_ALPHA_BAR


def sampler_settings(model):
    """``[(name, sampler, steps)]`` to evaluate for a loaded model: its default first, then its sweep.

    DiffuRec / DiffuRecSys get the short sweep (T = 32), the others the long one; a strided setting with as many
    steps as T or more is left out, and ``one_step`` when the noisiest step keeps more than
    ``ONE_STEP_MAX_ALPHA_BAR`` of the signal (the configuration check's limit).
    """
    num_steps = model.diffusion.num_steps
    sweep_kind = sweep_name(model)

    def normalised(sampler, steps):
        return sampler, (None if sampler == "one_step" or steps is None or steps >= num_steps else steps)

    default = normalised(model.sampler, model.sampler_steps)
    sweep = [setting for setting in SWEEPS[sweep_kind] if setting[1] is None or setting[1] < num_steps]
    if not one_step_possible(model):
        sweep = [setting for setting in sweep if setting[0] != "one_step"]
    settings = [default] + [setting for setting in sweep if setting != default]
    return [(setting_name(sampler, steps, num_steps), sampler, steps) for sampler, steps in settings]


def sweep_name(model):
    """The key of ``SWEEPS`` a model is swept with: ``short`` for DiffuRec / DiffuRecSys (T = 32), else ``long``."""
    return "short" if isinstance(model, DiffuRec) else "long"


def swept_with_current_sweep(evaluation):
    """Whether a saved evaluation used today's ``SWEEPS`` (the reference model's single setting always does)."""
    if "sweep" not in evaluation:
        return False
    name = evaluation["sweep"]
    return name is None or evaluation.get("sweep_settings") == [list(setting) for setting in SWEEPS[name]]


def rebuild_config(checkpoint, path, trust_pickled=False):
    """The checkpoint's configuration as :func:`recbole_diffusion.inference.config_from_checkpoint` rebuilds it, and
    the keys the package has gained since the checkpoint was written (they take their defaults there, with a
    warning; such a checkpoint's re-evaluation must reproduce its run's test metrics, see :func:`evaluate_run`)."""
    trust = {"trust_pickled_checkpoint": True} if trust_pickled else {}
    config, model_class = config_from_checkpoint(checkpoint, source=path, state="WARNING", show_progress=False, **trust)
    added = sorted(set(ckpt.plain_config(config)) - set(checkpoint["config"]))
    return config, model_class, added


def load_checkpoint_run(path, trust_pickled=False):
    """``(config, trainer, test data, keys added since training)`` of a checkpoint: its saved configuration, data
    and weights, in eval mode, with the trainer collecting per-user target ranks. ``trust_pickled`` also reads
    RecBole's own pickled format (checkpoints this package wrote before its safe format; only files you made)."""
    checkpoint = ckpt.load_checkpoint(path, map_location="cpu", trust_pickled=trust_pickled)
    config, model_class, added_keys = rebuild_config(checkpoint, path, trust_pickled)
    data = prepare_data(config)
    ckpt.check_dataset_fingerprint(checkpoint, ckpt.dataset_fingerprint(data.train._dataset), config["dataset"], path,
                                   ", ".join(inter_file_paths(config)))
    trainer = build_trainer(config, model_class, data.train)
    trainer.load_model_file(path)
    trainer.model.eval()
    trainer.collect_target_ranks = True
    return config, trainer, data.test, added_keys


def warm_up(trainer, test_data, device):
    """Score the first test batch once, untimed (with two network calls for a diffusion model), so that one-time
    costs (allocations, kernel set-up) do not fall on the first timed setting."""
    model = trainer.model
    saved = getattr(model, "sampler", None), getattr(model, "sampler_steps", None)
    if isinstance(model, DiffusionRecommender):
        model.sampler, model.sampler_steps = "ddim", 1
    with torch.inference_mode():
        model.full_sort_predict(next(iter(test_data))[0].to(device))
    if isinstance(model, DiffusionRecommender):
        model.sampler, model.sampler_steps = saved


def evaluate_setting(trainer, test_data, sampler=None, steps=None):
    """Timed ``evaluate`` of the test split (with ``sampler`` / ``steps`` set on the model when given): the
    seconds, RecBole's metrics, and the per-user target ranks sorted by user id."""
    if sampler is not None:
        trainer.model.sampler, trainer.model.sampler_steps = sampler, steps
    start = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False)
    seconds = time.perf_counter() - start
    ranks, _, users = trainer.collected_target_ranks()
    order = np.argsort(users, kind="stable")
    metrics = {name: float(values.mean()) for name, values in per_user_metrics(ranks[order]).items()}
    recbole = {name: float(value) for name, value in result.items()}
    differing = [name for name in METRICS if abs(metrics[name] - recbole[name]) > 5.1e-5]  # RecBole rounds to 4
    if differing:
        raise AssertionError(f"per-user target ranks do not reproduce RecBole's {', '.join(differing)}: "
                             f"{metrics} vs {recbole}")
    return {"seconds": seconds, "test_users": len(users), "seconds_per_1000_users": seconds / len(users) * 1000,
            "metrics": metrics, "recbole": recbole}, users[order], ranks[order]


def evaluate_run(record, output, diffusion=True, trust_pickled=False):
    """Evaluate one run's checkpoint with every setting (or once, as it is, for the reference model), or read
    the evaluation a previous invocation wrote. Returns ``(evaluation dict, {setting: ranks}, users)``."""
    name = run_name(record["model"], record["seed"])
    json_path, npz_path = (os.path.join(output, "evaluations", f"{name}.{ext}") for ext in ("json", "npz"))
    if os.path.isfile(json_path) and os.path.isfile(npz_path):
        with open(json_path, encoding="utf-8") as handle:
            evaluation = json.load(handle)
        if evaluation["checkpoint"] == record["checkpoint"] and swept_with_current_sweep(evaluation):
            arrays = np.load(npz_path)
            ranks = {s["name"]: arrays[f"ranks/{s['name']}"] for s in evaluation["settings"] if "failed" not in s}
            return evaluation, ranks, arrays["users"]
    config, trainer, test_data, added_keys = load_checkpoint_run(record["checkpoint"], trust_pickled=trust_pickled)
    model = trainer.model
    if diffusion and not isinstance(model, DiffusionRecommender):
        raise ValueError(f"{record['checkpoint']}: {record['model']} is not a diffusion model; pass it as "
                         "--reference, or leave it out with --models")
    settings = sampler_settings(model) if diffusion else [("as trained", None, None)]
    sweep = sweep_name(model) if diffusion else None
    warm_up(trainer, test_data, config["device"])
    evaluation = {"model": record["model"], "seed": record["seed"], "checkpoint": record["checkpoint"],
                  "eval_seed": getattr(model, "eval_seed", None), "eval_batch_size": config["eval_batch_size"],
                  "diffusion_steps": model.diffusion.num_steps if diffusion else None,
                  "sweep": sweep, "sweep_settings": [list(s) for s in SWEEPS[sweep]] if sweep else None,
                  "config_keys_added_since_training": added_keys,
                  "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                  "machine": platform.processor() or platform.machine(), "settings": []}
    ranks_by_setting, users = {}, None
    for index, (setting, sampler, steps) in enumerate(settings):
        calls = denoiser_calls(sampler, steps, model.diffusion.num_steps) * model.n_ensemble if diffusion else None
        try:
            result, setting_users, ranks = evaluate_setting(trainer, test_data, sampler, steps)
        except FloatingPointError as error:  # the trainer refuses NaN scores; a sampler that diverges is a result
            if index == 0:
                raise
            evaluation["settings"].append({"name": setting, "sampler": sampler, "sampler_steps": steps,
                                           "default": False, "calls_per_user": calls, "failed": str(error)})
            print(f"{name} {setting}: FAILED, {error}", flush=True)
            continue
        if users is not None and not np.array_equal(users, setting_users):
            raise AssertionError(f"{name}: setting {setting} evaluated other users")
        users, ranks_by_setting[setting] = setting_users, ranks
        evaluation["settings"].append({"name": setting, "sampler": sampler, "sampler_steps": steps,
                                       "default": index == 0, "calls_per_user": calls, **result})
        print(f"{name} {setting}: {MAIN_METRIC} {result['metrics'][MAIN_METRIC]:.4f}, "
              f"{result['seconds_per_1000_users']:.3f} s / 1000 users", flush=True)
        if index == 0:  # the checkpoint as trained: its metrics must be those its run recorded
            matches = all(abs(result["recbole"][m] - record["test"][m]) < 1e-9 for m in METRICS)
            evaluation["default_matches_run_record"] = matches
            message = (f"{name}: the re-evaluated checkpoint does not give its run's recorded test metrics "
                       f"({result['recbole']} against {record['test']})")
            if not matches and added_keys and not trust_pickled:
                raise ValueError(f"{message}, and its configuration lacks {', '.join(added_keys)}: refused")
            if not matches:  # a pickled checkpoint predates today's evaluation code: said, and kept in the record
                print(f"warning: {message}", file=sys.stderr)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    np.savez_compressed(npz_path, users=users, **{f"ranks/{s}": r for s, r in ranks_by_setting.items()})
    write_json(json_path, evaluation)
    return evaluation, ranks_by_setting, users


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def analyse_model(model, runs, margin_share):
    """One row per setting of ``model``: means over seeds and the tests against the default (see module doc).

    ``runs`` is a list of ``(evaluation, ranks by setting, users)``, one per seed.
    """
    runs = sorted(runs, key=lambda run: run[0]["seed"])
    names = [s["name"] for s in runs[0][0]["settings"]]
    users = runs[0][2]
    for evaluation, _, run_users in runs:
        if [s["name"] for s in evaluation["settings"]] != names or not np.array_equal(run_users, users):
            raise ValueError(f"{model}: the seeds' checkpoints were evaluated with other settings or users")
    default = names[0]
    by_name = [{s["name"]: s for s in evaluation["settings"]} for evaluation, _, _ in runs]
    failed = {name: [seeds[name]["failed"] for seeds in by_name if "failed" in seeds[name]] for name in names}
    failed = {name: messages for name, messages in failed.items() if messages}
    per_user = [{name: per_user_metrics(ranks[name]) for name in names if name not in failed} for _, ranks, _ in runs]

    def seed_values(name, metric):
        return [float(seeds[name][metric].mean()) for seeds in per_user]

    def user_values(name):  # each user's NDCG@10 averaged over the seeds
        return np.mean([seeds[name][MAIN_METRIC] for seeds in per_user], axis=0)

    default_ndcg = float(np.mean(seed_values(default, MAIN_METRIC)))
    margin = margin_share * default_ndcg
    rows = []
    for name in names:
        first = by_name[0][name]
        row = {"model": model, "setting": name, "sampler": first["sampler"], "sampler_steps": first["sampler_steps"],
               "default": name == default, "calls_per_user": first["calls_per_user"], "seeds": len(runs),
               "seeds_list": " ".join(str(evaluation["seed"]) for evaluation, _, _ in runs),
               "users": len(users), "margin": margin}
        if name in failed:
            row["verdict"] = f"failed in {len(failed[name])} of {len(runs)} seeds: {failed[name][0]}"
            rows.append(row)
            continue
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(seed_values(name, metric))
        seconds = [by_name[i][name]["seconds_per_1000_users"] for i in range(len(runs))]
        row["seconds_per_1000_users"] = float(np.mean(seconds))
        row["users_per_second"] = 1000.0 / row["seconds_per_1000_users"]
        if name != default:
            seed_differences = np.subtract(seed_values(name, MAIN_METRIC), seed_values(default, MAIN_METRIC))
            values, reference = user_values(name), user_values(default)
            row.update({
                "ndcg@10_difference": float(seed_differences.mean()),
                "seed_t_p": paired_t_test(seed_values(name, MAIN_METRIC), seed_values(default, MAIN_METRIC)),
                "seed_direction": direction(seed_differences),
                "user_wilcoxon_p": wilcoxon_signed_rank(values, reference),
                "user_t_p": paired_t_test(values, reference),
                "tost_p": tost_paired(values, reference, margin)["p"] if margin > 0 and len(users) > 1 else None,
            })
        rows.append(row)
    tested = [row for row in rows if not row["default"] and row["setting"] not in failed]
    for key in ("tost_p", "user_wilcoxon_p"):
        for row, adjusted in zip(tested, holm_adjust([row[key] for row in tested])):
            row[f"{key}_holm"] = adjusted
    for row in tested:
        row["verdict"] = verdict(row)
    return rows


def failed_row(row):
    """Whether a setting could not be evaluated (its scores were not finite in some seed)."""
    return row.get("verdict", "").startswith("failed")


def verdict(row):
    """``equivalent`` (Holm-adjusted TOST p < alpha), ``lower`` / ``higher`` (Holm-adjusted Wilcoxon p < alpha,
    the mean difference and every seed in that direction), both (``equivalent, lower``), or ``inconclusive``."""
    parts = []
    if row["tost_p_holm"] is not None and row["tost_p_holm"] < ALPHA:
        parts.append("equivalent")
    moved = "higher" if row["ndcg@10_difference"] > 0 else "lower"
    if (row["user_wilcoxon_p_holm"] is not None and row["user_wilcoxon_p_holm"] < ALPHA
            and row["seed_direction"] == moved):
        parts.append(moved)
    return ", ".join(parts) or "inconclusive"


def cheapest_without_loss(rows):
    """The setting with the fewest calls (then seconds) that is equivalent to the default or better; else None."""
    kept = [row for row in rows if row["default"] or (not failed_row(row) and (
        row["verdict"].startswith("equivalent") or row["verdict"] == "higher"))]
    return min(kept, key=lambda row: (row["calls_per_user"], row["seconds_per_1000_users"]))


def reference_point(records, output, trust_pickled=False):
    """NDCG@10 (mean, std over seeds) and seconds per 1,000 users of the reference model's runs: re-evaluated here
    when they kept a checkpoint (timed like the samplers), else as their run records say."""
    ndcg, seconds, timed_here = [], [], True
    for record in records:
        if record.get("checkpoint"):
            evaluation, _, _ = evaluate_run(record, output, diffusion=False, trust_pickled=trust_pickled)
            result = evaluation["settings"][0]
            ndcg.append(result["metrics"][MAIN_METRIC])
            seconds.append(result["seconds_per_1000_users"])
        else:
            ndcg.append(record["test"][MAIN_METRIC])
            seconds.append(record["seconds_per_1000_users"])
            timed_here = False
    mean, std = _mean_std(ndcg)
    return {"model": records[0]["model"], "seeds": len(records), "ndcg@10_mean": mean, "ndcg@10_std": std,
            "seconds_per_1000_users": float(np.mean(seconds)), "timed_here": timed_here}


def _p(value):
    return "-" if value is None else f"{value:.3g}"


def write_csv(rows, reference, path):
    columns = ["model", "setting", "default", "sampler", "sampler_steps", "calls_per_user", "seeds", "seeds_list",
               "users", *[f"{m}_{stat}" for m in METRICS for stat in ("mean", "std")], "seconds_per_1000_users",
               "users_per_second", "ndcg@10_difference", "seed_t_p", "seed_direction", "user_wilcoxon_p",
               "user_wilcoxon_p_holm", "user_t_p", "margin", "tost_p", "tost_p_holm", "verdict"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        if reference:
            writer.writerow({"model": reference["model"], "setting": "reference", "seeds": reference["seeds"],
                             "ndcg@10_mean": reference["ndcg@10_mean"], "ndcg@10_std": reference["ndcg@10_std"],
                             "seconds_per_1000_users": reference["seconds_per_1000_users"],
                             "users_per_second": 1000.0 / reference["seconds_per_1000_users"]})


def write_markdown(rows_by_model, reference, margin_share, path):
    lines = ["# Sampler frontier", "",
             f"Test metrics of each checkpoint re-evaluated with each sampler; NDCG@10 mean ± std over seeds. Tests "
             f"against the model's default sampler (marked *): across seeds, the paired t-test of the per-seed "
             f"NDCG@10 and whether every seed moves the same way; across users (each user's NDCG@10 averaged over "
             f"the seeds), the Wilcoxon signed-rank and paired t-test p-values; equivalence, TOST on the per-user "
             f"differences with the margin stated in advance, {margin_share:.0%} of the default's NDCG@10. TOST and "
             f"Wilcoxon p-values are Holm-adjusted over the settings of a model; verdicts at alpha = {ALPHA}: "
             f"equivalent (TOST), lower / higher (Wilcoxon, mean and every seed in that direction). A large "
             f"p-value alone is not evidence of equality. A failed setting gave non-finite scores and is not "
             f"tested.", ""]
    if reference:
        source = "timed here" if reference["timed_here"] else "from its run records"
        seeds = f"{reference['seeds']} seed{'s' if reference['seeds'] > 1 else ''}"
        lines += [f"Reference: {reference['model']} ({seeds}), NDCG@10 "
                  f"{reference['ndcg@10_mean']:.4f} ± {reference['ndcg@10_std']:.4f}, "
                  f"{reference['seconds_per_1000_users']:.3f} s / 1,000 users ({source}).", ""]
    for model, rows in rows_by_model.items():
        first = rows[0]
        cheapest = cheapest_without_loss(rows)
        lines += [f"## {model} ({first['seeds']} seeds: {first['seeds_list']}; {first['users']} test users; "
                  f"margin {first['margin']:.5f})", "",
                  "| setting | calls / user | NDCG@10 | HR@10 | s / 1,000 users | seeds: t-test p, direction "
                  "| users: Wilcoxon p (Holm) | users: t-test p | TOST p (Holm) | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in sorted(rows, key=lambda r: (-r["calls_per_user"], r["setting"])):
            name = f"{row['setting']}*" if row["default"] else row["setting"]
            if failed_row(row):
                lines.append(f"| {name} | {row['calls_per_user']} | - | - | - |  |  |  |  | {row['verdict']} |")
                continue
            cells = [name, str(row["calls_per_user"]), f"{row['ndcg@10_mean']:.4f} ± {row['ndcg@10_std']:.4f}",
                     f"{row[f'{HIT_AT_10}_mean']:.4f}", f"{row['seconds_per_1000_users']:.3f}"]
            if row["default"]:
                cells += ["", "", "", "", "(default)"]
            else:
                cells += [f"{_p(row['seed_t_p'])}, {row['seed_direction']}",
                          f"{_p(row['user_wilcoxon_p'])} ({_p(row['user_wilcoxon_p_holm'])})", _p(row["user_t_p"]),
                          f"{_p(row['tost_p'])} ({_p(row['tost_p_holm'])})", row["verdict"]]
            lines.append("| " + " | ".join(cells) + " |")
        if first["seeds"] < 3:
            lines += ["", f"Only {first['seeds']} seed(s): the across-seed t-test needs at least 3 to say much."]
        lines += ["", f"Cheapest setting that loses nothing (equivalent at the margin, or higher): "
                      f"**{cheapest['setting']}**, {cheapest['calls_per_user']} call(s) per user, "
                      f"{cheapest['seconds_per_1000_users']:.3f} s / 1,000 users"
                      + (" (the default)" if cheapest["default"] else "") + ".", ""]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def plot_frontier(rows_by_model, reference, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7, 5))
    for index, (model, rows) in enumerate(rows_by_model.items()):
        rows = sorted((row for row in rows if not failed_row(row)), key=lambda row: row["seconds_per_1000_users"])
        x = [row["seconds_per_1000_users"] for row in rows]
        y = [row["ndcg@10_mean"] for row in rows]
        ax.errorbar(x, y, yerr=[row["ndcg@10_std"] for row in rows], fmt="o-", capsize=2, markersize=4,
                    color=f"C{index}", label=model)
        for row in rows:
            ax.annotate(row["setting"] + ("*" if row["default"] else ""), (row["seconds_per_1000_users"],
                        row["ndcg@10_mean"]), textcoords="offset points", xytext=(3, 3), fontsize=6)
    if reference:
        ax.errorbar([reference["seconds_per_1000_users"]], [reference["ndcg@10_mean"]],
                    yerr=[reference["ndcg@10_std"]], fmt="*", markersize=12, color="black", label=reference["model"])
    ax.set_xscale("log")
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel("inference seconds per 1,000 test users (log scale)")
    ax.set_ylabel(f"test {MAIN_METRIC.upper()} (mean ± std over seeds)")
    ax.set_title("Quality against inference cost per sampler (* = default)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def run_frontier(run_folders, output, models=None, reference="SASRec", margin_share=DEFAULT_MARGIN,
                 trust_pickled=False):
    """Evaluate every kept checkpoint of ``run_folders`` and write the reports; returns the rows per model."""
    records = [r for folder in run_folders for r in load_runs(folder) if r["status"] == "ok"]
    reference_records = [r for r in records if r["model"] == reference]
    candidates = [r for r in records if r["model"] != reference and (models is None or r["model"] in models)]
    missing = [run_name(r["model"], r["seed"]) for r in candidates if not r.get("checkpoint")]
    if missing:
        raise ValueError(f"no checkpoint kept for {', '.join(missing)} (train with compare --keep_checkpoints)")
    if not candidates:
        raise ValueError(f"no finished run of {', '.join(models) if models else 'any model'} in {run_folders}")
    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(output)  # RecBole's ./log and ./log_tensorboard of the reloaded runs land here
    try:
        runs_by_model = {}
        for record in sorted(candidates, key=lambda r: (r["model"], r["seed"])):
            runs_by_model.setdefault(record["model"], []).append(evaluate_run(record, output,
                                                                              trust_pickled=trust_pickled))
        reference_row = reference_point(reference_records, output, trust_pickled) if reference_records else None
    finally:
        os.chdir(cwd)
    rows_by_model = {model: analyse_model(model, runs, margin_share) for model, runs in runs_by_model.items()}
    write_csv([row for rows in rows_by_model.values() for row in rows], reference_row,
              os.path.join(output, "frontier.csv"))
    write_markdown(rows_by_model, reference_row, margin_share, os.path.join(output, "frontier.md"))
    plot_frontier(rows_by_model, reference_row, os.path.join(output, "frontier.png"))
    return rows_by_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True,
                        help="compare output folders (runs/*.json); their diffusion runs need kept checkpoints")
    parser.add_argument("--models", default=None, help="comma-separated models to sweep (default: every one found)")
    parser.add_argument("--reference", default="SASRec", help="the model plotted as the reference point")
    parser.add_argument("--output", default=None, help="results folder (default: <first --runs>/frontier)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="equivalence margin as a share of the default sampler's NDCG@10 (default 0.02)")
    parser.add_argument("--trust_pickled_checkpoint", action="store_true",
                        help="also read RecBole's pickled checkpoints (files you wrote yourself: unpickling runs code)")
    args = parser.parse_args(argv)
    if not args.margin > 0:
        parser.error("--margin must be > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m] if args.models else None
    output = args.output or os.path.join(args.runs[0], "frontier")
    run_frontier(args.runs, output, models, args.reference, args.margin, args.trust_pickled_checkpoint)
    print(f"frontier: {os.path.join(output, 'frontier.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
