"""A search's settings, checked before anything is written: :func:`prepare_search` returns a :class:`Search`."""

import json
import os
from typing import NamedTuple

import optuna

from recbole_diffusion.config.checks import check_config_file
from recbole_diffusion.config.configurator import (
    DEFAULT_DATASET, DEFAULT_MODEL, build_config, config_file_values, known_config_keys, override_values,
    properties_file, refuse_pretraining, resolve_model,
)
from recbole_diffusion.data.checks import data_files_sha256
from recbole_diffusion.tune.space import read_space

STUDY_NAME = "recbole-diffusion"
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
# TPE's random start: Optuna's default of 10 would leave a CPU-sized search (10-20 trials) mostly random.
TPE_STARTUP_TRIALS = 5


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
    data_sha256: str     # the data files' fingerprint (recbole_diffusion.data.checks.data_files_sha256)

    @property
    def identity(self):
        """What must be equal for a study to continue: refused with the differences named otherwise."""
        return json.loads(json.dumps({
            "model": self.model, "dataset": self.dataset, "metric": self.metric, "maximize": self.maximize,
            "fixed": self.fixed, "space": {name: f"{p.kind} {p.text}" for name, p in self.space.items()},
            "data_sha256": self.data_sha256,
        }, default=str))

    @property
    def storage_url(self):
        return f"sqlite:///{os.path.join(self.directory, 'study.db')}"


def default_space_file(model):
    """``properties/hyper/<Model>.hyper`` of the model (a variant's base model); a model without one (a RecBole
    model other than SASRec, GRU4Rec, BERT4Rec) is told to pass ``--space``."""
    path = properties_file("hyper", f"{resolve_model(model)[1]}.hyper")
    if not os.path.isfile(path):
        shipped = sorted(name[:-len(".hyper")] for name in os.listdir(os.path.dirname(path)) if name.endswith(".hyper"))
        raise FileNotFoundError(f"no default search space for {model} (this package ships one for "
                                f"{', '.join(shipped)}): pass --space FILE, a RecBole .hyper file")
    return path


def prepare_search(model, dataset, config_files, overrides, space_file=None, directory=None, trials=20,
                   timeout=None, sampler="tpe", pruner="median", prune_startup_trials=3, prune_warmup_epochs=2,
                   confirm_seeds=0, confirm_top=3, threads=None, start_from_defaults=False):
    """Check the search (space, fixed configuration, data) before anything is written; returns a :class:`Search`.

    ``start_from_defaults``: the first trial of a new study runs the searched keys' values the runner would use
    (the YAMLs' and the fixed keys'), so the summary can say what the search gained over them.

    Raises ``ValueError`` / ``FileNotFoundError`` naming what is wrong.
    """
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
    model_class, base_model, _ = resolve_model(model or DEFAULT_MODEL)
    dataset = dataset or DEFAULT_DATASET
    space = read_space(space_file or default_space_file(model or DEFAULT_MODEL))
    if sampler == "grid" and any(param.kind != "choice" for param in space.values()):
        ranges = ", ".join(name for name, param in space.items() if param.kind != "choice")
        raise ValueError(f"--sampler grid needs a space of choices only; {ranges} is a range")
    overrides = dict(overrides or {})
    if "data_path" in overrides:
        overrides["data_path"] = os.path.abspath(str(overrides["data_path"]))
    config_files = [os.path.abspath(path) for path in config_files or []]
    fixed = {}
    for path in config_files:
        check_config_file(path)
        fixed.update(config_file_values(path))
    fixed.update(override_values(overrides))
    both = sorted(set(space) & set(fixed))
    if both:
        raise ValueError(f"{', '.join(both)} is both fixed (config file or --key=value) and searched; drop one")
    known = known_config_keys(base_model, dataset)
    unknown = sorted(set(space) - known)
    if unknown:
        raise ValueError(f"the search space names key(s) that {base_model} and RecBole do not use: "
                         f"{', '.join(unknown)}")
    config, _ = build_config(model, dataset, config_files, overrides)
    refuse_pretraining(config, "tune")
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
    return Search(model=model or DEFAULT_MODEL, dataset=dataset, config_files=config_files,
                  overrides=overrides, fixed=fixed, space=space,
                  directory=os.path.abspath(directory or os.path.join("studies", f"{model}-{dataset}")),
                  trials=int(trials), timeout=timeout, sampler=sampler, pruner=pruner,
                  prune_startup_trials=int(prune_startup_trials), prune_warmup_epochs=int(prune_warmup_epochs),
                  confirm_seeds=int(confirm_seeds), confirm_top=int(confirm_top), threads=threads,
                  seed=int(config["seed"]), metric=config["valid_metric"].lower(),
                  maximize=bool(config["valid_metric_bigger"]), defaults=defaults,
                  data_sha256=data_files_sha256(config))


def _in_space(value, param):
    if param.kind == "choice":
        return value in param.distribution.choices or repr(value) in param.labels
    distribution = param.distribution
    return isinstance(value, (int, float)) and distribution.low <= value <= distribution.high


def make_pruner(search):
    """Optuna's pruner of ``--pruner``: the median rule, or none."""
    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=search.prune_startup_trials,
                                       n_warmup_steps=search.prune_warmup_epochs)


def make_sampler(search, trials_so_far=0):
    """Optuna's sampler of ``--sampler`` for a study that holds ``trials_so_far`` trials: seeded with the search's
    seed, moved on by the trials so far, so that a resumed search draws new configurations instead of the ones its
    first part drew (a sampler's random stream is not stored in the study). A new study draws as before."""
    seed = search.seed + trials_so_far
    if search.sampler == "grid":
        grid = {name: list(param.distribution.choices) for name, param in search.space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)
