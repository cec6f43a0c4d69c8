"""The study of a search: its storage and lock, interrupted trials, the objective, confirmation and the loop.

The study is an SQLite file in the search's folder. Rerunning the same command continues it up to ``--trials``
finished trials; a different model, dataset, fixed configuration or search space is refused, naming each
difference. A lock file keeps a second search off the same study.
"""

import fcntl
import json
import os
import warnings
from contextlib import contextmanager

import numpy as np
import optuna
from optuna.trial import TrialState

from recbole_diffusion.tune.reports import best_trial, progress_line, reproduce_command, write_confirm_csv, write_outputs
from recbole_diffusion.tune.search import STUDY_NAME, make_pruner, make_sampler
from recbole_diffusion.tune.space import decoded_params, suggest
from recbole_diffusion.tune.trial import run_in_process
from recbole_diffusion.utils.files import read_json


# Optuna's callback that queues a failed trial again (renamed in Optuna 4.9; the old name still exists before 6).
RetryCallback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
    optuna.storages.RetryFailedTrialCallback


class TrialFailed(Exception):
    """A trial's run raised or its process died; the search records the error and goes on."""


def identity_differences(before, now):
    """``"key: <before> then, <now> now"`` for every difference between two study identities."""
    differences = []
    for key in ("model", "dataset", "metric", "maximize"):
        if before.get(key) != now.get(key):
            differences.append(f"{key}: {before.get(key)!r} then, {now.get(key)!r} now")
    if before.get("data_sha256") and before["data_sha256"] != now.get("data_sha256"):  # older studies lack it
        differences.append("the data files changed (their SHA-256 differs)")
    for part in ("fixed", "space"):
        old, new = before.get(part, {}), now.get(part, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key, "<absent>") != new.get(key, "<absent>"):
                differences.append(f"{part} {key}: {old.get(key, '<absent>')!r} then, "
                                   f"{new.get(key, '<absent>')!r} now")
    return differences


def open_study(search):
    """Create the study, or load it after checking it was made by the same search."""
    study = optuna.create_study(study_name=STUDY_NAME, storage=search.storage_url, load_if_exists=True,
                                direction="maximize" if search.maximize else "minimize",
                                sampler=make_sampler(search), pruner=make_pruner(search))
    if study.trials:
        study.sampler = make_sampler(search, trials_so_far=len(study.trials))
    before = study.user_attrs.get("identity")
    if before is None:
        study.set_user_attr("identity", search.identity)
    else:
        differences = identity_differences(before, search.identity)
        if differences:
            raise ValueError(f"the study in {search.directory} was made by another search: "
                             f"{'; '.join(differences)}. Use another --study directory, or the same settings.")
    return study


@contextmanager
def study_lock(directory):
    """Hold ``DIR/study.lock`` for the search: a second search on the same study is refused."""
    handle = open(os.path.join(directory, "study.lock"), "w", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ValueError(f"another search is running on the study in {directory} (study.lock is held)") from None
    try:
        yield
    finally:
        handle.close()


def recover_interrupted(study):
    """Trials a killed search left running are marked failed; each interrupted trial is queued once to rerun with
    the same parameters (Optuna's retry callback, which keeps the retry history). Returns the
    reruns queued.

    Only this search holds the study's lock, so no trial can be running now: a trial still marked running was
    killed with an earlier search, and is rerun at once. Optuna's storage heartbeat would find it only after its
    grace period, so a search restarted right after a kill would leave it running and never rerun it: the lock is
    kept instead of the heartbeat. An interrupted trial is a failed one without a recorded ``error`` (a trial
    that raised has one and is not rerun).
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    # Optuna's retry record, or the rerun's own ``retry_of`` (which searches before the retry callback wrote alone)
    retried = {retried_trial_number(trial) for trial in trials} | {trial.user_attrs.get("retry_of") for trial in trials}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryCallback(max_retry=1)
    queued = 0
    for trial in trials:
        if (trial.state == TrialState.FAIL and "error" not in trial.user_attrs and trial.number not in retried
                and trial.params):
            retry(study, trial)
            queued += 1
    return queued


def retried_trial_number(trial):
    """The number of the interrupted trial that ``trial`` (a ``FrozenTrial``) reruns, ``None`` for a first run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryCallback.retried_trial_number(trial)


def finished_trials(study):
    """Trials that count towards ``--trials``: complete, pruned, or failed with an error (not interrupted)."""
    return [trial for trial in study.get_trials(deepcopy=False)
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (trial.state == TrialState.FAIL and "error" in trial.user_attrs)]


def objective(search):
    """Optuna's objective: suggest, run the trial in its own process, keep its record in the study."""
    def run_trial(trial):
        params = suggest(trial, search.space)
        retry_of = retried_trial_number(trial.study.trials[trial.number])
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        record = run_in_process(search, f"trial-{trial.number}", params, trial_id=trial._trial_id)
        for key in ("seconds", "epochs", "best_epoch", "best_valid", "test", "validation_curve", "log", "error",
                    "reason"):
            if key in record:
                trial.set_user_attr(key, record[key])
        if record["state"] == "PRUNED":
            raise optuna.TrialPruned(record["reason"])
        if record["state"] == "FAIL":
            raise TrialFailed(record["error"])
        return record["value"]

    return run_trial


def confirm(study, search):
    """Rerun the ``confirm_top`` best distinct configurations with ``confirm_seeds`` other seeds (records kept:
    a rerun command skips what is done); returns ``(chosen trial, rows)`` chosen on the mean validation score."""
    complete = sorted((t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
                      key=lambda t: t.value, reverse=search.maximize)
    top, seen = [], set()
    for trial in complete:
        key = json.dumps(trial.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            top.append(trial)
        if len(top) == search.confirm_top:
            break
    seeds = [search.seed + offset for offset in range(1, search.confirm_seeds + 1)]
    rows = []
    for trial in top:
        values, tests = [], []
        for seed in seeds:
            name = f"confirm-trial-{trial.number}-seed-{seed}"
            record_path = os.path.join(search.directory, "work", name, "record.json")
            record = read_json(record_path)
            if record is None or record["state"] != "COMPLETE":
                record = run_in_process(search, name, decoded_params(trial.params, search.space), seed=seed)
                status = (f"{search.metric} {record['value']:.4f}" if record["state"] == "COMPLETE"
                          else f"FAILED: {record.get('error')}")
                print(f"[confirm trial {trial.number}, seed {seed}] {status} in {record.get('seconds', 0):.0f}s",
                      flush=True)
            if record["state"] == "COMPLETE":
                values.append(record["value"])
                tests.append(record["test"].get(search.metric, float("nan")))
        if values:
            rows.append({"trial": trial.number, "mean": float(np.mean(values)), "std": float(np.std(values)),
                         "seeds": len(values), "test_mean": float(np.mean(tests)), "values": values})
    write_confirm_csv(search, rows)
    if not rows:
        return None, rows
    best_row = (max if search.maximize else min)(rows, key=lambda row: row["mean"])
    return study.trials[best_row["trial"]], rows


def run_search(search):
    """Run (or continue) the search; returns the study. Prints one line per finished trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if os.path.exists(search.directory) and not os.path.isdir(search.directory):
        raise ValueError(f"--study {search.directory}: is a file; a study is a folder (give a new or a study's path)")
    os.makedirs(search.directory, exist_ok=True)
    with study_lock(search.directory):
        study = open_study(search)
        queued = recover_interrupted(study)
        if search.defaults and not study.trials:
            study.enqueue_trial(search.defaults, user_attrs={"defaults": True})
        done = len(finished_trials(study))
        remaining = max(0, search.trials - done)
        if done or queued:
            print(f"resuming the study in {search.directory}: {done} trial(s) finished, "
                  f"{queued} interrupted one(s) to rerun, {remaining} to go", flush=True)

        def after_trial(study, trial):
            print(progress_line(study, trial, len(finished_trials(study)), search), flush=True)
            write_outputs(study, search)

        if remaining:
            study.optimize(objective(search), n_trials=remaining, timeout=search.timeout, catch=(TrialFailed,),
                           callbacks=[after_trial])
        done = len(finished_trials(study))
        if done < search.trials:
            cause = "--timeout stopped it" if search.timeout is not None else "some trials failed"
            print(f"the study holds {done} of {search.trials} finished trials ({cause}; see summary.md); the same "
                  "command continues it", flush=True)
        chosen, confirmation = None, None
        if search.confirm_seeds and best_trial(study, search) is not None:
            chosen, confirmation = confirm(study, search)
        write_outputs(study, search, chosen, confirmation)
    chosen = chosen or best_trial(study, search)
    if chosen is None:
        print(f"no trial completed; see {os.path.join(search.directory, 'summary.md')}", flush=True)
    else:
        print(f"best: trial {chosen.number}, validation {search.metric} {chosen.value:.4f}; "
              f"{os.path.join(search.directory, 'best.yaml')}; reproduce: {reproduce_command(search)}", flush=True)
    return study
