"""What a search writes (rewritten after every trial): ``trials.csv``, ``best.yaml``, ``summary.md``,
``history.png``, and ``confirm.csv`` after a confirmation."""

import csv
import json
import os
import warnings

import optuna
import pandas as pd
import yaml
from matplotlib import pyplot as plt
from optuna.trial import TrialState

from recbole_diffusion.config.configurator import override_values
from recbole_diffusion.tune.space import decoded_params
from recbole_diffusion.utils.files import atomic_write

TOP_TRIALS_SHOWN = 5


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def progress_line(study, trial, finished, search):
    """One line per finished trial: its outcome, the best so far, ``finished`` of ``--trials``, its parameters."""
    params = " ".join(f"{name}={_format_value(value)}" for name, value in trial.params.items())
    seconds = trial.user_attrs.get("seconds", 0.0)
    if trial.state == TrialState.COMPLETE:
        best = study.best_trial
        outcome = (f"{search.metric} {trial.value:.4f} (best {best.value:.4f}, trial {best.number}), "
                   f"{trial.user_attrs.get('epochs')} epochs")
    elif trial.state == TrialState.PRUNED:
        outcome = f"pruned after {trial.user_attrs.get('epochs')} epochs"
    else:
        outcome = f"FAILED: {trial.user_attrs.get('error', 'interrupted')}"
    return f"[trial {trial.number}, {finished}/{search.trials}] {outcome} in {seconds:.0f}s | {params}"


def _best_validation(trial, search):
    """A finished trial's best validation score; a pruned trial's best before it stopped (Optuna keeps its last)."""
    scores = [score for _, score in trial.user_attrs.get("validation_curve", [])]
    if trial.value is None and not scores:
        return ""
    return (max if search.maximize else min)(scores) if scores else trial.value


def write_trials_csv(study, search, path):
    """``trials.csv`` from Optuna's ``trials_dataframe``, one row per trial: its state, best validation score (a
    pruned trial's best before it stopped), searched values (``param_<key>`` for a key named like another
    column), epochs, seconds, test metrics (recorded, never used to choose), the trial it reruns and its error."""
    trials = study.get_trials(deepcopy=False)
    frame = study.trials_dataframe(attrs=("number", "state", "params", "user_attrs"))
    empty = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    tests = frame.get("user_attrs_test", empty)
    table = pd.DataFrame({"number": frame.get("number", empty), "state": frame.get("state", empty),
                          f"best_valid_{search.metric}": [_best_validation(trial, search) for trial in trials]})
    run_columns = {"number", "state", "best_epoch", "epochs", "seconds", "retry_of", "error"}
    for name in search.space:  # a searched key named like a column of the run (epochs, say) gets a prefix
        column = f"param_{name}" if name in run_columns or name.startswith(("test_", "best_valid_")) else name
        table[column] = frame.get(f"params_{name}", empty)
    for key in ("best_epoch", "epochs", "seconds"):
        table[key] = frame.get(f"user_attrs_{key}", empty)
    for key in sorted({key for test in tests if isinstance(test, dict) for key in test}):
        table[f"test_{key}"] = [test.get(key) if isinstance(test, dict) else None for test in tests]
    for key in ("retry_of", "error"):
        table[key] = frame.get(f"user_attrs_{key}", empty)
    table.convert_dtypes().to_csv(path, index=False)


def write_best_yaml(search, params, path, note):
    """``best.yaml``: the fixed keys, then the chosen values, as RecBole reads a config file."""
    chosen = override_values(params)  # a choice written as text ('[64,64]') becomes what the trial's Config made
    header = "".join(f"# {line}\n" for line in note)
    body = yaml.safe_dump({**search.fixed, **chosen}, sort_keys=False, default_flow_style=False)
    with atomic_write(path, "w") as handle:
        handle.write(header + body)


def plot_history(study, search, path):
    """``history.png``: Optuna's optimisation history (each complete trial's validation score and the best so far;
    pruned and failed trials are not drawn)."""
    plt.switch_backend("Agg")
    with warnings.catch_warnings():  # Optuna's matplotlib plots are experimental; no trial yet leaves no legend
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "No artists with labels", UserWarning)
        axes = optuna.visualization.matplotlib.plot_optimization_history(
            study, target_name=f"best validation {search.metric}")
    axes.set_title(f"{search.model} on {search.dataset}: optimisation history")
    axes.figure.set_size_inches(7, 4)
    axes.figure.tight_layout()
    axes.figure.savefig(path, dpi=110)
    plt.close(axes.figure)


def parameter_importances(study):
    """Optuna's parameter importances (its default evaluator), or the reason they cannot be computed yet."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(study)
        except Exception as error:  # noqa: BLE001  (too few trials, a constant parameter, ...)
            return None, f"{type(error).__name__}: {error}"
    if caught:  # e.g. too few trials: Optuna then reports equal importances, which would mislead
        return None, "; ".join(str(warning.message) for warning in caught)
    return importances, None


def reproduce_command(search):
    return (f"python run_recbole_diffusion.py --model={search.model} --dataset={search.dataset} "
            f"--config_files={os.path.join(search.directory, 'best.yaml')}")


def write_summary(study, search, chosen, confirmation, path):
    """``summary.md``: the search, the chosen trial and how to reproduce it, the gain over the defaults, the top
    trials, the confirmation, parameter importances and failed trials."""
    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value,
                      reverse=search.maximize)
    states = {state: sum(t.state == state for t in trials) for state in TrialState}
    lines = [f"# Search: {search.model} on {search.dataset}", "",
             f"{len(trials)} trials: {states[TrialState.COMPLETE]} complete, {states[TrialState.PRUNED]} pruned, "
             f"{states[TrialState.FAIL]} failed or interrupted. Sampler {search.sampler}, pruner {search.pruner}, "
             f"seed {search.seed}. Chosen on the best validation {search.metric}; test metrics are recorded, "
             "never used to choose.", ""]
    if chosen is not None:
        lines += [f"Chosen: trial {chosen.number}{' (after confirmation, below)' if confirmation else ''}, "
                  f"validation {search.metric} {chosen.value:.4f}. Reproduce it:", "", "```bash",
                  reproduce_command(search), "```", ""]
    names = list(search.space)
    defaults = [t for t in trials if t.user_attrs.get("defaults")]
    if defaults and chosen is not None:
        base = defaults[0]
        if base.state == TrialState.COMPLETE:
            change = (chosen.value - base.value) / base.value * 100 if base.value else float("nan")
            lines += [f"Against the defaults (trial {base.number}: "
                      + ", ".join(f"{n}={_format_value(v)}" for n, v in base.params.items())
                      + f"): validation {search.metric} {base.value:.4f}, chosen {chosen.value:.4f} "
                      f"({change:+.1f} %); test {search.metric} {base.user_attrs['test'].get(search.metric, 0):.4f}"
                      f" vs {chosen.user_attrs['test'].get(search.metric, 0):.4f} (recorded, not used to choose).",
                      ""]
        else:
            lines += [f"The defaults' trial {base.number} did not complete ({base.state.name}).", ""]
    if complete:
        test_key = search.metric if search.metric in complete[0].user_attrs.get("test", {}) else None
        lines += [f"## Top {min(TOP_TRIALS_SHOWN, len(complete))} trials", "",
                  f"| trial | valid {search.metric} | " + " | ".join(names)
                  + (f" | test {test_key}" if test_key else "") + " | best epoch | epochs | seconds |",
                  "|---" * (len(names) + 5 + bool(test_key)) + "|"]
        for trial in complete[:TOP_TRIALS_SHOWN]:
            attrs = trial.user_attrs
            cells = [str(trial.number), f"{trial.value:.4f}", *[_format_value(trial.params.get(n, "")) for n in names]]
            if test_key:
                cells.append(f"{attrs['test'][test_key]:.4f}")
            cells += [str(attrs.get("best_epoch")), str(attrs.get("epochs")), f"{attrs.get('seconds', 0):.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if confirmation:
        lines += [f"## Confirmation with {search.confirm_seeds} other seeds", "",
                  f"| trial | mean valid {search.metric} | std | seeds | mean test {search.metric} |", "|---|---|---|---|---|"]
        for row in confirmation:
            lines.append(f"| {row['trial']} | {row['mean']:.4f} | {row['std']:.4f} | {row['seeds']} | "
                         f"{row['test_mean']:.4f} |")
        lines.append("")
    importances, reason = parameter_importances(study)
    lines += ["## Parameter importances (Optuna's default evaluator, over the complete trials)", ""]
    if importances:
        lines += [f"- {name}: {value:.3f}" for name, value in importances.items()]
    else:
        lines.append(f"Not computable yet: {reason}")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        lines += ["", "## Failed or interrupted trials", ""]
        lines += [f"- trial {t.number}: {t.user_attrs.get('error', 'interrupted (rerun when the search resumed)')}"
                  for t in failed]
    lines += ["", "Files: trials.csv, best.yaml, history.png" + (", confirm.csv" if confirmation else "")
              + "; each trial's log in work/trial-<n>/output.log.", ""]
    with atomic_write(path, "w") as handle:
        handle.write("\n".join(lines))


def best_trial(study, search):
    """The complete trial with the best validation score (``None`` before one completes)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    return (max if search.maximize else min)(complete, key=lambda t: t.value)


def write_outputs(study, search, chosen=None, confirmation=None):
    """Every output file, from the study as it stands (called after each trial)."""
    chosen = chosen or best_trial(study, search)
    write_trials_csv(study, search, os.path.join(search.directory, "trials.csv"))
    if chosen is not None:
        how = (f"the best mean validation {search.metric} over {search.confirm_seeds} confirmation seeds"
               if confirmation else f"the best validation {search.metric} of the search")
        write_best_yaml(search, decoded_params(chosen.params, search.space),
                        os.path.join(search.directory, "best.yaml"),
                        [f"recbole_diffusion.tune: {search.model} on {search.dataset}, trial {chosen.number}, "
                         f"validation {search.metric} {chosen.value:.6f} (seed {search.seed})",
                         f"chosen on {how}; reproduce with:", reproduce_command(search)])
    write_summary(study, search, chosen, confirmation, os.path.join(search.directory, "summary.md"))
    plot_history(study, search, os.path.join(search.directory, "history.png"))


def write_confirm_csv(search, rows):
    """``confirm.csv``: each confirmed configuration's mean and spread over the confirmation seeds."""
    with atomic_write(os.path.join(search.directory, "confirm.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", f"mean_valid_{search.metric}", "std", "seeds", f"mean_test_{search.metric}",
                         "values"])
        for row in rows:
            writer.writerow([row["trial"], row["mean"], row["std"], row["seeds"], row["test_mean"],
                             json.dumps(row["values"])])
