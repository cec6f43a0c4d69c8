"""One trial of a search, in a process of its own, through the runner's pipeline.

Each trial runs :func:`recbole_diffusion.quick_start.run` (the same YAML merge, checks and split as the runner) with
the configuration's seed in a fresh process (:func:`recbole_diffusion.quick_start.child_process.run_in_child`), its
console output in ``work/<name>/output.log``; the tuner sets ``checkpoint_dir`` (deleted after the trial),
``checkpoint_every: 0`` and ``resume: False``. After each validation the trial reports its score to the study, so
that the pruner can stop it.
"""

import os
import shutil
import time
import traceback

import optuna

from recbole_diffusion.quick_start.child_process import run_in_child
from recbole_diffusion.quick_start.quick_start import run
from recbole_diffusion.tune.search import STUDY_NAME, make_pruner


def _run_trial(search, model_args, trial_id):
    """The child process's job: one configuration through the runner's pipeline; its record (``state`` COMPLETE,
    PRUNED or FAIL, the validation curve)."""
    trial = None
    if trial_id is not None and search.pruner != "none":
        study = optuna.load_study(study_name=STUDY_NAME, storage=search.storage_url, pruner=make_pruner(search))
        trial = optuna.trial.Trial(study, trial_id)
    curve = []

    def after_validation(epoch, score):
        curve.append([int(epoch), float(score)])
        if trial is not None:
            trial.report(float(score), int(epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}: {score:.4f} is below the median")

    config_dict = model_args[3]
    try:
        result = run(*model_args, saved=True, epoch_callback=after_validation)
        record = {"state": "COMPLETE", "value": result["best_valid_score"], "best_epoch": result["best_epoch"],
                  "epochs": result["epochs_trained"], "best_valid": result["best_valid_result"],
                  "test": result["test_result"]}
    except optuna.TrialPruned as pruned:
        record = {"state": "PRUNED", "reason": str(pruned), "epochs": curve[-1][0] + 1 if curve else 0}
    except Exception as error:  # noqa: BLE001  (any failure is recorded; the search goes on)
        record = {"state": "FAIL", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    finally:
        shutil.rmtree(config_dict["checkpoint_dir"], ignore_errors=True)
    record["validation_curve"] = curve
    return record


def trial_config(search, params, work_dir, seed=None):
    """A trial's ``config_dict``: the fixed overrides, the searched values and the tuner's own keys."""
    config_dict = {**search.overrides, **params, "checkpoint_dir": os.path.join(work_dir, "checkpoints"),
                   "checkpoint_every": 0, "resume": False}
    config_dict.setdefault("show_progress", False)
    if seed is not None:
        config_dict["seed"] = seed
    return config_dict


def run_in_process(search, name, params, trial_id=None, seed=None):
    """Run one configuration in a fresh process; returns its record (``state`` COMPLETE, PRUNED or FAIL) with
    ``log`` and ``seconds`` (the process's start, imports and data loading included)."""
    work_dir = os.path.join(search.directory, "work", name)
    log = os.path.join(work_dir, "output.log")
    model_args = (search.model, search.dataset, search.config_files, trial_config(search, params, work_dir, seed))
    start = time.perf_counter()
    record, exit_code = run_in_child(_run_trial, (search, model_args, trial_id), os.path.join(work_dir, "record.json"),
                                     work_dir, threads=search.threads, log=log)
    if record is None:
        record = {"state": "FAIL", "error": f"the trial's process ended without a record (exit code {exit_code}); "
                                            f"see {log}"}
    record.update(log=log, seconds=time.perf_counter() - start)
    return record
