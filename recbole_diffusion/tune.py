"""Hyper-parameter search on Optuna that resumes, prunes and hands back a config file.

    python -m recbole_diffusion.tune --model PreferDiff --dataset amazon-beauty --data_path ../shared/data \\
        --trials 20 --study studies/preferdiff-beauty --epochs 10

* The search space is a RecBole ``.hyper`` file (``--space``; default ``properties/hyper/<Model>.hyper``), read
  as RecBole 1.2.1's ``HyperTuning`` reads it: ``key choice [...]``, ``key uniform a,b``, ``key quniform a,b,q``,
  ``key loguniform a,b`` with natural-log bounds (``loguniform -8,0`` is e^-8 .. 1). Values are parsed with
  ``ast.literal_eval``, never ``eval``; full-line ``#`` comments are allowed (RecBole's reader refuses them).
  ``quniform`` with integer bounds and step searches integers (hyperopt gives floats such as 64.0).
* Every ``--key=value`` and every ``--config_files`` key is fixed for all trials. Each trial runs in its own
  process through :func:`recbole_diffusion.quick_start.run`, the runner's path (same YAML merge, checks and
  split), with the configuration's seed; the tuner sets ``checkpoint_dir`` (deleted after the trial),
  ``checkpoint_every: 0`` and ``resume: False``. Trials are chosen on the best validation score
  (``valid_metric``); their test metrics are recorded and never used to choose.
* The study is an SQLite file in ``--study DIR``. Rerunning the same command continues it up to ``--trials``
  finished trials; a different model, dataset, fixed configuration or search space is refused, naming each
  difference. A lock file keeps a second search off the same study, so a trial still marked running when a
  search starts was killed with an earlier search: it is marked failed and rerun once (same parameters). A trial
  that raises (a bad combination, a NaN loss) is recorded with its error and the search goes on.
* ``--pruner median``: after each validation a trial reports its score; one below the median of the earlier
  trials' scores at the same epoch stops (Optuna's ``MedianPruner``, after ``--prune_startup_trials`` finished
  trials and from epoch ``--prune_warmup_epochs``).
* ``--confirm_seeds N``: the ``--confirm_top`` best configurations are rerun with N other seeds and the one with
  the best mean validation score is chosen (the search seed's score is selection-biased: the winner's curse).

Output in ``DIR`` (rewritten after every trial): ``trials.csv``, ``best.yaml`` (the fixed and the chosen keys,
and the seed: ``--config_files=DIR/best.yaml`` reproduces the chosen trial), ``summary.md`` (top trials, the
command, parameter importances), ``history.png``; ``confirm.csv`` with ``--confirm_seeds``; per trial a log in
``work/trial-<n>/output.log``.
"""

import argparse
import ast
import csv
import fcntl
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import yaml

STUDY_NAME = "recbole-diffusion"
KINDS = ("choice", "uniform", "quniform", "loguniform")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
# TPE's random start: Optuna's default of 10 would leave a CPU-sized search (10-20 trials) mostly random.
TPE_STARTUP_TRIALS = 5
TOP_TRIALS_SHOWN = 5


class TrialFailed(Exception):
    """A trial's run raised or its process died; the search records the error and goes on."""


class Param(NamedTuple):
    """One searched key: its ``.hyper`` line and the Optuna distribution it becomes."""

    name: str
    kind: str
    text: str          # the value as written, e.g. "-8,0": part of the study's identity
    distribution: object
    labels: dict       # choice label -> value, for lists and dicts that Optuna cannot store as choices


# ----- search space -------------------------------------------------------------------------------------------

def _numbers(text, count, where):
    parts = text.split(",")
    if len(parts) != count:
        raise ValueError(f"{where}: expected {count} comma-separated numbers, got {text!r}")
    try:
        return [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"{where}: {text!r} holds something that is not a number") from None


def parse_param(line, where):
    """A ``.hyper`` line (``name kind value``, value spaces removed as RecBole does) as a :class:`Param`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    fields = line.split()
    if len(fields) < 3:
        raise ValueError(f"{where}: expected 'key kind values', got {line.strip()!r}")
    name, kind, text = fields[0], fields[1], "".join(fields[2:])
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r} for {name}; expected one of {', '.join(KINDS)}")
    labels = {}
    if kind == "choice":
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"{where}: the choices of {name}, {text!r}, are not a Python literal list") from None
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{where}: the choices of {name} must be a non-empty list, got {text!r}")
        choices = []
        for value in values:
            if value is None or isinstance(value, (bool, int, float, str)):
                choices.append(value)
            else:
                labels[repr(value)] = value
                choices.append(repr(value))
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"{where}: the choices of {name} repeat a value: {text!r}")
        return Param(name, kind, text, CategoricalDistribution(choices), labels)
    if kind == "quniform":
        low, high, step = _numbers(text, 3, where)
        if step <= 0:
            raise ValueError(f"{where}: the step of {name} must be positive, got {step:g}")
    else:
        low, high = _numbers(text, 2, where)
    if not low < high:
        raise ValueError(f"{where}: the bounds of {name} must satisfy low < high, got {text!r}")
    if kind == "uniform":
        return Param(name, kind, text, FloatDistribution(low, high), labels)
    if kind == "loguniform":
        return Param(name, kind, text, FloatDistribution(math.exp(low), math.exp(high), log=True), labels)
    if all(float(value).is_integer() for value in (low, high, step)):
        return Param(name, kind, text, IntDistribution(int(low), int(high), step=int(step)), labels)
    return Param(name, kind, text, FloatDistribution(low, high, step=step), labels)


def read_space(path):
    """The search space of a ``.hyper`` file: ``{key: Param}`` in file order."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"search space {path!r} does not exist (pass --space FILE, a RecBole .hyper file)")
    space = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            param = parse_param(line, f"{path}:{number}")
            if param.name in space:
                raise ValueError(f"{path}:{number}: {param.name} is searched twice")
            space[param.name] = param
    if not space:
        raise ValueError(f"search space {path!r} has no key to search")
    return space


def suggest(trial, space):
    """The trial's values of every searched key, as the configuration receives them."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    values = {}
    for name, param in space.items():
        distribution = param.distribution
        if isinstance(distribution, CategoricalDistribution):
            value = trial.suggest_categorical(name, distribution.choices)
        elif isinstance(distribution, IntDistribution):
            value = trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step)
        else:
            value = trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                                        log=distribution.log)
        values[name] = param.labels.get(value, value) if isinstance(value, str) else value
    return values


def decoded_params(params, space):
    """A trial's stored parameters (choice labels) as configuration values."""
    return {name: space[name].labels.get(value, value) if isinstance(value, str) and name in space else value
            for name, value in params.items()}


# ----- the search's settings ----------------------------------------------------------------------------------

class Search(NamedTuple):
    """Everything a search needs, checked before any file is written."""

    model: str
    dataset: str
    config_files: list
    overrides: dict      # the --key=value overrides, as strings (each trial merges them like the runner)
    fixed: dict          # every fixed key with its value: config files, then overrides (what best.yaml holds)
    space: dict
    directory: str
    trials: int
    timeout: float
    sampler: str
    pruner: str
    prune_startup_trials: int
    prune_warmup_epochs: int
    confirm_seeds: int
    confirm_top: int
    threads: int
    seed: int
    metric: str          # RecBole's result key of valid_metric, e.g. "ndcg@10"
    maximize: bool
    defaults: dict       # the searched keys' values without the search (YAMLs + fixed), run first when asked

    @property
    def identity(self):
        """What must be equal for a study to continue: refused with the differences named otherwise."""
        return json.loads(json.dumps({
            "model": self.model, "dataset": self.dataset, "metric": self.metric, "maximize": self.maximize,
            "fixed": self.fixed, "space": {name: f"{p.kind} {p.text}" for name, p in self.space.items()},
        }, default=str))

    @property
    def storage_url(self):
        return f"sqlite:///{os.path.join(self.directory, 'study.db')}"


def default_space_file(model):
    from recbole_diffusion.quick_start import properties_file, resolve_model

    return properties_file("hyper", f"{resolve_model(model)[1]}.hyper")


def prepare_search(model, dataset, config_files, overrides, space_file=None, directory=None, trials=20,
                   timeout=None, sampler="tpe", pruner="median", prune_startup_trials=3, prune_warmup_epochs=2,
                   confirm_seeds=0, confirm_top=3, threads=None, start_from_defaults=False):
    """Check the search (space, fixed configuration, data) before anything is written; returns a :class:`Search`.

    ``start_from_defaults``: the first trial of a new study runs the searched keys' values the runner would use
    (the YAMLs' and the fixed keys'), so the summary can say what the search gained over them.

    Raises ``ValueError`` / ``FileNotFoundError`` naming what is wrong.
    """
    from recbole_diffusion import quick_start

    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ValueError(f"--pruner {pruner!r}: expected one of {', '.join(PRUNERS)}")
    for name, value, least in (("--trials", trials, 1), ("--prune_startup_trials", prune_startup_trials, 0),
                               ("--prune_warmup_epochs", prune_warmup_epochs, 0),
                               ("--confirm_seeds", confirm_seeds, 0), ("--confirm_top", confirm_top, 1)):
        if int(value) != value or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout!r}")
    model_class, base_model, _ = quick_start.resolve_model(model or quick_start.DEFAULT_MODEL)
    dataset = dataset or quick_start.DEFAULT_DATASET
    space = read_space(space_file or default_space_file(model or quick_start.DEFAULT_MODEL))
    if sampler == "grid" and any(param.kind != "choice" for param in space.values()):
        ranges = ", ".join(name for name, param in space.items() if param.kind != "choice")
        raise ValueError(f"--sampler grid needs a space of choices only; {ranges} is a range")
    overrides = dict(overrides or {})
    if "data_path" in overrides:
        overrides["data_path"] = os.path.abspath(str(overrides["data_path"]))
    config_files = [os.path.abspath(path) for path in config_files or []]
    fixed = {}
    for path in config_files:
        quick_start.check_config_file(path)
        fixed.update(quick_start.config_file_values(path))
    fixed.update(quick_start.override_values(overrides))
    both = sorted(set(space) & set(fixed))
    if both:
        raise ValueError(f"{', '.join(both)} is both fixed (config file or --key=value) and searched; drop one")
    known = quick_start.known_config_keys(base_model, dataset)
    unknown = sorted(set(space) - known)
    if unknown:
        raise ValueError(f"the search space names key(s) that {base_model} and RecBole do not use: "
                         f"{', '.join(unknown)}")
    config, _ = quick_start.build_config(model, dataset, config_files, overrides)
    if int(config["nproc"] or 1) > 1 or int(config["world_size"] or 1) > 1:
        raise ValueError("the tuner runs each trial in one process: leave nproc / world_size at 1")
    fixed.setdefault("seed", int(config["seed"]))
    defaults = {}
    if start_from_defaults:
        for name, param in space.items():
            value = config[name]
            if not _in_space(value, param):
                raise ValueError(f"--start_from_defaults: {name}'s default {value!r} is outside the space "
                                 f"({param.kind} {param.text})")
            defaults[name] = repr(value) if repr(value) in param.labels else value
    return Search(model=model or quick_start.DEFAULT_MODEL, dataset=dataset, config_files=config_files,
                  overrides=overrides, fixed=fixed, space=space,
                  directory=os.path.abspath(directory or os.path.join("studies", f"{model}-{dataset}")),
                  trials=int(trials), timeout=timeout, sampler=sampler, pruner=pruner,
                  prune_startup_trials=int(prune_startup_trials), prune_warmup_epochs=int(prune_warmup_epochs),
                  confirm_seeds=int(confirm_seeds), confirm_top=int(confirm_top), threads=threads,
                  seed=int(config["seed"]), metric=config["valid_metric"].lower(),
                  maximize=bool(config["valid_metric_bigger"]), defaults=defaults)


def _in_space(value, param):
    if param.kind == "choice":
        return value in param.distribution.choices or repr(value) in param.labels
    distribution = param.distribution
    return isinstance(value, (int, float)) and distribution.low <= value <= distribution.high


# ----- the study ----------------------------------------------------------------------------------------------

def make_pruner(search):
    import optuna

    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=search.prune_startup_trials,
                                       n_warmup_steps=search.prune_warmup_epochs)


def make_sampler(search):
    import optuna

    if search.sampler == "grid":
        grid = {name: list(param.distribution.choices) for name, param in search.space.items()}
        return optuna.samplers.GridSampler(grid, seed=search.seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    return optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=TPE_STARTUP_TRIALS)


def identity_differences(before, now):
    """``"key: <before> then, <now> now"`` for every difference between two study identities."""
    differences = []
    for key in ("model", "dataset", "metric", "maximize"):
        if before.get(key) != now.get(key):
            differences.append(f"{key}: {before.get(key)!r} then, {now.get(key)!r} now")
    for part in ("fixed", "space"):
        old, new = before.get(part, {}), now.get(part, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key, "<absent>") != new.get(key, "<absent>"):
                differences.append(f"{part} {key}: {old.get(key, '<absent>')!r} then, "
                                   f"{new.get(key, '<absent>')!r} now")
    return differences


def open_study(search):
    """Create the study, or load it after checking it was made by the same search."""
    import optuna

    study = optuna.create_study(study_name=STUDY_NAME, storage=search.storage_url, load_if_exists=True,
                                direction="maximize" if search.maximize else "minimize",
                                sampler=make_sampler(search), pruner=make_pruner(search))
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
    """Trials a killed search left running are marked failed; each interrupted trial is queued once to rerun.

    Only this search holds the study's lock, so no trial can be running now. An interrupted trial is a failed
    one without a recorded ``error`` (a trial that raised has one and is not rerun). Returns the reruns queued.
    """
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    rerun = {trial.user_attrs.get("retry_of") for trial in trials}
    queued = 0
    for trial in trials:
        if (trial.state == TrialState.FAIL and "error" not in trial.user_attrs and trial.number not in rerun
                and trial.params):
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            queued += 1
    return queued


def finished_trials(study):
    """Trials that count towards ``--trials``: complete, pruned, or failed with an error (not interrupted)."""
    from optuna.trial import TrialState

    return [trial for trial in study.get_trials(deepcopy=False)
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (trial.state == TrialState.FAIL and "error" in trial.user_attrs)]


# ----- one trial, in its own process --------------------------------------------------------------------------

def _redirect_output(path):
    """The trial's console output (RecBole's log lines, warnings) goes to its own file."""
    handle = open(path, "a", encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)


def _trial_process(job):
    """Child-process entry: run one configuration through the runner's path and write its record."""
    from recbole_diffusion import distributed

    _redirect_output(job["log"])
    distributed.end_with_parent(job["parent_pid"])
    import optuna
    import torch

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    from recbole_diffusion import quick_start
    from recbole_diffusion.checkpoint import write_json

    os.chdir(job["work_dir"])  # RecBole writes ./log and ./log_tensorboard here
    trial = None
    if job["trial_id"] is not None and job["search"].pruner != "none":
        study = optuna.load_study(study_name=STUDY_NAME, storage=job["search"].storage_url,
                                  pruner=make_pruner(job["search"]))
        trial = optuna.trial.Trial(study, job["trial_id"])
    curve = []

    def after_validation(epoch, score):
        curve.append([int(epoch), float(score)])
        if trial is not None:
            trial.report(float(score), int(epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}: {score:.4f} is below the median")

    try:
        result = quick_start.run(job["model"], job["dataset"], job["config_files"], job["config_dict"],
                                 saved=True, epoch_callback=after_validation)
        record = {"state": "COMPLETE", "value": result["best_valid_score"], "best_epoch": result["best_epoch"],
                  "epochs": result["epochs_trained"], "best_valid": result["best_valid_result"],
                  "test": result["test_result"]}
    except optuna.TrialPruned as pruned:
        record = {"state": "PRUNED", "reason": str(pruned), "epochs": curve[-1][0] + 1 if curve else 0}
    except Exception as error:  # noqa: BLE001  (any failure is recorded; the search goes on)
        record = {"state": "FAIL", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    finally:
        shutil.rmtree(job["config_dict"]["checkpoint_dir"], ignore_errors=True)
    record["validation_curve"] = curve
    write_json(job["record"], record)


def trial_config(search, params, work_dir, seed=None):
    """A trial's ``config_dict``: the fixed overrides, the searched values and the tuner's own keys."""
    config_dict = {**search.overrides, **params, "checkpoint_dir": os.path.join(work_dir, "checkpoints"),
                   "checkpoint_every": 0, "resume": False}
    config_dict.setdefault("show_progress", False)
    if seed is not None:
        config_dict["seed"] = seed
    return config_dict


def run_in_process(search, name, params, trial_id=None, seed=None):
    """Run one configuration in a fresh process; returns its record (``state`` COMPLETE, PRUNED or FAIL)."""
    from recbole_diffusion.checkpoint import write_json

    work_dir = os.path.join(search.directory, "work", name)
    os.makedirs(work_dir, exist_ok=True)
    record_path = os.path.join(work_dir, "record.json")
    if os.path.isfile(record_path):
        os.remove(record_path)
    job = {"search": search, "model": search.model, "dataset": search.dataset,
           "config_files": search.config_files, "config_dict": trial_config(search, params, work_dir, seed),
           "trial_id": trial_id, "threads": search.threads, "parent_pid": os.getpid(), "work_dir": work_dir,
           "log": os.path.join(work_dir, "output.log"), "record": record_path}
    start = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(target=_trial_process, args=(job,))
    process.start()
    process.join()
    wall_seconds = time.perf_counter() - start
    if not os.path.isfile(record_path):
        write_json(record_path, {"state": "FAIL", "error": f"the trial's process ended without a record (exit code "
                                                           f"{process.exitcode}); see {job['log']}"})
    with open(record_path, encoding="utf-8") as handle:
        record = json.load(handle)
    record.update(log=job["log"], seconds=wall_seconds)  # the process's start (imports, data loading) included
    return record


def objective(search):
    """Optuna's objective: suggest, run the trial in its own process, keep its record in the study."""
    import optuna

    def run_trial(trial):
        params = suggest(trial, search.space)
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


# ----- reports ------------------------------------------------------------------------------------------------

def _format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def progress_line(study, trial, total, search):
    from optuna.trial import TrialState

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
    return f"[trial {trial.number}, {len(finished_trials(study))}/{total}] {outcome} in {seconds:.0f}s | {params}"


def _best_validation(trial, search):
    """A finished trial's best validation score; a pruned trial's best before it stopped (Optuna keeps its last)."""
    scores = [score for _, score in trial.user_attrs.get("validation_curve", [])]
    if trial.value is None and not scores:
        return ""
    return (max if search.maximize else min)(scores) if scores else trial.value


def write_trials_csv(study, search, path):
    names = list(search.space)
    test_keys = sorted({key for trial in study.get_trials(deepcopy=False)
                        for key in trial.user_attrs.get("test", {})})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", f"best_valid_{search.metric}", *names, "best_epoch", "epochs",
                         "seconds", *[f"test_{key}" for key in test_keys], "retry_of", "error"])
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            writer.writerow([trial.number, trial.state.name, _best_validation(trial, search),
                             *[json.dumps(trial.params[name]) if name in trial.params else "" for name in names],
                             attrs.get("best_epoch", ""), attrs.get("epochs", ""),
                             f"{attrs['seconds']:.1f}" if "seconds" in attrs else "",
                             *[attrs.get("test", {}).get(key, "") for key in test_keys],
                             attrs.get("retry_of", ""), attrs.get("error", "")])


def write_best_yaml(search, params, path, note):
    """``best.yaml``: the fixed keys, then the chosen values, as RecBole reads a config file."""
    from recbole_diffusion.quick_start import override_values

    chosen = override_values(params)  # a choice written as text ('[64,64]') becomes what the trial's Config made
    header = "".join(f"# {line}\n" for line in note)
    body = yaml.safe_dump({**search.fixed, **chosen}, sort_keys=False, default_flow_style=False)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header + body)


def plot_history(study, search, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    fig, ax = plt.subplots(figsize=(7, 4))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.PRUNED and t.intermediate_values]
    if complete:
        ax.scatter([t.number for t in complete], [t.value for t in complete], label="complete", color="tab:blue")
        pick = max if search.maximize else min
        best, xs, ys = None, [], []
        for trial in complete:
            best = trial.value if best is None else pick(best, trial.value)
            xs.append(trial.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    if pruned:
        ax.scatter([t.number for t in pruned], [list(t.intermediate_values.values())[-1] for t in pruned],
                   marker="x", color="tab:gray", label="pruned (last validation)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best validation {search.metric}")
    ax.set_title(f"{search.model} on {search.dataset}: optimisation history")
    if complete or pruned:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parameter_importances(study):
    """Optuna's parameter importances (its default evaluator), or the reason they cannot be computed yet."""
    import warnings

    import optuna

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
    from optuna.trial import TrialState

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
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))


def best_trial(study, search):
    from optuna.trial import TrialState

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


# ----- confirmation -------------------------------------------------------------------------------------------

def confirm(study, search):
    """Rerun the ``confirm_top`` best distinct configurations with ``confirm_seeds`` other seeds (records kept:
    a rerun command skips what is done); returns ``(chosen trial, rows)`` chosen on the mean validation score."""
    from optuna.trial import TrialState

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
            record = None
            if os.path.isfile(record_path):
                with open(record_path, encoding="utf-8") as handle:
                    record = json.load(handle)
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
    with open(os.path.join(search.directory, "confirm.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", f"mean_valid_{search.metric}", "std", "seeds", f"mean_test_{search.metric}",
                         "values"])
        for row in rows:
            writer.writerow([row["trial"], row["mean"], row["std"], row["seeds"], row["test_mean"],
                             json.dumps(row["values"])])
    if not rows:
        return None, rows
    best_row = (max if search.maximize else min)(rows, key=lambda row: row["mean"])
    return study.trials[best_row["trial"]], rows


# ----- the search ---------------------------------------------------------------------------------------------

def run_search(search):
    """Run (or continue) the search; returns the study. Prints one line per finished trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
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
            print(progress_line(study, trial, search.trials, search), flush=True)
            write_outputs(study, search)

        if remaining:
            study.optimize(objective(search), n_trials=remaining, timeout=search.timeout, catch=(TrialFailed,),
                           callbacks=[after_trial])
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


def parse_args(argv=None):
    from recbole_diffusion.quick_start import key_value_overrides

    parser = argparse.ArgumentParser(
        description="Hyper-parameter search (Optuna) for a recommender of recbole_diffusion or RecBole.",
        epilog="Any other --key=value (or --key value) is fixed for every trial, e.g. --epochs=10.")
    parser.add_argument("--model", "-m", default=None, help="model or variant name (default: the runner's)")
    parser.add_argument("--dataset", "-d", default=None)
    parser.add_argument("--config_files", nargs="*", default=[], help="YAML files fixed for every trial")
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
    args, rest = parser.parse_known_args(argv)
    overrides = key_value_overrides(parser, rest)
    files = [path for entry in args.config_files for path in entry.replace(",", " ").split() if path]
    return args, files, overrides


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


if __name__ == "__main__":
    sys.exit(main())
